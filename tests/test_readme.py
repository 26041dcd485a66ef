"""The README's binding example runs as written (against the running kernel)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.timeout(30)
def test_readme_example_runs():
    from uffdwp.probe import supported_features

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
