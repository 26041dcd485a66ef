# SPDX-License-Identifier: GPL-2.0-only
"""Argument types and exit statuses shared by the subcommands of `uffdwp` (run, matrix,
snapshot, image, wrlat, bench): a bad number or path is a one-line usage error naming the option
(cli.OneLineErrors), before any work, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

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
        raise argparse.ArgumentTypeError(f"seconds must be more than 0 and less than 10^7, "
                                         f"not {text!r}")
    return value


MAX_JOBS = 1024  # parallel workers or guests: far beyond any machine this runs on


def jobs(text: str) -> str:
    """`run --jobs`: 'auto' or a whole number of workers from 1 (pytest-xdist's -n)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of workers from 1 to {MAX_JOBS} or "
                                         f"'auto', not {text!r}") from None
    if not 1 <= value <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"a number of workers from 1 to {MAX_JOBS} or "
                                         f"'auto', not {value}")
    return str(value)


def report_dir(text: str) -> Path:
    """A report directory to write: a new path, or an existing directory (its reports are
    replaced); never an existing file, nor a path under one."""
    path = Path(text)
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if not path.exists() and parent is not None and not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {parent} is not a directory")
    return path


def existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: " + ("a file, not a directory"
                                                        if path.exists() else "no such directory"))
    return path


def existing_path(text: str) -> Path:
    """A file or directory that exists (a test file or directory, an input)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return path


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: " + ("a directory, not a file" if path.is_dir()
                                                        else "no such file"))
    return path


def output_file(text: str) -> Path:
    """A file to write: not a directory, in a directory that exists."""
    path = Path(text)
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file" if text
                                         else "an empty path")
    if not path.absolute().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no directory {path.parent}")
    return path
