"""fleetd and fleetctl end to end with the command adapter."""

from __future__ import annotations

import pytest

from tests.support.fleet import Fleet

pytestmark = pytest.mark.timeout(60)

FINAL = '{"type":"item.completed","item":{"id":"i1","type":"agent_message","text":"all done"}}'
USAGE = '{"type":"turn.completed","usage":{"input_tokens":7,"output_tokens":3}}'


def test_command_task_runs_and_its_events_are_kept(fleet: Fleet) -> None:
    script = f"cat >/dev/null; echo '{FINAL}'; echo plain text; echo '{USAGE}'"
    task = fleet.enqueue("do it", "--", "sh", "-c", script)
    shown = fleet.wait_state(task, "succeeded")
    assert shown["attempts"] == 1
    assert shown["result"]["final_message"] == "all done"
    assert shown["result"]["usage"]["input_tokens"] == 7
    assert shown["result"]["exit_code"] == 0
    for key in ("enqueued_at", "started_at", "finished_at"):
        assert shown[key].endswith("Z") and "." in shown[key]
    events = fleet.events(task)
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[0]["type"] == "item.completed"
    assert events[0]["payload"]["item"]["text"] == "all done"
    assert events[1] == {**events[1], "type": "text", "payload": "plain text"}
    assert "not_json" in events[1]["flags"]
