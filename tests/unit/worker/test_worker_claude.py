"""A Claude Code run through the worker, with a stand-in CLI replaying real stream-json output."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetd.worker.logic import Worker
from shared.config import FleetConfig
from shared.models import TaskSpec
from tests.support.inline_job import InlineJob
from tests.unit.worker.drive import NOW, assign, events_of, finished, run_agent, seal

pytestmark = pytest.mark.usefixtures("no_leftovers")

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "claude"


@pytest.fixture
def claude_worker(config: FleetConfig, job: InlineJob, tmp_path: Path) -> Iterator[Worker]:
    stand_in = tmp_path / "claude"
    # Prints the file named by $REPLAY, then exits with $STATUS, as the CLI would.
    stand_in.write_text('#!/bin/sh\ncat "$REPLAY"\nexit "$STATUS"\n')
    stand_in.chmod(0o755)
    config.claude.bin = str(stand_in)
    config.worker.env_allow += ["REPLAY", "STATUS"]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    made = Worker(config, "w1", env, job=job, pid=4242)
    yield made
    made.close()


def run(worker: Worker, replay: str, status: int) -> tuple[list[bytes], object]:
    worker.env.update(REPLAY=str(REFERENCE / replay), STATUS=str(status))
    worker.on_broker(assign(TaskSpec(prompt="write a file", agent="claude")), NOW)
    out = run_agent(worker)
    report = finished(seal(worker, out, NOW))
    return events_of(out), report


def test_a_successful_run_records_its_lines_usage_and_cost(claude_worker: Worker) -> None:
    events, report = run(claude_worker, "claude-ok.jsonl", 0)
    assert events == (REFERENCE / "claude-ok.jsonl").read_bytes().splitlines()
    assert report.outcome == "succeeded"
    assert report.result.final_message == "wrote it"
    assert report.result.usage.total_tokens == 60 and report.result.cost_usd
    assert report.result.turns == 2


def test_a_rate_limit_reported_as_success_with_status_0_fails_as_transient(
    claude_worker: Worker,
) -> None:
    _, report = run(claude_worker, "claude-429.jsonl", 0)
    assert report.outcome == "failed"
    assert report.result.failure_class == "transient"
    assert "HTTP 429" in report.result.reason


def test_status_0_without_a_result_line_is_a_failure_that_says_so(
    claude_worker: Worker, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"\n".join((REFERENCE / "claude-ok.jsonl").read_bytes().splitlines()[:-1]))
    claude_worker.env.update(REPLAY=str(cut), STATUS="0")
    claude_worker.on_broker(assign(TaskSpec(prompt="write a file", agent="claude")), NOW)
    report = finished(seal(claude_worker, run_agent(claude_worker), NOW))
    assert report.outcome == "failed"
    assert "without a result line" in report.result.reason
