"""`fleetctl status` runs without typer, and says exactly what the typer app says."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from tests.support.fleet import FLEETCTL, Fleet, short_tempdir

pytestmark = pytest.mark.timeout(90)

# The typer app itself, named as `python -m fleetctl` names itself in usage lines.
TYPER_APP = [
    sys.executable,
    "-c",
    "from fleetctl.cli import app; app(prog_name='python -m fleetctl')",
]


def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    return result.returncode, result.stdout, result.stderr


def _steady(out: str) -> str:
    """Output without what changes between two calls a moment apart (the uptime)."""
    if out.startswith("{"):
        data = json.loads(out)
        data.pop("uptime_s", None)
        return json.dumps(data)
    return re.sub(r", up \d+(h\d+)?m\d+s,", ", up -,", out)


# What `fleetctl status` does without: typer and click (as much as zmq and msgspec together),
# dataclasses (and the inspect it imports), tomllib when there is no config file, socket.py
# (the probe uses _socket).
NOT_IMPORTED = ("typer", "dataclasses", "tomllib", "socket")
PROBE = (
    "import sys\n"
    "from fleetctl.app import main\n"
    "try:\n"
    "    main()\n"
    "finally:\n"
    f"    print(sorted(set({NOT_IMPORTED!r}) & set(sys.modules)), file=sys.stderr)\n"
)


def test_status_does_not_import_typer_nor_dataclasses(fleet: Fleet) -> None:
    for args in (["status"], ["status", "--json"], ["--request-timeout", "5", "status"]):
        code, out, err = _run([sys.executable, "-c", PROBE, *args], fleet.env)
        assert code == 0, err
        assert err.strip().splitlines()[-1] == "[]", args
        assert str(fleet.pid) in out
    # Everything else still goes through the typer app.
    code, _, err = _run([sys.executable, "-c", PROBE, "status", "--help"], fleet.env)
    assert code == 0 and "'typer'" in err.strip().splitlines()[-1]


def test_status_lines_answer_as_the_typer_app_does(fleet: Fleet) -> None:
    absent = short_tempdir()
    state = str(fleet.state_dir)
    no_env = {k: v for k, v in fleet.env.items() if k != "FLEET_STATE_DIR"}
    cases: list[tuple[list[str], dict[str, str]]] = [
        (["status"], fleet.env),
        (["status", "--json"], fleet.env),
        (["--state-dir", state, "status"], no_env),
        (["--state-dir=" + state, "--request-timeout=2.5", "status", "--json"], no_env),
        (["--request-timeout", " 4 ", "--state-dir", state, "status"], no_env),
        (["--state-dir", str(absent), "status"], fleet.env),  # not running: exit 3
        (["status"], {**no_env, "FLEET_STATE_DIR": str(absent)}),
        (["--request-timeout", "nan", "status"], fleet.env),  # usage errors: exit 2
        (["--request-timeout", "0", "status"], fleet.env),
        (["--request-timeout=soon", "status"], fleet.env),
        (["--state-dir=", "status"], no_env),
        (["status", "--json=yes"], fleet.env),
        (["status", "--help"], fleet.env),
        (["status"], {**fleet.env, "_PYTHON _M FLEETCTL_COMPLETE": "bash_source"}),
    ]
    try:
        for args, env in cases:
            lean = _run([*FLEETCTL, *args], env)
            full = _run([*TYPER_APP, *args], env)
            assert (lean[0], _steady(lean[1]), lean[2]) == (full[0], _steady(full[1]), full[2])
            completing = any(name.endswith("_COMPLETE") for name in env)
            assert completing or lean[0] in (0, 2, 3), (args, lean)
    finally:
        os.rmdir(absent)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_an_interrupted_status_ends_as_the_typer_apps_does() -> None:
    # A listener that never answers: fleetctl waits for its reply until interrupted.
    root = short_tempdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(root / "fleetd.sock"))
    listener.listen(8)
    env = {k: v for k, v in os.environ.items() if k != "FLEET_STATE_DIR"}
    answers = []
    try:
        for argv in (FLEETCTL, TYPER_APP):
            proc = subprocess.Popen(
                [*argv, "--state-dir", str(root), "status"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # A shell without job control starts background commands with SIGINT ignored,
                # and Python keeps an ignored SIGINT ignored: give fleetctl the default that a
                # user's terminal gives it.
                preexec_fn=_default_sigint,
            )
            connections = [listener.accept()[0] for _ in range(2)]  # the probe, then ZeroMQ
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            answers.append((proc.returncode, out, err))
            for connection in connections:
                connection.close()
    finally:
        listener.close()
        (root / "fleetd.sock").unlink()
        os.rmdir(root)
    assert answers[0] == answers[1] == (130, b"", b"")
