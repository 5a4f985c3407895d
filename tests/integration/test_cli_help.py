"""The CLI's help says where --config comes from and every option's default."""

from __future__ import annotations

import argparse

import pytest

from worker.cli import build_parser


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [sub] = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_config_help_names_the_environment_variable() -> None:
    help_text = _subcommands()["run"].format_help()
    assert "$STREAM_WORKER_CONFIG" in help_text
    assert "config/worker.yaml" in help_text


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_option_with_a_value_shows_its_default(command: str) -> None:
    parser = _subcommands()[command]
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.required:
            continue  # flags (store_true, --help) and required options have no default to show
        help_text = parser._get_formatter()._expand_help(action) if action.help else ""
        assert "default" in help_text, f"{command} {action.option_strings[0]}: {help_text!r}"
