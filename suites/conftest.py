# SPDX-License-Identifier: GPL-2.0-only
"""The runner of the conformance suites: host setup, skip decisions, per-test context.

Host state (huge pages, a swap file) is joined by the controlling pytest process and restored
by the last run to leave (uffdwp/hostsetup.py); xdist workers only use it.
"""

from __future__ import annotations

import pytest

from uffdwp import hostsetup
from uffdwp.errors import UffdError
from uffdwp.kernel_facts import Feature, RegisterMode
from uffdwp.known_bugs import KNOWN_BUGS
from uffdwp.runner.bugcheck import checked_bug
from uffdwp.runner.unlock import NO_UFFD
from uffdwp.uffd import supported_features

from .uffdtest import Ctx, UffdSpec


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
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
        # the declaration's own skip, for the tests that need a handshake: without one, no
        # feature can be asked for
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
    """The one place that decides a declared test's skip: its memory type's and modes' implied
    features, its own, its parameters' (requires()), then its named capabilities."""
    spec = _spec(item)
    extra = [m.args[0] for m in item.iter_markers("uffd_requires")]
    if spec is None and not extra:
        return
    memtype = _memtype(item)
    need = (spec or UffdSpec(modes=RegisterMode(0))).requires(memtype)
    for more in extra:
        if more.applies_to(memtype):
            need |= more
    have = None
    if need.features:
        try:
            have = supported_features()
        except UffdError as exc:
            # the declaration's own skip: what it needs cannot even be asked for
            pytest.skip(f"{NO_UFFD}: {exc}")
    reason = need.missing(have)
    if reason:
        pytest.skip(reason)  # the declaration's verdict (reason from Requires.missing)


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
