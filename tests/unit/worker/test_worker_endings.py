"""How an attempt ends early: timeouts, cancel and stop in each phase, an agent that cannot
start, and a repository task's worktree (prepared and committed off the loop) or its failure."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetd.worker.logic import Phase, Worker
from shared import messages as m
from shared.config import FleetConfig
from shared.models import TaskSpec
from tests.support.gitrepo import new_repo, run_git
from tests.support.inline_job import InlineJob
from tests.unit.worker.drive import (
    NOW,
    assign,
    complete,
    events_of,
    finished,
    read_events,
    run_agent,
    seal,
    shell,
    to_broker,
)

pytestmark = pytest.mark.usefixtures("no_leftovers")

SLEEPER = "sleep 30"


def ended(worker: Worker, now: float = NOW) -> m.Finished:
    """Run the agent out, seal its stream, and return the report."""
    return finished(seal(worker, run_agent(worker, now), now))


# --- limits --------------------------------------------------------------------------------


def test_the_wall_clock_limit_ends_the_agent_as_timed_out(worker: Worker) -> None:
    worker.on_broker(assign(shell(SLEEPER, timeout=5.0)), NOW)
    assert worker.next_timeout(NOW) <= 5.0
    worker.step(NOW + 4.9)
    assert worker.execution is not None and worker.execution.end_reason is None
    report = ended(worker, NOW + 5.0)
    assert report.outcome == "timed_out"
    assert report.result.timeout_kind == "wall"
    assert report.result.reason == "wall-clock timeout reached (5 s)"
    assert report.result.signal is not None  # SIGTERM ended it


def test_silence_past_the_idle_limit_ends_the_agent_as_timed_out(worker: Worker) -> None:
    worker.on_broker(assign(shell(SLEEPER, idle_timeout=3.0)), NOW)
    report = ended(worker, NOW + 3.0)
    assert report.outcome == "timed_out"
    assert report.result.timeout_kind == "idle"
    assert report.result.reason == "idle timeout: no output for 3 s"


def test_an_agent_that_ignores_sigterm_is_killed_after_the_grace(worker: Worker) -> None:
    worker.on_broker(assign(shell("trap '' TERM; echo '{}'; sleep 30 & wait")), NOW)
    read_events(worker, 1)  # the trap is set
    worker.on_broker(m.CancelExecution(execution=1), NOW)
    assert worker.execution is not None and worker.execution.limits.kill_at == NOW + 1.0
    report = ended(worker, NOW + 1.0)  # the grace (1 s in these tests) is over at once
    assert report.outcome == "cancelled"
    assert report.result.signal == 9


# --- cancel, in each phase ---------------------------------------------------------------------


def test_cancel_while_running_ends_the_agent(worker: Worker) -> None:
    worker.on_broker(assign(shell(SLEEPER)), NOW)
    worker.on_broker(m.CancelExecution(execution=1), NOW)
    report = ended(worker)
    assert report.outcome == "cancelled"
    assert report.result.reason == "cancelled by request"


def test_cancel_of_another_execution_changes_nothing(worker: Worker) -> None:
    worker.on_broker(assign(shell("true")), NOW)
    worker.on_broker(m.CancelExecution(execution=7), NOW)
    assert ended(worker).outcome == "succeeded"


def test_cancel_while_idle_is_ignored(worker: Worker) -> None:
    assert worker.on_broker(m.CancelExecution(execution=1), NOW) == []
    assert worker.phase is Phase.IDLE


def report_after(worker: Worker, phase: Phase, request: Callable[[], object]) -> m.Finished:
    """Run an attempt to `phase` (SEALING or REPORTING), make `request` there, then report."""
    worker.on_broker(assign(shell("true")), NOW)
    out = run_agent(worker)
    if phase is Phase.REPORTING:
        out = seal(worker, out)
    request()
    assert worker.closing_phase(1) is phase
    if phase is Phase.SEALING:
        out = seal(worker, out)
    return finished(out)


@pytest.mark.parametrize("phase", [Phase.SEALING, Phase.REPORTING])
def test_cancel_after_the_agent_ended_is_too_late(worker: Worker, phase: Phase) -> None:
    cancel = lambda: worker.on_broker(m.CancelExecution(execution=1), NOW)  # noqa: E731
    assert report_after(worker, phase, cancel).outcome == "succeeded"


# --- stop, in each phase -------------------------------------------------------------------


def test_stop_while_idle_lets_the_worker_exit(worker: Worker) -> None:
    assert not worker.can_exit
    worker.stop(NOW)
    assert worker.can_exit


def test_stop_while_running_interrupts_the_agent_then_exits_once_acknowledged(
    worker: Worker,
) -> None:
    worker.on_broker(assign(shell(SLEEPER)), NOW)
    worker.stop(NOW)
    report = ended(worker)
    assert report.outcome == "interrupted"
    assert report.result.reason == "fleet stopping; task put back in the queue"
    assert not worker.can_exit  # the broker must hear of it first
    worker.on_broker(m.FinishAck(execution=1), NOW)
    assert worker.can_exit


@pytest.mark.parametrize("phase", [Phase.SEALING, Phase.REPORTING])
def test_stop_after_the_agent_ended_keeps_its_outcome(worker: Worker, phase: Phase) -> None:
    assert report_after(worker, phase, lambda: worker.stop(NOW)).outcome == "succeeded"
    worker.on_broker(m.FinishAck(execution=1), NOW)
    assert worker.can_exit


def test_an_assign_while_stopping_is_interrupted_without_an_agent(worker: Worker) -> None:
    worker.stop(NOW)
    out = worker.on_broker(assign(shell("echo started > started")), NOW)
    assert to_broker(out, m.AgentStarted) == []
    report = ended(worker)
    assert report.outcome == "interrupted"
    assert report.result.events == 0


# --- an agent that cannot start --------------------------------------------------------------


def test_an_agent_binary_that_does_not_exist_fails_permanently(worker: Worker) -> None:
    spec = TaskSpec(prompt="p", agent="command", argv=["/nonexistent/agent"])
    worker.on_broker(assign(spec), NOW)
    report = ended(worker)
    assert report.outcome == "failed"
    assert report.result.failure_class == "permanent"
    assert "cannot start agent '/nonexistent/agent'" in (report.result.error or "")


def test_a_working_directory_that_does_not_exist_fails_the_attempt(worker: Worker) -> None:
    out = worker.on_broker(assign(shell("true", cwd="/nonexistent/dir")), NOW)
    assert to_broker(out, m.AgentStarted) == []
    report = ended(worker)
    assert report.outcome == "failed"
    assert report.result.error == "working directory /nonexistent/dir does not exist"


@pytest.mark.parametrize("argv", [["echo", "a\x00b"], ["ec\x00ho"]])
def test_a_task_the_agent_cannot_start_with_fails_the_attempt_not_the_worker(
    worker: Worker, argv: list[str]
) -> None:
    # What the wire refuses now (a NUL byte), had it got past: this attempt fails, that's all.
    worker.on_broker(assign(TaskSpec(prompt="p", agent="command", argv=argv)), NOW)
    report = ended(worker)
    assert report.outcome == "failed"
    assert "cannot start agent" in (report.result.error or "")
    assert "embedded null byte" in (report.result.error or "")
    worker.on_broker(m.FinishAck(execution=1), NOW)
    complete(worker, shell("true"), execution=2)  # and the next task runs


def test_a_working_directory_that_is_a_file_says_so(worker: Worker, tmp_path: Path) -> None:
    file = tmp_path / "a-file"
    file.write_text("")
    worker.on_broker(assign(shell("true", cwd=str(file))), NOW)
    report = ended(worker)
    assert report.result.error == f"working directory {file} is not a directory"


def test_a_resume_without_its_codex_session_fails_saying_what_to_do(worker: Worker) -> None:
    resume = m.ResumeFrom(execution=1, thread_id="t-1", session_file="/gone/rollout.jsonl")
    spec = TaskSpec(prompt="fix it")
    worker.on_broker(assign(spec, execution=2, resume=resume), NOW)
    report = ended(worker)
    assert report.outcome == "failed"
    assert "cannot resume: the Codex session of execution 1 is gone" in (report.result.error or "")


def test_a_task_without_cwd_runs_in_a_scratch_directory_removed_when_empty(
    worker: Worker, config: FleetConfig
) -> None:
    scratch = config.paths().scratch_dir
    complete(worker, shell('echo "{\\"cwd\\":\\"$PWD\\"}"'), execution=5)
    assert not (scratch / "5").exists()
    complete(worker, shell("echo kept > file"), execution=6)
    assert (scratch / "6" / "file").read_text() == "kept\n"


def test_an_empty_scratch_directory_is_reused_and_one_with_files_is_kept(
    worker: Worker, config: FleetConfig, tmp_path: Path
) -> None:
    """The next task gets the directory the last one left empty (the same birth time: no
    mkdir/rmdir per task), under its own execution's name; one with files keeps its name."""
    scratch = config.paths().scratch_dir
    seen = tmp_path / "seen"
    probe = f'echo "$(basename "$PWD") $(stat -c %W%w . | tr -d " ") $(ls -A | wc -l)" >> {seen}'
    complete(worker, shell(probe), execution=5)
    complete(worker, shell(probe + "; echo kept > file"), execution=6)
    complete(worker, shell(probe), execution=7)
    (name5, born5, count5), (name6, born6, count6), (name7, born7, count7) = (
        line.split() for line in seen.read_text().splitlines()
    )
    assert (name5, name6, name7) == ("5", "6", "7")
    assert born6 == born5  # reused
    assert count5 == count6 == count7 == "0"  # every task starts in an empty directory
    assert (scratch / "6" / "file").read_text() == "kept\n"
    assert born7 != born6  # the kept one is not handed on
    assert not (scratch / "5").exists() and not (scratch / "7").exists()


# --- a repository task -------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return new_repo(tmp_path / "repo", {"a.txt": "one\n"})


def repo_task(repo: Path, script: str) -> TaskSpec:
    return shell(script, repo=str(repo))


def test_a_repository_task_is_prepared_run_committed_then_sealed(
    worker: Worker, job: InlineJob, repo: Path
) -> None:
    out = worker.on_broker(assign(repo_task(repo, "echo two >> a.txt")), NOW)
    assert worker.phase is Phase.PREPARING
    assert out == [] and job.calls == ["prepare_workspace"]
    out = worker.on_job_done(NOW)
    assert worker.phase is Phase.RUNNING
    assert to_broker(out, m.AgentStarted)
    out = run_agent(worker)
    assert worker.phase is Phase.COMMITTING
    assert job.calls[-1] == "commit_work"
    out = worker.on_job_done(NOW)
    assert worker.closing_phase(1) is Phase.SEALING
    report = finished(seal(worker, out))
    workspace = report.result.workspace
    assert report.outcome == "succeeded" and workspace is not None
    assert workspace.branch == "fleet/1" and workspace.commit is not None
    assert run_git(repo, "show", "fleet/1:a.txt") == "one\ntwo\n"
    assert workspace.diff.insertions == 1


def test_a_repository_that_cannot_be_prepared_fails_without_an_agent(
    worker: Worker, tmp_path: Path
) -> None:
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    worker.on_broker(assign(repo_task(not_a_repo, "echo ran > ran")), NOW)
    out = worker.on_job_done(NOW)
    assert worker.phase is Phase.RUNNING
    assert to_broker(out, m.AgentStarted) == []
    report = ended(worker)
    assert report.outcome == "failed"
    assert report.result.error == (
        f"{not_a_repo} is not a git repository: give the path of a git checkout, or a URL"
    )
    assert not (not_a_repo / "ran").exists()


def test_a_failing_hook_fails_the_attempt_and_its_output_is_recorded(
    config: FleetConfig, repo: Path, tmp_path: Path
) -> None:
    import msgspec

    hooked = msgspec.structs.replace(
        config,
        workspace=msgspec.structs.replace(config.workspace, before_run="echo no; exit 4"),
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    worker = Worker(hooked, "w1", env, job=InlineJob(), pid=1)
    worker.on_broker(assign(repo_task(repo, "true")), NOW)
    out = worker.on_job_done(NOW)
    [hook_line] = events_of(out)
    assert msgspec.json.decode(hook_line)["hook"] == "before_run"
    report = ended(worker)
    assert report.outcome == "failed"
    assert "workspace hook before_run failed with exit code 4" in (report.result.error or "")


@pytest.mark.parametrize("request_", ["cancel", "stop"])
def test_cancel_or_stop_while_preparing_never_starts_the_agent(
    worker: Worker, repo: Path, request_: str
) -> None:
    worker.on_broker(assign(repo_task(repo, "echo ran > ran")), NOW)
    assert worker.phase is Phase.PREPARING
    if request_ == "cancel":
        worker.on_broker(m.CancelExecution(execution=1), NOW)
    else:
        worker.stop(NOW)
    out = worker.on_job_done(NOW)  # the worktree was made: the agent is not started in it
    assert to_broker(out, m.AgentStarted) == []
    report = ended(worker)
    assert report.outcome == ("cancelled" if request_ == "cancel" else "interrupted")
    assert report.result.workspace is None
    assert worker.closing_phase(1) is Phase.REPORTING  # held until acknowledged
    assert not (worker.paths.workspace(1) / "ran").exists()


def test_cancel_while_committing_keeps_the_committed_work(worker: Worker, repo: Path) -> None:
    worker.on_broker(assign(repo_task(repo, "echo two >> a.txt")), NOW)
    worker.on_job_done(NOW)
    run_agent(worker)
    assert worker.phase is Phase.COMMITTING
    worker.on_broker(m.CancelExecution(execution=1), NOW)
    report = finished(seal(worker, worker.on_job_done(NOW)))
    assert report.outcome == "succeeded"
    assert report.result.workspace is not None and report.result.workspace.commit is not None


def test_the_task_lock_is_held_until_the_report_is_acknowledged(
    worker: Worker, repo: Path, config: FleetConfig
) -> None:
    from fleetd.runtime.locks import FileLock

    worker.on_broker(assign(repo_task(repo, "true")), NOW)
    worker.on_job_done(NOW)
    out = run_agent(worker)
    out = seal(worker, worker.on_job_done(NOW))
    other = FileLock(config.paths().task_lock_file(1))
    assert not other.acquire(wait=False)  # gc cannot remove the worktree yet
    worker.on_broker(m.FinishAck(execution=finished(out).execution), NOW)
    assert other.acquire(wait=False)
    other.release()
