"""Argument types of the `uffdwp` command line: a bad number or path is refused by argparse
with one line naming the option and what it must be (cli.OneLineErrors), before any work."""

from __future__ import annotations

import argparse
from pathlib import Path


def bounded_int(lo: int, hi: int, what: str):
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
