# SPDX-License-Identifier: GPL-2.0-only
"""The README's binding example runs as written (against the running kernel)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.timeout(30)
def test_readme_example_runs():
    from uffdwp.uffd import supported_features

    try:
        supported_features()
    except OSError as exc:
        pytest.skip(f"no userfaultfd here: {exc}")
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README lost its Python example"
    namespace: dict = {}
    exec(compile(block.group(1), str(README), "exec"), namespace)
    region = namespace["region"]
    assert region.read(0, 1) == b"\x01"


def test_readme_commands_work_from_a_checkout():
    """A bare `uffdwp` is "command not found" in a checkout: a shell block either calls
    .venv/bin/uffdwp or activates the venv before its first bare `uffdwp`."""
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.S):
        activated = False
        for line in block.splitlines():
            activated = activated or line.startswith(". .venv/bin/activate")
            if line.startswith("uffdwp "):
                assert activated, f"bare uffdwp before activation: {line}"


def test_readme_vagrant_section_follows_the_setup_command():
    text = README.read_text()
    for command in ("./bootstrap.sh --vagrant", "vagrant up k6_1",
                    "vagrant ssh k6_1 -c 'sudo uffdwp run'", "vagrant destroy -f"):
        assert command in text, command
    assert "--vagrant)" in (README.parent / "bootstrap.sh").read_text()


def _layout() -> str:
    text = README.read_text()
    return text[text.index("## Layout"):text.index("## Development")]


def test_readme_layout_table_matches_the_tree():
    """Every file or folder the layout table names exists, and every module and folder of the
    package is named there."""
    root = README.parent
    layout = _layout()
    named = re.findall(r"`([\w./*-]+)`", layout)
    files = {p.name for top in ("uffdwp", "suites", "tests") for p in root.glob(f"{top}/**/*")
             if "__pycache__" not in p.parts}
    for name in named:
        if name.endswith("/"):
            assert (root / name).is_dir(), name
        elif re.search(r"\.(py|c|S)$", name) and "*" not in name:
            assert (root / name).exists() or name.split("/")[-1] in files, name
    package = root / "uffdwp"
    for entry in package.iterdir():
        wanted = entry.suffix == ".py" if entry.is_file() else entry.name != "__pycache__"
        if entry.name.startswith("__") or not wanted:
            continue
        label = f"uffdwp/{entry.name}/" if entry.is_dir() else entry.name
        assert f"`{label}`" in layout or f"{entry.name}`" in layout, entry.name
    for c in (package / "csrc").glob("*.c"):
        assert f"`{c.name}`" in layout, c.name
