"""Messages for a running agent (`fleetctl say` and `interrupt`): to the worker that runs it.

The broker knows which worker holds a task's running execution; whether the agent takes the
message is the worker's to find out (it records the message, or why not, as an event).
"""

from __future__ import annotations

from shared import messages as m
from shared.config import FleetConfig
from shared.models import TaskView

TAKES_MESSAGES = "only codex tasks take messages while they run, with codex.mode = app-server"


def route(
    task: TaskView | None, request: m.SayToTask | m.InterruptTask, config: FleetConfig
) -> tuple[m.Message, tuple[str, m.Message] | None]:
    """The reply to the client, and (worker, message) for the worker running the task."""
    if task is None:
        number = request.task
        return m.ErrorReply(code="not_found", message=f"no task {number}"), None
    if task.spec.agent != "codex" or config.codex.mode != "app-server":
        return m.ErrorReply(code="conflict", message=f"task {task.id}: {TAKES_MESSAGES}"), None
    running = [e for e in task.executions if e.outcome == "running" and e.worker]
    if task.state != "running" or not running:
        words = f"task {task.id} is {task.state}, not running: there is no agent to tell"
        return m.ErrorReply(code="conflict", message=words), None
    execution = running[-1]
    assert execution.worker is not None
    if execution.node is not None and execution.node != config.node.name:
        # Its worker is another fleetd's: this broker reaches only its own node's workers.
        words = (
            f"task {task.id} runs on node {execution.node!r}: run `fleetctl say` or "
            f"`interrupt` on that host"
        )
        return m.ErrorReply(code="conflict", message=words), None
    order: m.Message = (
        m.SteerExecution(execution=execution.id, message=request.message)
        if isinstance(request, m.SayToTask)
        else m.InterruptExecution(execution=execution.id)
    )
    return m.Delivered(task=task.id, execution=execution.id), (execution.worker, order)
