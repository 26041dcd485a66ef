# SPDX-License-Identifier: GPL-2.0-only
"""The runner of the conformance suites: host setup, skip decisions, per-test context.

Host state (huge pages, a swap file) is joined by the controlling pytest process and restored
by the last run to leave (uffdwp/hostsetup.py); xdist workers only use it.
"""

from __future__ import annotations

import pytest

from uffdwp import hostsetup
from uffdwp.errors import UffdError
from uffdwp.kernel_facts import Feature
from uffdwp.known_bugs import KNOWN_BUGS
from uffdwp.runner.bugcheck import checked_bug
from uffdwp.runner.unlock import NO_UFFD
from uffdwp.uffd import supported_features

from .uffdtest import Ctx, UffdSpec, implied_features, missing_reason


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "uffd(spec): memory types, modes, features of a test")
    if _is_controller(config):
        hostsetup.join()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _is_controller(config):
        hostsetup.leave()


@pytest.fixture(scope="session")
def supported() -> Feature:
    """Features of a features=0 handshake; the whole suite skips, saying why, without one."""
    try:
        return supported_features()
    except UffdError as exc:
        pytest.skip(f"{NO_UFFD}: {exc}")


def _spec(item: pytest.Item) -> UffdSpec | None:
    marker = item.get_closest_marker("uffd")
    return marker.args[0] if marker else None


def _memtype(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("memtype") if callspec else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        spec = _spec(item)
        if spec is None:
            continue
        memtype = _memtype(item)
        item.user_properties.append(("memtype", memtype or ""))
        bug = spec.bug_for(memtype)
        if bug:
            item.user_properties.append(("bug", bug))
            # every bug the test has a check for: --uffdwp-bugs selects by any of them
            item.user_properties.append(("bugs", " ".join(spec.bugs_for(memtype))))


def pytest_runtest_setup(item: pytest.Item) -> None:
    spec = _spec(item)
    if spec is None:
        return
    try:
        have = supported_features()
    except UffdError as exc:
        pytest.skip(f"{NO_UFFD}: {exc}")
    memtype = _memtype(item) or "anon"
    reason = missing_reason(spec.features | implied_features(memtype, spec.modes), have)
    if reason:
        pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    spec = _spec(item)
    bug = spec.bug_for(_memtype(item)) if spec else None
    if report.failed and bug and call.excinfo is not None:
        checked = checked_bug(call.excinfo.value)
        if checked:
            report.sections.append(("known bug", KNOWN_BUGS[checked].describe()))
        else:  # a precondition or another check: says nothing about the bug
            report.sections.append(("not the known bug", f"failed outside the check of "
                                    f"{KNOWN_BUGS[bug].commit} ({bug})"))


@pytest.fixture
def ctx(request: pytest.FixtureRequest, supported: Feature):
    spec = _spec(request.node) or UffdSpec()
    context = Ctx(_memtype(request.node) or "anon", supported, spec)
    yield context
    context.cleanup()


@pytest.fixture(scope="session")
def swap() -> None:
    """An active swap file (shared by workers and concurrent runs; the last run removes it)."""
    reason = hostsetup.ensure_swap()
    if reason:
        pytest.skip(reason)
