# SPDX-License-Identifier: GPL-2.0-only
"""Fakes the unit tests share (test modules import these, never each other)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from uffdwp.runner import session


def fake_bzimage(version: bytes) -> bytes:
    image = bytearray(0x4000)
    image[0x202:0x206] = b"HdrS"
    at = 0x3000
    image[0x20E:0x210] = (at - 0x200).to_bytes(2, "little")
    image[at:at + len(version) + 1] = version + b"\0"
    return bytes(image)


def run_fake_suite(tmp_path: Path, source: str, jobs: str = "1") -> list[dict]:
    """The test events of a fake suite (*source*) run through the runner's pytest command."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_fake.py").write_text(textwrap.dedent(source))
    events = tmp_path / "events.jsonl"
    cmd = session.pytest_command(suite, events, jobs=jobs)
    proc = session.start(cmd, tmp_path / "pytest.log")
    out = [e for e in session.follow(proc, events, poll=0.05) if e["event"] == "test"]
    proc.wait()
    return out
