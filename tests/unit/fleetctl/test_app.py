"""The entry point's lean `status` path: the same options as the typer app, the same output."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator

import pytest
import typer
from typer.main import get_command

from fleetctl import app as entry
from fleetctl import cli
from fleetctl.common import DEFAULT_REQUEST_TIMEOUT, STATE_DIR_ENV, echo


def _params(command: object) -> dict[str, object]:
    return {p.name: p for p in command.params if p.name != "help"}  # type: ignore[attr-defined]


def test_lean_path_knows_every_root_option_and_status_option() -> None:
    # A new root option (or a new `status` option) must be taught to fleetctl.app too, or
    # the lean path would run `status` without it; this test says so when it happens.
    root = get_command(cli.app)
    options = _params(root)
    assert set(options) == {"state_dir", "request_timeout"}
    state_dir, timeout = options["state_dir"], options["request_timeout"]
    assert state_dir.opts == [entry.STATE_DIR] and state_dir.envvar == STATE_DIR_ENV
    assert timeout.opts == [entry.REQUEST_TIMEOUT] and timeout.default == DEFAULT_REQUEST_TIMEOUT
    status = _params(root.commands["status"])  # type: ignore[attr-defined]
    assert set(status) == {"json_out", "node"}  # `--node` is left to the typer app
    assert status["json_out"].opts == ["--json"] and status["json_out"].is_flag


@pytest.mark.parametrize(
    ("args", "lean"),
    [
        (["status"], ({}, False)),
        (["status", "--json"], ({}, True)),
        (["--state-dir", "/s", "status"], ({"--state-dir": "/s"}, False)),
        (
            ["--state-dir=/s", "--request-timeout", "3", "status"],
            ({"--state-dir": "/s", "--request-timeout": "3"}, False),
        ),
        (
            ["--request-timeout=3", "--state-dir=/s", "status", "--json"],
            ({"--request-timeout": "3", "--state-dir": "/s"}, True),
        ),
        (["--state-dir", "/s", "--state-dir", "/t", "status"], None),  # repeated: typer's call
        (["--state-dir", "--json", "status"], None),
        (["--state-dir=", "status"], None),
        (["--state-dir"], None),
        (["status", "--help"], None),
        (["status", "--node", "a"], None),
        (["--help"], None),
        (["status", "--json", "--json"], None),
        (["status", "--json=1"], None),
        (["status", "x"], None),
        (["workers"], None),
        (["--", "status"], None),
        ([], None),
    ],
)
def test_which_command_lines_take_the_lean_path(
    args: list[str], lean: tuple[dict[str, str], bool] | None
) -> None:
    assert entry._lean_status(args) == lean


@pytest.fixture
def streams() -> Iterator[None]:
    saved = sys.stdout, sys.stderr
    yield
    sys.stdout, sys.stderr = saved


def _captured(write: object, text: str, err: bool, kind: str) -> bytes:
    """What one call wrote, as bytes, on a pipe or a terminal with the given encoding."""
    if kind == "tty":
        reader, writer = os.openpty()
    else:
        reader, writer = os.pipe()
    encoding = "ascii" if kind == "ascii pipe" else "utf-8"
    stream = io.TextIOWrapper(io.FileIO(writer, "w", closefd=False), encoding=encoding)
    if err:
        sys.stderr = stream
    else:
        sys.stdout = stream
    try:
        write(text, err=err)  # type: ignore[operator]
        stream.flush()
        return os.read(reader, 65536)
    finally:
        os.close(reader)
        os.close(writer)


@pytest.mark.parametrize("kind", ["pipe", "ascii pipe", "tty"])
@pytest.mark.parametrize("err", [False, True])
@pytest.mark.parametrize(
    "text",
    ["", "plain", "\x1b[31mred\x1b[0m and \x1b[1;4mbold\x1b[m", "ellipsis…", "\x1b]0;title\x07"],
)
def test_echo_writes_what_typer_echo_writes(streams: None, text: str, err: bool, kind: str) -> None:
    assert _captured(echo, text, err, kind) == _captured(typer.echo, text, err, kind)
