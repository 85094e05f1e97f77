"""A GitHub that stops answering must not hold fleetd's stop, nor leave a process behind."""

from __future__ import annotations

import pytest

from tests.support.fleet import wait_for
from tests.support.tracked import REPO, agent, tracked_fleet

pytestmark = pytest.mark.timeout(150)


def test_fleetd_stops_within_its_bound_while_the_tracker_waits_on_github() -> None:
    with tracked_fleet(agent("true")) as tracked:
        github = tracked.github
        wait_for(lambda: github.requests_to(rf"/repos/{REPO}/issues"), 30, what="a first poll")
        github.stalled.set()
        polled = len(github.seen)
        try:
            tracked.github.add_issue(REPO, "Greeting", "Fix it.", ["agent-fleet"])
            # The next request is under way (it hangs, so it is not in `seen` yet).
            wait_for(lambda: tracked.fleet.json("tracker")["repos"][0]["polls"] >= 1, 30)
            tracked.fleet.ctl("stop", "--timeout", "20")
            code = tracked.fleet.wait_exit(60)
        finally:
            github.released.set()
        log = tracked.fleet.log()
        assert code == 0, log[-3000:]
        assert "tracker stopping in the middle of a poll" in log, log[-3000:]
        assert "did not exit in time" not in log, "the tracker ended at once, not at the bound"
        assert len(github.seen) >= polled
