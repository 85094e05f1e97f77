"""list_tasks' filters over the spec: agent, repository, label, prompt words; with paging."""

from __future__ import annotations

from fleetd.broker.store import QueueStore
from shared.models import TaskSpec


def ids(store: QueueStore, **narrow: object) -> list[int]:
    limit = int(narrow.pop("limit", 50))  # type: ignore[arg-type]
    before = narrow.pop("before", None)
    return [t.id for t in store.list_tasks(None, limit, before, **narrow)]  # type: ignore[arg-type]


def test_each_filter_narrows_the_newest_first_listing(store: QueueStore) -> None:
    store.enqueue(
        [
            TaskSpec(prompt="Fix the parser"),  # codex by default: no agent in the stored spec
            TaskSpec(prompt="tidy", agent="command", argv=["x"], labels={"team": "web"}),
            TaskSpec(prompt="parse dates", agent="claude", repo="/src/app"),
            TaskSpec(prompt="other", labels={"team": "core", 'odd"key': "1"}),
        ],
        1,
    )
    assert ids(store) == [4, 3, 2, 1]
    assert ids(store, agent="codex") == [4, 1]
    assert ids(store, agent="command") == [2]
    assert ids(store, repo="/src/app") == [3]
    assert ids(store, label="team=web") == [2]
    assert ids(store, label="team=") == []
    assert ids(store, label='odd"key=1') == [4]
    assert ids(store, search="PARSE") == [3, 1]
    assert ids(store, search="parse", agent="claude") == [3]


def test_a_filtered_listing_pages_on_below_its_last_id(store: QueueStore) -> None:
    specs = [TaskSpec(prompt=f"{'even' if n % 2 == 0 else 'odd'} {n}") for n in range(10)]
    store.enqueue(specs, 1)
    first = ids(store, search="even", limit=2)
    assert first == [9, 7]
    assert ids(store, search="even", limit=2, before=first[-1]) == [5, 3]
