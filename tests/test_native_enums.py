# SPDX-License-Identifier: GPL-2.0-only
"""The Python enums of the native layer are the C enums: same members, same values."""

from __future__ import annotations

import enum

import pytest

from uffdwp._ffi import ffi
from uffdwp.native import Pattern, Policy
from uffdwp.snapshot.engine import Phase, State


@pytest.mark.parametrize(("py", "ctype", "prefix"), [
    (Policy, "enum uffdwp_policy", "UFFDWP_POLICY_"),
    (Pattern, "enum uffdwp_pattern", "UFFDWP_PATTERN_"),
    (State, "enum uffdsnap_state", "UFFDSNAP_"),
    (Phase, "enum uffdsnap_phase", "UFFDSNAP_PHASE_"),
], ids=lambda x: getattr(x, "__name__", None) if isinstance(x, type) else None)
def test_python_enum_is_the_c_enum(py: type[enum.IntEnum], ctype: str, prefix: str):
    c = {name.removeprefix(prefix): value for value, name in ffi.typeof(ctype).elements.items()}
    assert {m.name: m.value for m in py} == c


def test_phase_words_name_every_phase_once():
    words = [p.words for p in Phase]
    assert len(set(words)) == len(words)
    assert Phase.MEMORY.words == "read memory" and Phase.OUTPUT.words == "output"
