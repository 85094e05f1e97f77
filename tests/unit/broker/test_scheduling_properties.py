"""Property tests of the claim under limits: no limit is ever exceeded, and no runnable task
starves (each claim takes the first task, by priority then FIFO, that has room; a claim
finds nothing only when no queued task has room)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetd.broker.scheduling import Gate, limits_of
from fleetd.broker.store import QueueStore
from shared.models import ExecutionResult, TaskSpec

LIMITS = {"agent:claude": 1, "label:team=web": 2, "agent:codex": 3}

task_specs = st.builds(
    lambda agent, web, priority: TaskSpec(
        prompt="p",
        agent=agent,
        argv=["true"] if agent == "command" else [],
        labels={"team": "web"} if web else {},
        priority=priority,
    ),
    st.sampled_from(["codex", "claude", "command"]),
    st.booleans(),
    st.integers(-2, 2),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), task_specs),
        st.tuples(st.just("claim"), st.none()),
        st.tuples(st.just("finish"), st.integers(0, 10)),
    ),
    max_size=40,
)


def fits(spec: TaskSpec, running: list[TaskSpec], gate: Gate) -> bool:
    counts = gate.counts(running)
    return all(counts[sel] < cap for sel, cap in gate.limits.items() if sel.matches(spec))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_claims_never_exceed_a_limit_and_never_skip_a_task_that_fits(ops) -> None:
    gate = Gate(limits_of(LIMITS))
    with tempfile.TemporaryDirectory() as tmp:
        store = QueueStore.open(Path(tmp) / "q.db", 3)
        try:
            queued: dict[int, TaskSpec] = {}  # the model: task id -> spec, claim order by key
            running: dict[int, tuple[int, TaskSpec]] = {}  # task -> (execution, spec)
            now = 1
            for op, arg in ops:
                now += 1
                if op == "enqueue":
                    [(task, _)] = store.enqueue([arg], now)
                    queued[task] = arg
                elif op == "claim":
                    order = sorted(queued, key=lambda t: (-queued[t].priority, t))
                    live = [spec for _, spec in running.values()]
                    expected = next((t for t in order if fits(queued[t], live, gate)), None)
                    claim = store.claim("w", now, 10**9, gate)
                    assert (claim.task if claim else None) == expected
                    if claim is not None:
                        running[claim.task] = (claim.execution, queued.pop(claim.task))
                        live = [spec for _, spec in running.values()]
                        for sel, count in gate.counts(live).items():
                            assert count <= gate.limits[sel], sel.text
                elif running:
                    task = sorted(running)[arg % len(running)]
                    execution, _ = running.pop(task)
                    store.finish(execution, "succeeded", ExecutionResult(), now)
        finally:
            store.close()


# A task graph: each task may wait for earlier ones (after any outcome, or only success), and
# each run ends in a drawn outcome.
graphs = st.lists(
    st.tuples(
        st.lists(st.integers(0, 20), max_size=3),  # indexes of earlier tasks (mod its index)
        st.booleans(),  # after_any
        st.sampled_from(["succeeded", "failed", "cancelled"]),  # how its run ends
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs)
def test_dependents_start_only_after_their_tasks_and_nothing_is_left_waiting(graph) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = QueueStore.open(Path(tmp) / "q.db", 1)
        try:
            ids: list[int] = []
            after_of: dict[int, tuple[list[int], bool]] = {}
            outcome_of: dict[int, str] = {}
            for index, (picks, after_any, outcome) in enumerate(graph):
                after = sorted({ids[p % index] for p in picks}) if index else []
                [(task, _)] = store.enqueue(
                    [TaskSpec(prompt="p", after=after, after_any=after_any)], 1
                )
                ids.append(task)
                after_of[task] = (after, after_any)
                outcome_of[task] = outcome
            now = 2
            while (claim := store.claim("w", now, 10**9)) is not None:
                after, after_any = after_of[claim.task]
                for dependency in after:
                    state = store.get_task(dependency).state
                    assert state in (
                        ("succeeded", "failed", "cancelled") if after_any else ("succeeded",)
                    )
                now += 1
                store.finish(claim.execution, outcome_of[claim.task], ExecutionResult(), now)
            # Everything ended: run, or cancelled because a task it needed did not succeed.
            for task in ids:
                view = store.get_task(task)
                assert view.state != "queued", (task, view)
                if view.state == "cancelled" and not view.executions:
                    after, after_any = after_of[task]
                    assert not after_any and any(
                        store.get_task(d).state != "succeeded" for d in after
                    )
        finally:
            store.close()
