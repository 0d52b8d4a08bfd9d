"""make demo serves the job's console page from a terminal and ends when scripted."""

from __future__ import annotations

import pytest

from taxoforge_cli.main import _parser, demo_serves


@pytest.mark.parametrize(
    ("flags", "terminal", "serves"),
    [
        ([], True, True),
        ([], False, False),
        (["--serve"], False, True),
        (["--no-serve"], True, False),
    ],
)
def test_the_demo_serves_its_console_only_when_asked_or_interactive(
    flags: list[str], terminal: bool, serves: bool
) -> None:
    ns = _parser().parse_args(["demo", *flags])

    assert demo_serves(ns.serve, terminal) is serves
