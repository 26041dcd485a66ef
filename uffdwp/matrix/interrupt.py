# SPDX-License-Identifier: GPL-2.0-only
"""A stop of `uffdwp matrix` (Ctrl-C, SIGTERM from CI or `timeout`): one path for both.

The first SIGINT or SIGTERM raises Interrupted in the main thread, which stops every guest at
once (qemu.stop_all) and writes the report of what finished; further signals are ignored while
that happens (it takes a few seconds at most), so a second Ctrl-C cannot leave guests behind.
"""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop requested by *signal_name*."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def signal_name(exc: BaseException) -> str:
    """The signal behind a KeyboardInterrupt (a plain one is Python's own SIGINT)."""
    return getattr(exc, "signal_name", "SIGINT")


def _handler(signum: int, _frame) -> None:
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def install() -> None:
    """Route SIGINT and SIGTERM to Interrupted (main thread only, as signal handlers are)."""
    for sig in SIGNALS:
        signal.signal(sig, _handler)
