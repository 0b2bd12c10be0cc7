"""The README's promise: its test command is what CI runs, and its commands exist."""

import pathlib
import re

from ember.__main__ import build_parser

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _commands() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)


def test_ci_runs_the_readme_test_command():
    main_job, tests = _commands()[:2]
    assert "ember demo" in main_job
    test_command = tests.split("&& ", 2)[-1]  # after creating and activating the environment
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_cli_commands_exist():
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    for block in _commands()[2:]:
        for line in block.splitlines():
            if line.startswith("ember "):
                assert line.split()[1] in subcommands, line
