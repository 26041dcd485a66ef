# SPDX-License-Identifier: GPL-2.0-only
"""`uffdwp probe|run|matrix --help`: every option says what it does, and what it defaults to."""

from __future__ import annotations

import argparse

import pytest

from uffdwp.cli import build_parser


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


@pytest.mark.parametrize("command", ["probe", "run", "matrix"])
def test_every_option_has_help_and_its_default(command):
    parser = _subparser(command)
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{command} {name}: no help text"
        if action.default not in (None, False, [], argparse.SUPPRESS) and action.option_strings:
            described = " ".join(parser._get_formatter()._expand_help(action).split())
            assert "default" in described, f"{command} {name}: default {action.default!r} unsaid"
            assert described in text


def test_no_empty_defaults_and_epilog_lists_kept():
    for command in ("probe", "run", "matrix"):
        text = _subparser(command).format_help()
        assert "(default: None)" not in text and "(default: False)" not in text
    text = _subparser("run").format_help()
    assert "\n  0  every test passed or skipped\n" in text  # the exit-status list as written
    matrix = " ".join(_subparser("matrix").format_help().split())
    assert "(default: auto)" in matrix and "(default: qemu)" in matrix
    assert "(default: 600.0)" in matrix and "default: 5.10,6.1,6.12,7.2,host" in matrix
