"""The documented JSON shapes of fleetctl's `--json` output, which the HTTP API serves too:
one source, so that `fleetctl show --json` and `GET /api/v1/tasks/{id}` never drift apart."""

from __future__ import annotations

from typing import Any

import msgspec

from shared import messages as m
from shared.models import (
    TASK_STATES,
    EventRecord,
    ExecutionResult,
    TaskView,
    WorkerView,
    flag_names,
    rfc3339,
)


def result_json(result: ExecutionResult | None) -> dict[str, Any] | None:
    return msgspec.to_builtins(result) if result is not None else None


def task_json(task: TaskView, with_executions: bool) -> dict[str, Any]:
    """The documented JSON shape of a task (`show --json`, `list --json`)."""
    out: dict[str, Any] = {
        "id": task.id,
        "state": task.state,
        "attempts": task.attempts,
        "spec": msgspec.to_builtins(task.spec),
        "result": result_json(task.result),
        "enqueued_at": rfc3339(task.enqueued_at),
        "started_at": rfc3339(task.started_at),
        "finished_at": rfc3339(task.finished_at),
        "not_before": rfc3339(task.not_before),
        "priority": task.priority,
        "waiting": task.waiting,
    }
    if with_executions:
        out["executions"] = [
            {
                "id": e.id,
                "attempt": e.attempt,
                "worker": e.worker,
                "outcome": e.outcome,
                "claimed_at": rfc3339(e.claimed_at),
                "started_at": rfc3339(e.started_at),
                "finished_at": rfc3339(e.finished_at),
                "result": result_json(e.result),
                "node": e.node,
            }
            for e in task.executions
        ]
    return out


_decode_any = msgspec.json.Decoder().decode


def event_json(event: EventRecord) -> dict[str, Any]:
    """The documented JSON shape of an event: the payload parsed when it is JSON, else text."""
    payload: Any
    try:
        payload = _decode_any(event.payload)
    except msgspec.DecodeError:
        payload = event.payload.decode("utf-8", errors="backslashreplace")
    return {
        "execution": event.execution,
        "seq": event.seq,
        "type": event.type,
        "ts": rfc3339(event.ts),
        "flags": flag_names(event.flags),
        "payload": payload,
    }


def worker_json(worker: WorkerView) -> dict[str, object]:
    return {
        "id": worker.id,
        "pid": worker.pid,
        "state": worker.state,
        "task": worker.task,
        "execution": worker.execution,
        "since": rfc3339(worker.since),
        "node": worker.node,
        # Another node's worker: when its node was last heard of, and whether that is longer
        # ago than a lease (None and False for this node's own).
        "seen_at": rfc3339(worker.seen_at),
        "lost": worker.lost,
    }


def status_json(status: m.Status) -> dict[str, Any]:
    """`fleetctl status --json`: every state counted (zeros too), workers as `workers --json`."""
    out = msgspec.to_builtins(status)
    out["counts"] = {state: status.counts.get(state, 0) for state in TASK_STATES}
    # Every node's workers: this node's own, then the others' (each with its `node`).
    out["workers"] = [worker_json(w) for w in status.workers + status.other_workers]
    del out["other_workers"]
    return out


def diff_json(diff: m.TaskDiff) -> dict[str, Any]:
    return {
        "task": diff.task,
        "execution": diff.execution,
        "branch": diff.branch,
        "base": diff.base,
        "commit": diff.commit,
        "patch": diff.patch.decode("utf-8", errors="replace"),
    }


def enqueued_json(reply: m.Enqueued) -> list[dict[str, Any]]:
    return [{"id": i, "created": c} for i, c in zip(reply.ids, reply.created, strict=True)]


def cancelled_json(reply: m.Cancelled) -> dict[str, Any]:
    return {"id": reply.task, "state": reply.state, "pending": reply.pending}


def retried_json(reply: m.Retried) -> dict[str, Any]:
    return {"id": reply.task, "state": reply.state, "resume": reply.resume}
