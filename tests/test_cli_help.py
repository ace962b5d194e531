"""Every command of the `redline` CLI documents itself: `--help` works without a
configuration and shows an `Example:` block with at least one `redline ...` line;
`redline --version` works."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from daemon import __version__
from daemon.cli import cli


def walk(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The command paths of a group and all its subgroups, the group itself included."""
    out = [path]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            out += walk(command, (*path, name))
        else:
            out.append((*path, name))
    return out


COMMANDS = walk(cli)


def test_the_walk_sees_the_read_commands() -> None:
    """The walk reaches nested commands and the reading commands of this area."""
    names = {" ".join(p) for p in COMMANDS}
    assert {"", "db upgrade", "config check", "status", "history", "diff", "search", "events",
            "errors", "ingest"} <= names


def example_lines(group: click.Group, path: tuple[str, ...]) -> list[str]:
    """The lines of the `Example:` block of `... --help` (empty when there is none)."""
    result = CliRunner().invoke(group, [*path, "--help"],
                                env={"REDLINE_CONFIG": "/nonexistent"})
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: "), result.output
    m = re.search(r"^\s*Example:\s*\n((?:[ \t]+\S.*\n?)+)", result.output, re.M)
    return [ln.strip() for ln in m.group(1).splitlines() if ln.strip()] if m else []


def invokes_redline(lines: list[str]) -> bool:
    return any(re.match(r"^(\S+=\S+ )*redline\b", ln) for ln in lines)


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "redline" for p in COMMANDS])
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    """`redline ... --help` exits 0 and shows an `Example:` block with at least one
    `redline` invocation (other lines may show curl, systemctl, jq...)."""
    lines = example_lines(cli, path)
    assert invokes_redline(lines), f"`redline {' '.join(path)} --help` lacks an Example: " \
                                   f"block with a redline command: {lines}"


def test_the_check_catches_a_command_without_an_example() -> None:
    """A command whose help has no Example block, or one without redline, is caught."""
    @click.group()
    def group() -> None:
        """A group.

        \b
        Example:
          redline sub bare
        """

    @group.command()
    def bare() -> None:
        """Does something."""

    @group.command()
    def other() -> None:
        """Does something.

        \b
        Example:
          curl http://localhost/
        """

    assert invokes_redline(example_lines(group, ()))
    assert example_lines(group, ("bare",)) == []
    assert not invokes_redline(example_lines(group, ("other",)))
    assert [p for p in walk(group)] == [(), ("bare",), ("other",)]


def test_version() -> None:
    """`redline --version` prints the version and exits 0."""
    result = CliRunner().invoke(cli, ["--version"])
    assert (result.exit_code, result.output) == (0, f"redline, version {__version__}\n")
