"""FindTasks: the tasks of some idempotency keys (how the tracker finds an issue's task)."""

from __future__ import annotations

from fleetd.broker.logic import Broker
from fleetd.broker.store import QueueStore
from fleetd.runtime.routing import ToPeer
from shared import messages as m
from shared.models import TaskSpec


def test_tasks_by_key_finds_only_the_keys_asked_for(store: QueueStore) -> None:
    specs = [TaskSpec(prompt=p, key=k) for p, k in (("a", "k1"), ("b", None), ("c", "k3"))]
    store.enqueue(specs, 1)
    found = store.tasks_by_key(["k3", "k1", "unknown"])
    assert [(t.id, t.spec.key) for t in found] == [(1, "k1"), (3, "k3")]


def test_tasks_by_key_takes_more_keys_than_sqlite_takes_parameters(store: QueueStore) -> None:
    store.enqueue([TaskSpec(prompt="p", key=f"k{i}") for i in range(1200)], 1)
    found = store.tasks_by_key([f"k{i}" for i in range(0, 1200, 2)])
    assert len(found) == 600


def test_find_tasks_answers_a_task_list(broker: Broker) -> None:
    broker.handle(b"c", b"e", m.Enqueue(tasks=[TaskSpec(prompt="a", key="issue")]), 1)
    [reply] = broker.handle(b"c", b"f", m.FindTasks(keys=["issue", "other"]), 2)
    assert isinstance(reply, ToPeer) and isinstance(reply.message, m.TaskList)
    assert [t.spec.key for t in reply.message.tasks] == ["issue"]
