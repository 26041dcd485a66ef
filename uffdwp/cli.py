# SPDX-License-Identifier: GPL-2.0-only
"""The `uffdwp` command line: one parser, subcommands registered by the modules that own them."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import textwrap

from rich.console import Console
from rich.table import Table

# Modules that add subcommands through register(subparsers); each owns its own options.
SUBCOMMAND_MODULES = (
    "uffdwp.runner.command",  # run
    "uffdwp.matrix.command",  # matrix
    "uffdwp.snapshot.command",  # snapshot, image
    "uffdwp.bench.command",  # wrlat, bench
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default shown (unless it has none, or its help already says it); prose
    paragraphs wrapped, indented lines (lists, examples) kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        blocks = []
        for block in textwrap.dedent(text).strip("\n").split("\n\n"):
            lines = block.splitlines()
            if any(line[:1].isspace() for line in lines):
                blocks.append("\n".join(indent + line for line in lines))
            else:
                blocks.append(super()._fill_text(block, width, indent))
        return "\n\n".join(blocks)


def _probe(args: argparse.Namespace) -> int:
    from . import kernel_facts as kf
    from .kernel_version import at_least, kernel_version
    from .probe import probe

    result = probe(with_register=not args.no_register)
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        print()
        return 0 if result.api else 1

    console = Console()
    k = result.kernel
    console.print(f"[bold]kernel[/] {k['release']} ({k['machine']})  {k['version']}")
    if not result.api:
        for err in result.errors:
            console.print(f"[red]userfaultfd unavailable:[/] {err}")
        return 1
    console.print(f"[bold]UFFDIO_API[/] api={result.api['api']:#x} "
                  f"features={result.features:#x} ioctls={result.ioctls:#x} "
                  f"({', '.join(result.ioctl_names)})")

    kver = kernel_version(k["release"], k["version"])
    table = Table(title="Features (features=0 handshake)", title_justify="left")
    for col in ("bit", "feature", "since", "here", "note"):
        table.add_column(col)
    for row in result.feature_table:
        expected = at_least(kver, row["since"])
        mark = "[green]yes[/]" if row["present"] else ("[red]no[/]" if expected else "[dim]no[/]")
        note = "" if row["present"] or not expected else "absent though kernel >= since (config?)"
        table.add_row(str(row["bit"]), row["name"], row["since"], mark, note or row["note"])
    console.print(table)
    if result.unknown_feature_bits:
        console.print("[yellow]advertised feature bits unknown to uffdwp:[/] "
                      + ", ".join(f"bit {n}" for n in result.unknown_feature_bits))

    if result.register:
        reg = Table(title="UFFDIO_REGISTER ioctls per memory type", title_justify="left")
        reg.add_column("memory")
        for mode in kf.RegisterMode:
            reg.add_column(mode.name)
        for memtype, modes in result.register.items():
            if "unavailable" in modes:
                reg.add_row(memtype, f"[dim]{modes['unavailable']}[/]", "[dim]—[/]", "[dim]—[/]")
                continue
            cells = [", ".join(m["names"]) if "names" in m else f"[yellow]{m['error']}[/]"
                     for m in modes.values()]
            reg.add_row(memtype, *cells)
        console.print(reg)

    acc = result.access
    dev = acc["dev_userfaultfd"]
    acc_table = Table(title="Access", title_justify="left", show_header=False)
    acc_table.add_row("euid", str(acc["euid"]))
    acc_table.add_row("vm.unprivileged_userfaultfd", str(acc["unprivileged_userfaultfd"]))
    acc_table.add_row("/dev/userfaultfd",
                      f"{dev.get('mode', 'absent')} accessible={dev.get('accessible', False)}")
    acc_table.add_row("UFFD_USER_MODE_ONLY needed", str(acc["user_mode_only_needed"]))
    for via, res in result.open.items():
        acc_table.add_row(f"open via {via}", "ok" if res["ok"] else f"[yellow]{res['error']}[/]")
    hp = result.hugepages
    acc_table.add_row("huge pages", f"{hp['size'] >> 10} KiB, {hp['free']} free of "
                                    f"{hp['nr_hugepages']} (vm.nr_hugepages)")
    console.print(acc_table)
    return 0


class OneLineErrors(argparse.ArgumentParser):
    """A usage error is one line saying what is wrong and where help is (not the usage block
    argparse prints first). Subcommand parsers are of the same class."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="uffdwp",
        description="Conformance suite and tools for Linux userfaultfd write-protect")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("probe", help="what this kernel's userfaultfd offers",
                       description="The kernel's negotiated features and ioctls, per memory type "
                                   "the register ioctls, each feature against the mainline "
                                   "release that brought it, access rules and huge pages.",
                       formatter_class=HelpFormatter)
    p.add_argument("--json", action="store_true",
                   help="machine-readable output (kernel, api, features, feature_names, ioctls…)")
    p.add_argument("--no-register", action="store_true",
                   help="skip the per-memory-type register probe")
    p.set_defaults(func=_probe)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that part of uffdwp is not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `uffdwp probe --json | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
