"""Starting an agent by posix_spawn keeps what Popen gave it: its own session, its working
directory, only stdin/stdout/stderr open, default SIGPIPE, a program found on its own PATH."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from fleetd.agents.base import AgentCommand
from fleetd.worker import agent_process
from fleetd.worker.agent_process import AgentProcess, spawn

pytestmark = [pytest.mark.usefixtures("no_leftovers"), pytest.mark.timeout(30)]


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[str, int]:
    """Spawn, read stdout to its end, reap: (stdout, exit code)."""
    proc = spawn(AgentCommand(argv=argv, cwd=cwd, env=env or {"PATH": os.defpath}))
    out = _read_all(proc)
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode is not None
    return out, proc.returncode


def _read_all(proc: AgentProcess) -> str:
    chunks = []
    while chunk := proc.stdout.read(65536):
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_the_agent_leads_its_own_session_in_its_directory(tmp_path: Path) -> None:
    here = os.getcwd()
    out, code = run(["/bin/sh", "-c", 'echo "$$ $(ps -o sid= -p $$) $(pwd -P)"'], tmp_path)
    pid, sid, cwd = out.split()
    assert code == 0 and pid == sid.strip()
    assert cwd == str(tmp_path.resolve())
    assert os.getcwd() == here  # the worker's own directory is back


def test_the_agent_gets_only_its_three_fds_and_default_sigpipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_process._Inherited, "swept", False)
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)  # as an fd a worker inherited might be
    try:
        fds, _ = run(["/bin/ls", "/proc/self/fd"], tmp_path)
        status, _ = run(["/bin/cat", "/proc/self/status"], tmp_path)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert sorted(int(fd) for fd in fds.split()) == [0, 1, 2, 3]  # 3: ls's own listing
    ignored = int(next(ln for ln in status.splitlines() if ln.startswith("SigIgn:")).split()[1], 16)
    assert not ignored & (1 << (13 - 1))  # SIGPIPE


def test_a_bare_program_name_is_found_on_the_agents_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    agent = bin_dir / "my-agent"
    agent.write_text("#!/bin/sh\necho found\n")
    agent.chmod(0o755)
    out, code = run(["my-agent"], tmp_path, env={"PATH": f"{bin_dir}:/bin"})
    assert (out, code) == ("found\n", 0)
    with pytest.raises(FileNotFoundError):
        spawn(AgentCommand(argv=["my-agent"], cwd=tmp_path, env={"PATH": "/bin"}))
    with pytest.raises(FileNotFoundError):
        spawn(AgentCommand(argv=["/bin/true"], cwd=tmp_path / "gone", env={}))
    assert os.getcwd() != str(tmp_path / "gone")


def test_the_agent_starts_with_default_signals_whatever_the_worker_ignores(
    tmp_path: Path,
) -> None:
    # Workers ignore SIGINT (the supervisor handles Ctrl-C), and a fleetd started in the
    # background by a shell ignores SIGINT and SIGQUIT: none of that may reach the agent, whose
    # own interrupt handling (and its tools') needs them.
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT)}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        status, _ = run(["/bin/cat", "/proc/self/status"], tmp_path)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    for name in ("SigIgn", "SigBlk"):
        mask = int(fields[name].split()[0], 16)
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGPIPE):
            assert not mask & (1 << (sig - 1)), f"{signal.Signals(sig).name} in {name}"
