"""The fence through the broker, on both stores: a worker's heartbeat or result that carries a
lease token other than its execution's is refused: the heartbeat answered `LeaseLost` (the
worker ends its agent), the result acknowledged and dropped."""

from __future__ import annotations

from fleetd.broker.logic import Broker
from fleetd.stores.protocol import QueueStoreAPI
from shared import messages as m
from shared.models import ExecutionResult
from tests.unit.broker.test_broker import enqueue, ready


def assigned(broker: Broker) -> m.Assign:
    ready(broker, "w1")
    [_, out] = enqueue(broker, "a", now=1)
    assert isinstance(out.message, m.Assign) and out.message.lease
    return out.message


def test_a_heartbeat_with_a_stale_token_loses_its_lease(broker: Broker) -> None:
    assign = assigned(broker)
    good = m.Heartbeat(worker="w1", pid=1, execution=assign.execution, lease=assign.lease)
    assert broker.handle(b"w1", b"", good, 2) == []
    stale = m.Heartbeat(worker="w1", pid=1, execution=assign.execution, lease=assign.lease + 7)
    [out] = broker.handle(b"w1", b"", stale, 3)
    assert out.message == m.LeaseLost(execution=assign.execution)


def test_a_result_with_a_stale_token_changes_nothing(broker: Broker, store: QueueStoreAPI) -> None:
    assign = assigned(broker)
    late = m.Finished(
        execution=assign.execution,
        outcome="succeeded",
        result=ExecutionResult(exit_code=0),
        lease=assign.lease + 7,
    )
    [ack] = broker.handle(b"w1", b"", late, 2)
    assert ack.message == m.FinishAck(execution=assign.execution)
    task = store.get_task(assign.task)
    assert task is not None and task.state == "running"
    assert [e.outcome for e in task.executions] == ["running"]
