"""The Claude Code adapter's command line and its private config directories."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fleetd.agents.base import RESUME_PROMPT
from fleetd.agents.claude import ClaudeAdapter
from fleetd.agents.claude_home import ClaudeHomes, project_dir_name
from fleetd.runtime.redaction import Redactor
from shared.config import ClaudeConfig
from shared.errors import FleetError
from shared.messages import Assign
from shared.models import ExecutionResult, ResumeFrom, TaskSpec

SECRET = "sk-ant-test-claudehome-0123456789"
SESSION = "0b5c7a6e-1111-2222-3333-444455556666"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    host = tmp_path / "host-claude"
    (host / "projects" / "-old").mkdir(parents=True)  # the host's own history stays behind
    (host / "settings.json").write_text('{"model": "opus"}')
    (host / "CLAUDE.md").write_text("Run the tests.\n")
    return host


@pytest.fixture
def adapter(tmp_path: Path, host: Path) -> ClaudeAdapter:
    redactor = Redactor([SECRET])
    homes = ClaudeHomes(
        tmp_path / "state" / "claude-homes",
        tmp_path / "state" / "sessions",
        host,
        lambda data: redactor.mask(data)[0],
    )
    config = ClaudeConfig(bin="/bin/claude", max_turns=7, allowed_tools=["Bash", "Write"])
    return ClaudeAdapter(config, homes)


def assign(execution: int, prompt: str = "-n do it", resume: ResumeFrom | None = None) -> Assign:
    spec = TaskSpec(prompt=prompt, agent="claude", model="claude-test")
    return Assign(
        task=1, execution=execution, attempt=1, spec=spec, lease_expires_at=0, resume=resume
    )


def test_headless_command_with_the_tasks_model_and_the_configs_limits(
    adapter: ClaudeAdapter, tmp_path: Path
) -> None:
    command = adapter.command(assign(5), tmp_path, {"ANTHROPIC_API_KEY": SECRET})
    assert command.argv == [
        "/bin/claude", "-p", "--output-format", "stream-json", "--verbose",
        "--model", "claude-test", "--max-turns", "7", "--allowedTools=Bash,Write",
        "--", "-n do it",
    ]  # fmt: skip
    assert command.stdin is None  # /dev/null
    assert command.env["ANTHROPIC_API_KEY"] == SECRET
    assert command.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    home = Path(command.env["CLAUDE_CONFIG_DIR"])
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert sorted(p.name for p in home.iterdir()) == ["CLAUDE.md", "settings.json"]


def test_parallel_runs_get_their_own_config_directories(
    adapter: ClaudeAdapter, tmp_path: Path
) -> None:
    first = adapter.command(assign(1), tmp_path, {}).env["CLAUDE_CONFIG_DIR"]
    second = adapter.command(assign(2), tmp_path, {}).env["CLAUDE_CONFIG_DIR"]
    assert first != second


def test_the_session_is_kept_masked_and_resumed_from_a_fresh_directory(
    adapter: ClaudeAdapter, tmp_path: Path
) -> None:
    workdir = tmp_path / "work dir"
    home = Path(adapter.command(assign(1), workdir, {}).env["CLAUDE_CONFIG_DIR"])
    transcript = home / "projects" / project_dir_name(workdir) / f"{SESSION}.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_text(f'{{"key": "{SECRET}"}}\n')
    result = ExecutionResult(thread_id=SESSION)
    adapter.finish(assign(1), result)
    assert not home.exists()
    assert result.session_file is not None
    kept = Path(result.session_file)
    assert SECRET not in kept.read_text() and stat.S_IMODE(kept.stat().st_mode) == 0o600

    resume = ResumeFrom(execution=1, thread_id=SESSION, session_file=str(kept))
    command = adapter.command(assign(2, resume=resume), workdir, {})
    assert command.argv[-4:-2] == ["--resume", SESSION]
    again = Path(command.env["CLAUDE_CONFIG_DIR"])
    assert (again / "projects" / project_dir_name(workdir) / f"{SESSION}.jsonl").is_file()


def test_resuming_a_session_that_is_gone_says_how_to_start_over(
    adapter: ClaudeAdapter, tmp_path: Path
) -> None:
    resume = ResumeFrom(execution=1, thread_id=SESSION, session_file=str(tmp_path / "gone"))
    with pytest.raises(FleetError, match="without --resume"):
        adapter.command(assign(2, resume=resume), tmp_path, {})


def test_the_tasks_own_turns_tools_and_permission_mode_win_over_the_configs(
    adapter: ClaudeAdapter, tmp_path: Path
) -> None:
    spec = TaskSpec(
        prompt="p",
        agent="claude",
        max_turns=3,
        allowed_tools=["Read", "Grep"],
        permission_mode="acceptEdits",
    )
    task = Assign(task=1, execution=9, attempt=1, spec=spec, lease_expires_at=0)
    argv = adapter.command(task, tmp_path, {}).argv
    assert argv[argv.index("--max-turns") + 1] == "3"
    assert "--allowedTools=Read,Grep" in argv and "--allowedTools=Bash,Write" not in argv
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"


def test_a_resumed_attempt_is_told_to_go_on_and_a_continuing_task_says_its_own_prompt(
    adapter: ClaudeAdapter, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    session = tmp_path / "kept.jsonl"
    session.write_text("{}\n")
    resume = ResumeFrom(execution=1, thread_id=SESSION, session_file=str(session))
    same_task = adapter.command(assign(2, resume=resume), workdir, {})
    assert same_task.argv[-1] == RESUME_PROMPT
    review = "Also rename the helper, as the reviewer asks."
    follow_up = Assign(
        task=9,
        execution=3,
        attempt=1,
        spec=TaskSpec(prompt=review, agent="claude", continues=1),
        lease_expires_at=0,
        resume=resume,
    )
    assert adapter.command(follow_up, workdir, {}).argv[-2:] == ["--", review]
