"""The broker's budgets and holds with time passed in: a spent fleet budget stops dispatch
and resumes when the window slides past the spend; a rate-limited agent kind is held while
the others run; limits free up as tasks end; status shows all of it."""

from __future__ import annotations

from pathlib import Path

from fleetd.broker.budgets import Schedule, Spend
from fleetd.broker.logic import Broker
from fleetd.broker.store import QueueStore
from fleetd.stores.errors import StoreUnavailable
from shared import messages as m
from shared.config import BudgetConfig, ScopeBudget, load_config
from shared.models import ExecutionResult, TaskSpec, TokenUsage
from shared.selectors import parse_selector
from tests.unit.broker.test_broker import CLIENT, assigns, ready

HOUR = 3_600_000_000
DAY = 24 * HOUR


def broker_with(store: QueueStore, tmp_path: Path, toml: str) -> Broker:
    config = tmp_path / "fleet.toml"
    config.write_text(toml)
    return Broker(store, load_config({"HOME": str(tmp_path)}, config))


def enqueue(broker: Broker, *specs: TaskSpec, now: int) -> list:
    return broker.handle(CLIENT, b"ref", m.Enqueue(tasks=list(specs)), now)


def spend(tokens: int = 0, cost: float | None = None, **result) -> ExecutionResult:
    usage = TokenUsage(input_tokens=tokens, total_tokens=tokens)
    return ExecutionResult(exit_code=0, usage=usage, cost_usd=cost, **result)


def finish(broker: Broker, execution: int, result: ExecutionResult, now: int, worker="w1"):
    message = m.Finished(execution=execution, outcome="succeeded", result=result)
    return broker.handle(worker.encode(), b"", message, now)


def holds(broker: Broker, now: int) -> list[tuple[str, int]]:
    [reply] = broker.handle(CLIENT, b"c", m.GetCounts(), now)
    assert reply.message.schedule is not None
    return [(h.scope, h.until) for h in reply.message.schedule.holds]


def spec(agent: str = "command", **fields) -> TaskSpec:
    argv = ["true"] if agent == "command" else []
    return TaskSpec(prompt="p", agent=agent, argv=argv, **fields)


def test_a_spent_fleet_budget_stops_dispatch_until_the_window_passes(
    store: QueueStore, tmp_path: Path
) -> None:
    broker = broker_with(store, tmp_path, "[budget]\ntokens_per_day = 100\n")
    t0 = 10 * DAY
    ready(broker, now=t0)
    [(_, _, first)] = assigns(enqueue(broker, spec(), now=t0))
    out = finish(broker, first, spend(120), now=t0 + HOUR)  # 120 of 100: spent
    assert assigns(out) == []
    assert holds(broker, t0 + HOUR) == [("*", t0 + HOUR + DAY)]
    assert assigns(enqueue(broker, spec(), now=t0 + 2 * HOUR)) == []
    assert assigns(broker.step(t0 + DAY)) == []  # the spend is still in the window
    assert broker.wake_at == t0 + HOUR + DAY  # woken by the reset, not by polling
    [(_, task, _)] = assigns(broker.step(t0 + HOUR + DAY))
    assert task == 2
    assert holds(broker, t0 + HOUR + DAY) == []


def test_a_scope_budget_holds_only_its_scope(store: QueueStore, tmp_path: Path) -> None:
    broker = broker_with(store, tmp_path, '[budget.per."label:team=web"]\ncost_per_day = 1.0\n')
    ready(broker, now=1)
    [(_, _, first)] = assigns(enqueue(broker, spec(labels={"team": "web"}), now=1))
    finish(broker, first, spend(5, cost=1.5), now=2)
    web = spec(labels={"team": "web"})
    out = enqueue(broker, web, spec(), now=3)
    assert [task for _, task, _ in assigns(out)] == [3]  # the web task waits; the other runs
    [(scope, _)] = holds(broker, 3)
    assert scope == "label:team=web"


def test_a_rate_limited_agent_kind_is_held_while_the_others_run(
    store: QueueStore, tmp_path: Path
) -> None:
    broker = broker_with(store, tmp_path, "[budget]\nrate_limit_hold_seconds = 60\n")
    ready(broker, now=1)
    [(_, _, first)] = assigns(enqueue(broker, spec("claude"), now=1))
    limited = ExecutionResult(exit_code=1, failure_class="transient", rate_limited=True)
    message = m.Finished(execution=first, outcome="failed", result=limited)
    enqueue(broker, spec("claude"), spec(), now=2)
    out = broker.handle(b"w1", b"", message, 5)
    # The retry of the first and the second claude task wait; the command task runs.
    assert [task for _, task, _ in assigns(out)] == [3]
    assert holds(broker, 5) == [("agent:claude", 5 + 60_000_000)]


def test_the_window_slides_past_the_oldest_spend_first() -> None:
    budget = BudgetConfig(tokens_per_day=100)
    schedule = Schedule({}, budget)
    everything = TaskSpec(prompt="p")
    rows = [Spend(10, 60, 0.0, everything), Spend(20, 30, 0.0, everything)]
    rows.append(Spend(30, 40, 0.0, everything))  # 130 of 100
    schedule.load(rows, 40)
    [hold] = schedule.gate(40).holds
    # Once the first 60 leave the window, 70 remain: under the cap.
    assert hold.until == 10 + DAY and "130 tokens used" in hold.why
    assert schedule.gate(10 + DAY).holds == ()


def test_a_per_scope_cap_matches_by_selector() -> None:
    budget = BudgetConfig(per={"agent:codex": ScopeBudget(tokens_per_day=10)})
    schedule = Schedule({}, budget)
    schedule.load([Spend(1, 50, 0.0, TaskSpec(prompt="p", agent="claude"))], 2)
    assert schedule.gate(2).holds == ()
    schedule.add(Spend(1, 50, 0.0, TaskSpec(prompt="p")), 2)
    [hold] = schedule.gate(2).holds
    assert hold.selector == parse_selector("agent:codex")


def test_status_shows_each_limits_use(store: QueueStore, tmp_path: Path) -> None:
    broker = broker_with(store, tmp_path, '[limits]\n"agent:command" = 1\n')
    ready(broker, now=1)
    ready(broker, "w2", now=1)
    out = enqueue(broker, spec(), spec(), now=2)
    assert len(assigns(out)) == 1  # the second command task waits for room
    [reply] = broker.handle(CLIENT, b"c", m.GetCounts(), 3)
    [use] = reply.message.schedule.limits
    assert (use.selector, use.running, use.limit) == ("agent:command", 1, 1)
    [(_, _, execution)] = assigns(out)
    out = finish(broker, execution, spend(), now=4)
    assert [task for _, task, _ in assigns(out)] == [2]  # room again: it starts


def test_a_status_reads_the_running_specs_only_when_a_limit_counts_them() -> None:
    # Decoding every running task's spec made a 64-worker status 4x an idle fleet's.
    running = [TaskSpec(prompt="p", agent="command", argv=["true"])] * 3
    reads: list[int] = []

    def running_specs() -> list[TaskSpec]:
        reads.append(1)
        return running

    unlimited = Schedule({}, BudgetConfig())
    assert unlimited.view(running_specs, 1).limits == [] and reads == []
    limited = Schedule({"agent:command": 2}, BudgetConfig())
    [use] = limited.view(running_specs, 1).limits
    assert (use.running, use.limit, len(reads)) == (3, 2, 1)


def test_set_schedule_changes_the_limits(store: QueueStore, tmp_path: Path) -> None:
    broker = broker_with(store, tmp_path, '[limits]\n"agent:command" = 0\n')
    ready(broker, now=1)
    assert assigns(enqueue(broker, spec(), now=2)) == []
    out = broker.handle(CLIENT, b"r", m.SetSchedule(limits={"agent:command": 1}), 3)
    assert isinstance(out[0].message, m.Accepted)
    assert [task for _, task, _ in assigns(out)] == [1]
    bad = broker.handle(CLIENT, b"r", m.SetSchedule(limits={"agent": 1}), 4)
    assert isinstance(bad[0].message, m.ErrorReply)
    half_bad = m.SetSchedule(limits={"agent:x": 9}, budget={"per": {"nope": {}}})
    assert isinstance(broker.handle(CLIENT, b"r", half_bad, 5)[0].message, m.ErrorReply)
    assert [s.text for s in broker.schedule.limits] == ["agent:command"]  # all or nothing


def test_a_resent_result_is_not_counted_twice(store: QueueStore, tmp_path: Path) -> None:
    broker = broker_with(store, tmp_path, "[budget]\ntokens_per_day = 100\n")
    ready(broker, now=1)
    [(_, _, first)] = assigns(enqueue(broker, spec(), now=1))
    finish(broker, first, spend(60), now=2)
    finish(broker, first, spend(60), now=3)  # the same Finished again: already recorded
    assert holds(broker, 3) == []
    assert [s.tokens for s in broker.schedule.window] == [60]


def test_the_spend_in_the_window_survives_a_broker_restart(
    store: QueueStore, tmp_path: Path
) -> None:
    broker = broker_with(store, tmp_path, "[budget]\ntokens_per_day = 100\n")
    ready(broker, now=DAY)
    [(_, _, first)] = assigns(enqueue(broker, spec(), now=DAY))
    finish(broker, first, spend(150), now=DAY + 1)
    restarted = broker_with(store, tmp_path, "[budget]\ntokens_per_day = 100\n")
    ready(restarted, now=DAY + 2)
    assert assigns(enqueue(restarted, spec(), now=DAY + 3)) == []
    assert holds(restarted, DAY + 3) == [("*", 2 * DAY + 1)]


def test_a_rate_limit_hold_doubles_while_the_refusals_go_on() -> None:
    schedule = Schedule({}, BudgetConfig(rate_limit_hold_seconds=10))
    s = 1_000_000
    lengths = []
    now = 0
    for _ in range(7):
        hold = schedule.rate_limited("codex", now)
        assert hold is not None
        lengths.append((hold.until - now) // s)
        now = hold.until + 1  # refused again right after the hold ended
    assert lengths == [10, 20, 40, 80, 160, 160, 160]
    calm = schedule.rate_limited("codex", now + 3600 * s)  # long after: back to the start
    assert calm is not None and calm.until - (now + 3600 * s) == 10 * s
    assert Schedule({}, BudgetConfig(rate_limit_hold_seconds=0)).rate_limited("codex", 0) is None


class OutageStore(QueueStore):
    """A queue whose next `finish` fails as a database out of reach would."""

    fail_next_finish = False

    def finish(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.fail_next_finish:
            self.fail_next_finish = False
            raise StoreUnavailable("the database went away")
        return super().finish(*args, **kwargs)


def test_a_result_resent_after_an_outage_counts_its_spend_and_rate_limit_once(
    tmp_path: Path,
) -> None:
    store = OutageStore(QueueStore.open(tmp_path / "outage.db", 3).conn, 3)
    toml = "[budget]\ntokens_per_day = 100\nrate_limit_hold_seconds = 60\n"
    broker = broker_with(store, tmp_path, toml)
    t0 = 10 * DAY
    ready(broker, now=t0)
    [(_, _, first)] = assigns(enqueue(broker, spec("claude"), now=t0))
    result = spend(60, rate_limited=True)
    store.fail_next_finish = True
    assert finish(broker, first, result, now=t0 + 1) == []  # not stored: the worker resends
    broker.step(t0 + 2)  # the lease check reaches the database again
    finish(broker, first, result, now=t0 + 3)
    # 60 tokens of 100, not 120; the rate-limit hold once (60 s), not doubled to 120 s.
    assert holds(broker, t0 + 3) == [("agent:claude", t0 + 1 + 60_000_000)]
    [(_, task, _)] = assigns(enqueue(broker, spec(), now=t0 + 4))
    assert task == 2
