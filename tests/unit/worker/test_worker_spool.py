"""The spool is made at the first event batch, not before the spawn: a run that prints nothing
makes no file, and a spool that cannot be made fails the attempt, not the worker."""

from __future__ import annotations

import shutil

import pytest

from fleetd.runtime.spool import read_records
from fleetd.worker.logic import Worker
from shared import messages as m
from shared.config import FleetConfig
from tests.unit.worker.drive import NOW, assign, finished, run_agent, seal, shell, to_recorder

pytestmark = pytest.mark.usefixtures("no_leftovers")


def test_a_run_that_prints_nothing_makes_no_spool(worker: Worker, config: FleetConfig) -> None:
    worker.on_broker(assign(shell("true")), NOW)
    assert not config.paths().spool_file(1).exists()
    out = run_agent(worker)
    assert not config.paths().spool_file(1).exists()
    assert finished(seal(worker, out)).outcome == "succeeded"


def test_the_spool_holds_each_batch_before_it_is_sent(worker: Worker, config: FleetConfig) -> None:
    worker.on_broker(assign(shell("echo '{}'")), NOW)
    out = run_agent(worker)
    sent = [b for b in to_recorder(out) if isinstance(b, m.EventBatch)]
    spooled = [m.RECORDER_REQUESTS.decode(r) for r in read_records(config.paths().spool_file(1))]
    assert spooled == sent and len(sent) == 1


def test_a_spool_that_cannot_be_made_fails_the_attempt_saying_why(
    worker: Worker, config: FleetConfig
) -> None:
    spool_dir = config.paths().spool_dir
    shutil.rmtree(spool_dir)
    spool_dir.write_text("not a directory")  # every file under it fails (ENOTDIR)
    worker.on_broker(assign(shell("echo '{}'; sleep 30")), NOW)
    report = finished(seal(worker, run_agent(worker)))
    assert report.outcome == "failed"
    assert (report.result.error or "").startswith("cannot record the agent's output")
    assert report.result.failure_class == "permanent"
