"""Every command of the tree has --help with an example, and the commands the issue names all exist."""

from __future__ import annotations

from typing import Any

import typer.main
from typer.testing import CliRunner

from cmlmon_cli.main import app


def leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        return [path]
    return [leaf for name, sub in subcommands.items() for leaf in leaves(sub, (*path, name))]


def test_every_command_has_help_with_an_example() -> None:
    found = leaves(typer.main.get_command(app))
    assert sorted(" ".join(p) for p in found) == [
        "alerts list", "silences create", "silences delete", "silences list", "status", "workers create",
        "workers get", "workers import", "workers list", "workers metrics", "workers reboot", "workers start",
        "workers stop", "workers terminate", "workers watch",
    ]
    runner = CliRunner()
    for path in found:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "Example" in result.output and f"cmlmon {' '.join(path)}" in result.output, path
