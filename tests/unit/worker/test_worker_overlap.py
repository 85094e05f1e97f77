"""The worker takes its next task while the recorder seals the last stream: the closing phases
(SEALING, REPORTING) beside a running agent, and what the broker is told of each."""

from __future__ import annotations

import pytest

from fleetd.worker.closing import RESEND_SECONDS, SEAL_LOOK_SECONDS, SEAL_WAIT_SECONDS
from fleetd.worker.logic import Phase, ToBroker, ToRecorder, Worker
from fleetd.worker.outbox import NEXT_ASSIGN_SECONDS
from shared import messages as m
from shared.config import FleetConfig
from tests.unit.worker.drive import (
    NOW,
    assign,
    finished,
    run_agent,
    seal,
    shell,
    stream_end,
    to_broker,
)

pytestmark = pytest.mark.usefixtures("no_leftovers")

SLEEPER = "sleep 30"


def test_an_ended_agent_frees_the_worker_before_its_stream_is_sealed(worker: Worker) -> None:
    worker.on_broker(assign(shell("echo '{}'")), NOW)
    out = run_agent(worker)
    assert stream_end(out).execution == 1
    assert to_broker(out, m.WorkerFree) == [m.WorkerFree(worker="w1", pid=4242, execution=1)]
    # The StreamEnd goes out before the broker hears the worker is free.
    [end, free] = out[-2:]
    assert isinstance(end, ToRecorder) and end.seals == 1 and isinstance(free, ToBroker)
    assert worker.phase is Phase.IDLE and worker.execution is None
    assert worker.closing_phase(1) is Phase.SEALING
    assert not worker.can_exit


def test_the_next_task_runs_while_the_last_is_sealed_and_reported_after_its_seal(
    worker: Worker,
) -> None:
    worker.on_broker(assign(shell("echo '{}'"), execution=1), NOW)
    first = run_agent(worker)
    out = worker.on_broker(assign(shell(SLEEPER), task=2, execution=2), NOW)
    assert to_broker(out, m.AgentStarted)  # not refused as busy
    assert to_broker(out, m.Finished) == []  # execution 1 is not sealed yet
    assert worker.phase is Phase.RUNNING

    report = finished(seal(worker, first))
    assert (report.execution, report.outcome, report.released) == (1, "succeeded", True)
    assert worker.closing_phase(1) is Phase.REPORTING
    assert worker.phase is Phase.RUNNING  # the second agent runs on
    worker.on_broker(m.FinishAck(execution=1), NOW)
    assert worker.closing_phase(1) is None

    worker.on_broker(m.CancelExecution(execution=2), NOW)
    assert finished(seal(worker, run_agent(worker))).outcome == "cancelled"


def test_an_agent_ending_while_another_closes_keeps_the_worker_busy(worker: Worker) -> None:
    """At most one result waits behind a running agent: the second reports unreleased, so the
    broker's next Assign waits for it (and acknowledges it), as without the overlap."""
    worker.on_broker(assign(shell("true"), execution=1), NOW)
    first = run_agent(worker)
    worker.on_broker(assign(shell("true"), task=2, execution=2), NOW)
    second = run_agent(worker)
    assert to_broker(second, m.WorkerFree) == []
    assert worker.closing_phase(1) is worker.closing_phase(2) is Phase.SEALING

    # Each is reported after its own seal, in whichever order the seals come.
    report_2 = finished(seal(worker, second))
    assert (report_2.execution, report_2.released) == (2, False)
    assert worker.closing_phase(1) is Phase.SEALING
    report_1 = finished(seal(worker, first))
    assert (report_1.execution, report_1.released) == (1, True)

    worker.on_broker(m.FinishAck(execution=1), NOW)
    out = worker.on_broker(assign(shell("true"), task=3, execution=3, acknowledges=2), NOW)
    assert to_broker(out, m.AgentStarted)
    assert worker.closings == {}
    finished(seal(worker, run_agent(worker)))


def test_a_reported_result_not_yet_acknowledged_leaves_the_next_end_released(
    worker: Worker,
) -> None:
    """What a short task's end sends: the last result (reported, held for this message) and the
    WorkerFree; the broker's Assign then acknowledges that result."""
    worker.on_broker(assign(shell("true"), execution=1), NOW)
    first = run_agent(worker)
    worker.on_broker(assign(shell("true"), task=2, execution=2), NOW)
    assert finished(seal(worker, first)).released  # reported while 2 runs: not acknowledged yet
    second = run_agent(worker)
    assert to_broker(second, m.WorkerFree) == [m.WorkerFree(worker="w1", pid=4242, execution=2)]
    assert worker.closing_phase(1) is Phase.REPORTING
    assert worker.closing_phase(2) is Phase.SEALING
    worker.next_heartbeat = NOW  # due now: both closing leases are renewed
    beat = to_broker(worker.step(NOW), m.Heartbeat)
    assert beat == [m.Heartbeat(worker="w1", pid=4242, execution=None, sealing=[1, 2])]
    worker.on_broker(assign(shell("true"), task=3, execution=3, acknowledges=1), NOW)
    assert worker.closing_phase(1) is None
    report = finished(seal(worker, second))
    assert (report.execution, report.released) == (2, True)
    worker.on_broker(m.FinishAck(execution=2), NOW)
    finished(seal(worker, run_agent(worker)))


def test_heartbeats_renew_what_is_closing_beside_what_runs(
    worker: Worker, config: FleetConfig
) -> None:
    interval = config.worker.heartbeat_seconds
    worker.step(NOW)  # the first heartbeat
    worker.on_broker(assign(shell("true"), execution=1), NOW)
    first = run_agent(worker)
    beat = to_broker(worker.step(NOW + interval), m.Heartbeat)
    assert beat == [m.Heartbeat(worker="w1", pid=4242, execution=None, sealing=[1])]

    worker.on_broker(assign(shell(SLEEPER), task=2, execution=2), NOW + interval)
    beat = to_broker(worker.step(NOW + 2 * interval), m.Heartbeat)
    assert beat == [m.Heartbeat(worker="w1", pid=4242, execution=2, sealing=[1])]

    worker.on_broker(m.CancelExecution(execution=2), NOW + 2 * interval)
    second = run_agent(worker, NOW + 2 * interval)
    # Execution 2 was reported unreleased: it is what keeps the worker busy now.
    beat = to_broker(worker.step(NOW + 3 * interval), m.Heartbeat)
    assert beat == [m.Heartbeat(worker="w1", pid=4242, execution=2, sealing=[1])]
    seal(worker, first)
    seal(worker, second)


def test_a_seal_that_never_comes_is_given_up_on_while_the_next_agent_runs(
    worker: Worker,
) -> None:
    worker.on_broker(assign(shell("true"), execution=1), NOW)
    run_agent(worker)
    worker.on_broker(assign(shell(SLEEPER), task=2, execution=2), NOW)
    assert worker.next_timeout(NOW) <= SEAL_WAIT_SECONDS
    assert to_broker(worker.step(NOW + SEAL_WAIT_SECONDS - 0.1), m.Finished) == []
    report = finished(worker.step(NOW + SEAL_WAIT_SECONDS))
    assert report.execution == 1  # the recorder's sweep will take the spool
    resent = to_broker(worker.step(NOW + SEAL_WAIT_SECONDS + RESEND_SECONDS), m.Finished)
    assert resent == [report]
    assert worker.phase is Phase.RUNNING and worker.execution is not None
    worker.on_broker(m.CancelExecution(execution=2), NOW)
    run_agent(worker)


def test_a_short_seal_of_a_released_run_stays_released(worker: Worker) -> None:
    worker.on_broker(assign(shell("echo '{}'; echo '{}'")), NOW)
    run_agent(worker)
    report = finished(worker.on_recorder(m.StreamSealed(task=1, execution=1, last_seq=1), NOW))
    assert (report.outcome, report.released) == ("failed", True)


def test_a_stopping_worker_does_not_say_it_is_free(worker: Worker) -> None:
    worker.on_broker(assign(shell(SLEEPER)), NOW)
    worker.stop(NOW)
    out = run_agent(worker)
    assert to_broker(out, m.WorkerFree) == []
    report = finished(seal(worker, out))
    assert (report.outcome, report.released) == ("interrupted", False)
    worker.on_broker(m.FinishAck(execution=1), NOW)
    assert worker.can_exit


def test_a_stop_waits_for_every_closing_result(worker: Worker) -> None:
    worker.on_broker(assign(shell("true"), execution=1), NOW)
    first = run_agent(worker)
    worker.on_broker(assign(shell(SLEEPER), task=2, execution=2), NOW)
    worker.stop(NOW)
    second = run_agent(worker)
    finished(seal(worker, second))
    worker.on_broker(m.FinishAck(execution=2), NOW)
    assert not worker.can_exit  # execution 1's result is not acknowledged yet
    finished(seal(worker, first))
    worker.on_broker(m.FinishAck(execution=1), NOW)
    assert worker.can_exit


def test_a_cancel_of_a_closing_run_is_too_late(worker: Worker) -> None:
    worker.on_broker(assign(shell("true")), NOW)
    out = run_agent(worker)
    assert worker.on_broker(m.CancelExecution(execution=1), NOW) == []
    assert finished(seal(worker, out)).outcome == "succeeded"


def test_a_seal_wakes_the_worker_only_when_waited_for_or_late(worker: Worker) -> None:
    worker.on_broker(assign(shell("echo '{}'"), execution=1), NOW)
    first = run_agent(worker)
    # Free (its WorkerFree went with the StreamEnd): the seal can wait for the next Assign,
    # which wakes the worker anyway, as long as an Assign takes to come.
    assert to_broker(first, m.WorkerFree)
    assert not worker.wakes_for_recorder(NOW)
    assert worker.next_timeout(NOW) == pytest.approx(NEXT_ASSIGN_SECONDS)
    assert worker.wakes_for_recorder(NOW + NEXT_ASSIGN_SECONDS)
    # The next agent runs: the result waits for its end, so the seal may wait longer.
    worker.on_broker(assign(shell(SLEEPER), task=2, execution=2), NOW)
    look = NOW + SEAL_LOOK_SECONDS
    assert worker.next_timeout(NOW) == pytest.approx(SEAL_LOOK_SECONDS)
    assert not worker.wakes_for_recorder(look - 0.001)
    assert worker.wakes_for_recorder(look)
    # Read late, the seal reports the result as before; nothing more to wake for.
    assert finished(seal(worker, first, look)).execution == 1
    assert not worker.wakes_for_recorder(look)
    assert worker.next_timeout(look) > SEAL_LOOK_SECONDS
    worker.on_broker(m.CancelExecution(execution=2), look)
    second = run_agent(worker, look)
    assert not worker.wakes_for_recorder(look)  # free again, the seal may wait a moment
    # Its result read after the Assign should have come goes at once.
    [report] = [o for o in seal(worker, second, look + 1) if isinstance(o, ToBroker)]
    assert report.wait and report.hold == 0.0


def test_a_seal_the_worker_waits_for_wakes_it_at_once(worker: Worker) -> None:
    worker.on_broker(assign(shell("echo '{}'"), execution=1), NOW)
    first = run_agent(worker)
    worker.on_broker(assign(shell("echo '{}'"), task=2, execution=2), NOW)
    second = run_agent(worker)
    # The first stream is not sealed yet: the second run's end does not free the worker,
    # whose next task waits for that seal.
    assert to_broker(second, m.WorkerFree) == []
    assert worker.wakes_for_recorder(NOW)
    seal(worker, first)
    assert finished(seal(worker, second)).released is False
    worker.stop(NOW)
    assert worker.wakes_for_recorder(NOW)  # stopping: every seal is waited for
