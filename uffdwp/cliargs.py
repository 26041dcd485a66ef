# SPDX-License-Identifier: GPL-2.0-only
"""Argument types and exit statuses shared by the subcommands of `uffdwp` (snapshot, image,
wrlat, bench): a bad value is a one-line usage error naming the option, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

EXIT_FAIL, EXIT_USAGE, EXIT_UNSUPPORTED = 1, 2, 3

MAX_RATE = 10**9  # stores/s per writer: one per nanosecond is already beyond any CPU
UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def err(msg: str) -> None:
    print(f"uffdwp: error: {msg}", file=sys.stderr)


def parse_size(text: str) -> int:
    """'1G', '256M', '64k', '4096' -> bytes."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in UNITS else (t, "")
    try:
        return int(float(num) * UNITS[unit])
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 1G, 256M, 64K)") from None


def size(text: str) -> int:
    try:
        value = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a size must be positive, not {text!r}")
    return value


def rate(text: str) -> int:
    """Stores/s per writer: a number, 'max' (0: as fast as they can) or 'idle' (-1)."""
    if text in ("max", "0"):
        return 0
    if text == "idle":
        return -1
    try:
        value = float(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (stores/s, 'idle' or "
                                         "'max')") from None
    if not 0 <= value <= MAX_RATE:  # NaN fails too
        raise argparse.ArgumentTypeError(f"a rate is 0..{MAX_RATE} stores/s ('max', 'idle'), "
                                         f"not {text!r}")
    return int(value)


def bounded_int(lo: int, hi: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, not "
                                             f"{text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be from {lo} to {hi}, not {value}")
        return value
    return parse


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 10**7:
        raise argparse.ArgumentTypeError(f"seconds must be positive, not {text!r}")
    return value
