# SPDX-License-Identifier: GPL-2.0-only
"""What `uffdwp run` shows while the suites run.

On a terminal: a rich progress bar (tests done / total, counts per verdict, the kernel). Anywhere
else (CI logs, pipes): no cursor tricks, a line per finished test file, failures as they
happen, and a summary line when nothing has been printed for a while.
"""

from __future__ import annotations

import os
import time
from collections import Counter

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

STYLE = {"pass": "green", "fail": "bold red", "error": "bold red", "skip": "yellow",
         "known-bug": "magenta"}
SHOWN = ("pass", "fail", "skip", "known-bug", "error")


def counts_text(counts: Counter, markup: bool = True) -> str:
    parts = []
    for v in SHOWN:
        if counts[v] or v in ("pass", "fail", "skip"):
            parts.append(f"[{STYLE[v]}]{v} {counts[v]}[/]" if markup else f"{v} {counts[v]}")
    return "  ".join(parts)


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


class _Base:
    def __init__(self, console: Console, kernel: str) -> None:
        self.console = console
        self.kernel = kernel
        self.counts: Counter = Counter()
        self.total = 0
        self.done = 0
        self.t0 = time.monotonic()

    def expect(self, n: int) -> None:
        self.total += n

    def collected(self, nodeids: list[str]) -> None:
        self.expect(len(nodeids))

    def _note(self, test: dict) -> str | None:
        """The line to print at once for a test that did not pass or skip."""
        if test["verdict"] in ("fail", "error", "known-bug"):
            label = {"fail": "FAIL", "error": "ERROR", "known-bug": "KNOWN BUG"}[test["verdict"]]
            return f"{label} {test['nodeid']}: {test['reason']}"
        return None


class LiveProgress(_Base):
    """The rich bar, for a terminal."""

    def __init__(self, console: Console, kernel: str) -> None:
        super().__init__(console, kernel)
        self._bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
            console=console, transient=False)
        self._task = self._bar.add_task(f"uffdwp · {kernel}", total=None,
                                        counts=counts_text(self.counts))

    def __enter__(self) -> LiveProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def expect(self, n: int) -> None:
        super().expect(n)
        self._bar.update(self._task, total=self.total)

    def update(self, test: dict) -> None:
        self.done += 1
        self.counts[test["verdict"]] += 1
        note = self._note(test)
        if note:
            self._bar.console.print(escape(note), style=STYLE[test["verdict"]],
                                    overflow="fold", highlight=False)
        self._bar.update(self._task, completed=self.done, counts=counts_text(self.counts))

    def idle(self) -> None:
        pass  # rich refreshes the elapsed time on its own


class LineProgress(_Base):
    """Plain lines, for logs: one per finished test file, periodic summaries when quiet."""

    QUIET_SECONDS = 30.0

    def __init__(self, console: Console, kernel: str) -> None:
        super().__init__(console, kernel)
        self._left: Counter = Counter()  # tests still to finish, per file
        self._per_file: dict[str, Counter] = {}
        self._file_t0: dict[str, float] = {}
        self._last_print = time.monotonic()

    def __enter__(self) -> LineProgress:
        self._print(f"uffdwp run on {self.kernel}")
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _print(self, text: str) -> None:
        # print(), not rich: no wrapping or markup surprises in a CI log
        print(text, flush=True)
        self._last_print = time.monotonic()

    def collected(self, nodeids: list[str]) -> None:
        super().collected(nodeids)
        for nodeid in nodeids:
            self._left[_file_of(nodeid)] += 1
        self._print(f"collected {len(nodeids)} tests in {len(self._left)} files")

    def update(self, test: dict) -> None:
        self.done += 1
        self.counts[test["verdict"]] += 1
        f = _file_of(test["nodeid"])
        self._file_t0.setdefault(f, time.monotonic())
        per = self._per_file.setdefault(f, Counter())
        per[test["verdict"]] += 1
        note = self._note(test)
        if note:
            self._print(note)
        if f not in self._left:
            return  # not among the collected ids (a collection error, or a re-collected file)
        self._left[f] -= 1
        if self._left[f] == 0:
            n = sum(per.values())
            self._print(f"{f}: {n} tests, {counts_text(per, markup=False)}  "
                        f"[{self.done}/{self.total or '?'}]")

    def idle(self) -> None:
        if time.monotonic() - self._last_print >= self.QUIET_SECONDS:
            self._print(f"... {self.done}/{self.total or '?'} done, "
                        f"{counts_text(self.counts, markup=False)}, "
                        f"{time.monotonic() - self.t0:.0f}s")


def make_progress(console: Console, kernel: str) -> LiveProgress | LineProgress:
    # A serial console is a terminal whose every redraw ends up in a log file: plain lines there.
    live = console.is_terminal and os.environ.get("UFFDWP_PROGRESS") != "plain"
    return LiveProgress(console, kernel) if live else LineProgress(console, kernel)
