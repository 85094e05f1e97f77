"""`fleetctl list` with a filter asks window after window until its page is full or the broker
says nothing older is left (each request reads a bounded window of tasks)."""

from __future__ import annotations

from fleetctl.tasks import _listing
from shared import messages as m
from shared.models import TaskSpec, TaskView


def _task(task: int) -> TaskView:
    return TaskView(id=task, state="queued", spec=TaskSpec(prompt="p"), attempts=0, enqueued_at=1)


class Windows:
    """The broker's answers to a rare search: ids 900, then nothing in 801-899, then 350, 20."""

    def __init__(self) -> None:
        self.asked: list[tuple[int | None, int]] = []
        self.pages = {
            None: m.TaskList(tasks=[_task(900)], next_before=801),
            801: m.TaskList(tasks=[], next_before=701),
            701: m.TaskList(tasks=[_task(350), _task(20)], next_before=None),
        }

    def ask(self, request: m.ListTasks) -> m.TaskList:
        self.asked.append((request.before, request.limit))
        return self.pages[request.before]


def test_a_filtered_listing_goes_on_until_nothing_older_is_left() -> None:
    ctl = Windows()
    found = _listing(ctl, m.ListTasks(limit=5, search="rare"))  # type: ignore[arg-type]
    assert [t.id for t in found] == [900, 350, 20]
    assert ctl.asked == [(None, 5), (801, 4), (701, 4)]


def test_a_full_page_stops_the_asking() -> None:
    ctl = Windows()
    found = _listing(ctl, m.ListTasks(limit=1, search="rare"))  # type: ignore[arg-type]
    assert [t.id for t in found] == [900] and ctl.asked == [(None, 1)]
