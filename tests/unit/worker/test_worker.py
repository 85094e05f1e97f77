"""The worker's phases, in the order an attempt goes through them, and its timers."""

from __future__ import annotations

import pytest

from fleetd.worker.closing import RESEND_SECONDS, SEAL_WAIT_SECONDS
from fleetd.worker.logic import Phase, ToRecorder, Worker
from shared import messages as m
from shared.config import FleetConfig
from tests.unit.worker.drive import (
    NOW,
    assign,
    complete,
    events_of,
    finished,
    run_agent,
    seal,
    shell,
    stream_end,
    to_broker,
    to_recorder,
)

pytestmark = pytest.mark.usefixtures("no_leftovers")

TWO_EVENTS = 'echo \'{"type":"one"}\'; echo \'{"type":"two"}\''


def test_start_announces_the_worker_and_it_idles(worker: Worker) -> None:
    assert to_broker(worker.start(NOW)) == [m.Ready(worker="w1", pid=4242)]
    assert worker.phase is Phase.IDLE
    assert worker.fds(NOW) == []


def test_assign_starts_the_agent_and_reports_it_started(worker: Worker) -> None:
    out = worker.on_broker(assign(shell(TWO_EVENTS)), NOW)
    assert worker.phase is Phase.RUNNING
    [started] = to_broker(out, m.AgentStarted)
    assert isinstance(started, m.AgentStarted)
    assert started.execution == 1 and started.pid > 0
    assert worker.fds(NOW)  # its stdout, stderr and pidfd
    run_agent(worker)


def test_a_whole_attempt_goes_running_sealing_reporting_idle(worker: Worker) -> None:
    worker.on_broker(assign(shell(TWO_EVENTS)), NOW)
    out = run_agent(worker)
    assert worker.closing_phase(1) is Phase.SEALING
    assert events_of(out) == [b'{"type":"one"}', b'{"type":"two"}']
    end = stream_end(out)
    assert (end.task, end.execution, end.last_seq) == (1, 1, 2)
    assert to_broker(out, m.Finished) == []  # not before the stream is sealed

    reported = seal(worker, out)
    assert worker.closing_phase(1) is Phase.REPORTING
    report = finished(reported)
    assert (report.execution, report.outcome) == (1, "succeeded")
    assert report.result.exit_code == 0 and report.result.events == 2

    assert worker.on_broker(m.FinishAck(execution=1), NOW) == []
    assert worker.phase is Phase.IDLE
    assert worker.execution is None


def test_the_stream_end_is_the_message_the_worker_waits_on(worker: Worker) -> None:
    worker.on_broker(assign(shell("true")), NOW)
    out = run_agent(worker)
    seals = [o for o in out if isinstance(o, ToRecorder) and o.seals]
    assert len(seals) == 1
    assert isinstance(m.RECORDER_REQUESTS.decode(seals[0].payload), m.StreamEnd)


def test_heartbeats_carry_the_execution_and_keep_their_interval(
    worker: Worker, config: FleetConfig
) -> None:
    interval = config.worker.heartbeat_seconds
    assert to_broker(worker.step(NOW)) == [m.Heartbeat(worker="w1", pid=4242)]
    assert worker.step(NOW + interval / 2) == []
    worker.on_broker(assign(shell("sleep 30")), NOW)
    beat = to_broker(worker.step(NOW + interval), m.Heartbeat)
    assert beat == [m.Heartbeat(worker="w1", pid=4242, execution=1)]
    worker.on_broker(m.CancelExecution(execution=1), NOW + interval)
    run_agent(worker, NOW + interval)


def test_a_finished_is_resent_until_acknowledged(worker: Worker) -> None:
    worker.on_broker(assign(shell("true")), NOW)
    report = finished(seal(worker, run_agent(worker)))
    assert to_broker(worker.step(NOW + RESEND_SECONDS / 2), m.Finished) == []
    assert to_broker(worker.step(NOW + RESEND_SECONDS), m.Finished) == [report]
    assert to_broker(worker.step(NOW + RESEND_SECONDS * 1.5), m.Finished) == []
    assert to_broker(worker.step(NOW + RESEND_SECONDS * 2), m.Finished) == [report]
    worker.on_broker(m.FinishAck(execution=99), NOW)  # another execution's: ignored
    assert worker.closing_phase(1) is Phase.REPORTING
    worker.on_broker(m.FinishAck(execution=1), NOW)
    assert worker.phase is Phase.IDLE
    assert to_broker(worker.step(NOW + RESEND_SECONDS * 9), m.Finished) == []


def test_a_seal_that_never_comes_is_waited_for_bounded(worker: Worker) -> None:
    worker.on_broker(assign(shell("true")), NOW)
    run_agent(worker)
    assert to_broker(worker.step(NOW + SEAL_WAIT_SECONDS - 0.1), m.Finished) == []
    assert worker.closing_phase(1) is Phase.SEALING
    report = finished(worker.step(NOW + SEAL_WAIT_SECONDS))
    assert worker.closing_phase(1) is Phase.REPORTING
    assert report.outcome == "succeeded"  # the recorder's sweep will take the spool


def test_a_seal_of_another_execution_is_ignored(worker: Worker) -> None:
    worker.on_broker(assign(shell("true")), NOW)
    run_agent(worker)
    assert worker.on_recorder(m.StreamSealed(task=9, execution=9, last_seq=0), NOW) == []
    assert worker.closing_phase(1) is Phase.SEALING


def test_a_stream_sealed_short_cannot_report_success(worker: Worker) -> None:
    worker.on_broker(assign(shell(TWO_EVENTS)), NOW)
    run_agent(worker)
    short = m.StreamSealed(task=1, execution=1, last_seq=1)  # the disk took only one event
    report = finished(worker.on_recorder(short, NOW))
    assert report.outcome == "failed"
    assert report.result.error == "events 2 to 2 could not be stored (disk full)"


def test_a_stream_end_the_recorder_cannot_take_is_not_waited_for(worker: Worker) -> None:
    worker.on_broker(assign(shell("true")), NOW)
    out = run_agent(worker)
    [end] = [o for o in out if isinstance(o, ToRecorder) and o.seals]
    report = finished(worker.undeliverable(end, NOW))
    assert worker.closing_phase(1) is Phase.REPORTING and report.outcome == "succeeded"


def test_an_event_batch_the_recorder_cannot_take_changes_nothing(worker: Worker) -> None:
    worker.on_broker(assign(shell(TWO_EVENTS)), NOW)
    out = run_agent(worker)
    batch = next(o for o in out if isinstance(o, ToRecorder) and not o.seals)
    assert worker.undeliverable(batch, NOW) == []  # the spool holds it for the recorder
    assert worker.closing_phase(1) is Phase.SEALING


def test_an_assign_while_busy_is_refused_as_interrupted(worker: Worker) -> None:
    worker.on_broker(assign(shell("sleep 30")), NOW)
    out = worker.on_broker(assign(shell("true"), task=2, execution=2), NOW)
    report = finished(out)
    assert (report.execution, report.outcome) == (2, "interrupted")
    assert report.result.error == "worker was busy"
    assert worker.execution is not None and worker.execution.assign.execution == 1
    worker.on_broker(m.CancelExecution(execution=1), NOW)
    run_agent(worker)


def test_attempts_follow_one_another(worker: Worker) -> None:
    assert complete(worker, shell("echo '{}'"), execution=1).outcome == "succeeded"
    report = complete(worker, shell("exit 3"), execution=2)
    assert (report.execution, report.outcome, report.result.exit_code) == (2, "failed", 3)


def test_the_agent_gets_the_prompt_on_stdin_and_only_allowed_variables(
    worker: Worker, tmp_path
) -> None:
    script = (
        'read -r line; printf \'{"type":"got","prompt":"%s","home":"%s","secret":"%s"}\\n\''
        ' "$line" "$HOME" "${NOT_ALLOWED-unset}"'
    )
    worker.on_broker(assign(shell(script)), NOW)
    [line] = events_of(run_agent(worker))
    assert line == (f'{{"type":"got","prompt":"p","home":"{tmp_path}","secret":"unset"}}'.encode())


def test_events_are_spooled_before_they_are_sent(worker: Worker, config: FleetConfig) -> None:
    worker.on_broker(assign(shell(TWO_EVENTS)), NOW)
    out = run_agent(worker)
    from fleetd.runtime.spool import read_records

    spooled = [m.RECORDER_REQUESTS.decode(r) for r in read_records(config.paths().spool_file(1))]
    sent = [b for b in to_recorder(out) if isinstance(b, m.EventBatch)]
    assert spooled == sent


def test_an_assign_that_acknowledges_the_last_run_starts_the_next(worker: Worker) -> None:
    """The broker's Assign after a Finished carries its acknowledgement: no FinishAck first."""
    worker.on_broker(assign(shell("echo one"), execution=1), NOW)
    report = finished(seal(worker, run_agent(worker)))
    assert report.execution == 1 and worker.closing_phase(1) is Phase.REPORTING
    out = worker.on_broker(assign(shell("echo two"), task=2, execution=2, acknowledges=1), NOW)
    assert to_broker(out, m.AgentStarted)  # not refused as busy
    assert worker.execution is not None and worker.execution.assign.execution == 2
    assert finished(seal(worker, run_agent(worker))).outcome == "succeeded"
