# SPDX-License-Identifier: GPL-2.0-only
"""The suites' house rules, read from their source (AST): they use the public API only (no
uffdwp._ffi, no private name), no test module imports another (shared helpers live in
suites/support.py), every test is declared (@uffd_test), and each hand-written skip says why a
declaration cannot express it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITES = sorted((ROOT / "suites").glob("*.py"))
TEST_MODULES = [*sorted((ROOT / "suites").glob("test_*.py")),
                *sorted((ROOT / "tests").glob("test_*.py"))]
# private names of the standard library the suites may use
ALLOWED_PRIVATE = {"_exit"}
# a hand-written skip carries one of these within the lines just above it
JUSTIFIED = re.compile(r"[Nn]ot a declaration|the declaration's")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def private_uses(tree: ast.Module) -> list[str]:
    """uffdwp._ffi imports and private names (imported, or reached as an attribute of anything
    but self/cls) in one module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".")
            names = [a.name for a in node.names]
            if any(p.startswith("_") and not p.startswith("__") for p in parts) or \
                    any(n.startswith("_") and not n.startswith("__") for n in names):
                found.append(f"line {node.lineno}: from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if any(p.startswith("_") and not p.startswith("__") for p in a.name.split(".")):
                    found.append(f"line {node.lineno}: import {a.name}")
        elif isinstance(node, ast.Attribute):
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if private and not own and node.attr not in ALLOWED_PRIVATE:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_module_imports(tree: ast.Module) -> list[str]:
    """Imports of a test module (test_*) in one module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mods = [node.module or ""] + ([a.name for a in node.names] if not node.module
                                          or node.level else [])
            if any(m.split(".")[-1].startswith("test_") for m in mods):
                found.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} "
                             f"import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[-1].startswith("test_")]
    return found


test_module_imports.__test__ = False  # a helper, not a test


@pytest.mark.parametrize("path", SUITES, ids=_rel)
def test_suites_use_only_public_api(path):
    assert private_uses(_tree(path)) == []


@pytest.mark.parametrize("path", TEST_MODULES, ids=_rel)
def test_no_test_module_imports_another(path):
    assert test_module_imports(_tree(path)) == []


def test_every_suite_test_is_declared():
    bypassing = []
    for path in SUITES:
        if not path.name.startswith("test_"):
            continue
        for node in _tree(path).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                decorators = [ast.unparse(d) for d in node.decorator_list]
                if not any(d.startswith("uffd_test(") for d in decorators):
                    bypassing.append(f"{path.name}::{node.name}")
    assert bypassing == []


def test_every_hand_written_skip_says_why_no_declaration_could():
    unjustified = []
    for path in SUITES:
        lines = path.read_text().splitlines()
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "pytest.skip":
                context = "\n".join(lines[max(0, node.lineno - 5):node.lineno])
                if not JUSTIFIED.search(context):
                    unjustified.append(f"{_rel(path)}:{node.lineno}")
    assert unjustified == []


# The checks themselves, on code that breaks each rule.
BAD = '''
from uffdwp._ffi import lib
from uffdwp.memory import _errno_or
from .test_mm import child
from . import test_wp
import tests.test_x
def f(ctx):
    ctx._uffds.append(1)
    self._ok = 1
    os._exit(0)
'''


def test_the_checks_catch_each_breach():
    tree = ast.parse(BAD)
    assert private_uses(tree) == [
        "line 2: from uffdwp._ffi import lib", "line 3: from uffdwp.memory import _errno_or",
        "line 8: ctx._uffds"]
    assert test_module_imports(tree) == [
        "line 4: from .test_mm import child", "line 5: from . import test_wp",
        "line 6: import tests.test_x"]
