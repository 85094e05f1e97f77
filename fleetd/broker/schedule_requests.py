"""The broker's scheduling requests and gates, beside its core (`fleetd.broker.logic`): the
gate of each claim, a result's spend and rate limit, priorities, usage and reloads."""

from __future__ import annotations

from collections import OrderedDict

import msgspec
from loguru import logger

from fleetd.broker.budgets import Schedule, Spend
from fleetd.broker.scheduling import Gate
from fleetd.runtime.routing import ToPeer
from fleetd.stores.protocol import QueueStoreAPI
from shared import messages as m
from shared.config import BudgetConfig
from shared.models import ScheduleView

# Results counted but not stored kept in mind at most: one whose execution was lost instead
# (never resent) leaves its entry behind until this many newer ones push it out.
MAX_COUNTED_UNSTORED = 10_000


class SchedulingRequests:
    """A part of `Broker`: what it does for scheduling (its store and schedule are the Broker's)."""

    store: QueueStoreAPI
    schedule: Schedule
    # Executions whose result's spend and rate limit were counted, but whose result the store
    # did not take (its database out of reach, its disk full): the worker resends it.
    counted_unstored: OrderedDict[int, None]

    def dispatch(self, now: int) -> list[ToPeer]:
        raise NotImplementedError  # the Broker's

    def _news(self) -> None:
        raise NotImplementedError  # the Broker's

    def _gate(self, now: int) -> Gate:
        """The schedule's gate of the moment; the fleet budgets' spend is read from the store
        once (and after a reload), then kept as runs finish."""
        schedule = self.schedule
        if schedule.has_budgets and not schedule.loaded:
            schedule.load(self.store.spend_since(now - schedule.window_us), now)
        elif schedule.stale(now):
            schedule.account(now)
        return schedule.gate(now)

    def _gate_after(self, msg: m.Finished, now: int) -> Gate:
        """The gate of the claim made with a result: its spend counted against the fleet
        budgets, and a rate-limited run holding its agent kind (a resent result, whose
        execution is closed already, counts nothing again)."""
        result, schedule = msg.result, self.schedule
        if msg.execution in self.counted_unstored:
            return self._gate(now)  # resent after its store failed: counted the first time
        tokens, cost = result.usage.total_tokens, result.cost_usd or 0.0
        spends = schedule.has_budgets and bool(tokens or cost)
        spec = self.store.running_spec(msg.execution) if spends or result.rate_limited else None
        if spec is not None:
            self.counted_unstored[msg.execution] = None
            while len(self.counted_unstored) > MAX_COUNTED_UNSTORED:
                self.counted_unstored.popitem(last=False)
        held = spec is not None and result.rate_limited and schedule.rate_limited(spec.agent, now)
        if spec is not None and held:
            logger.warning("{} rate-limited: holding its tasks", spec.agent)
        if spec is not None and spends:
            self._gate(now)  # loads the window's spend first, if not yet
            schedule.add(Spend(now, tokens, cost, spec), now)
        return self._gate(now)

    def _result_stored(self, execution: int) -> None:
        """The store took (or had) the result `_gate_after` counted: a resend is not one now."""
        self.counted_unstored.pop(execution, None)

    def _schedule_view(self, now: int) -> ScheduleView:
        self._gate(now)  # the holds as of now
        return self.schedule.view(self.store.running_specs, now)

    def _on_set_priority(
        self, peer: bytes, ref: bytes, msg: m.SetPriority, now: int
    ) -> list[ToPeer]:
        state = self.store.set_priority(msg.task, msg.priority)
        if state is None:
            return [ToPeer(peer, ref, no_such_task(msg.task))]
        if state != "queued":
            message = f"task {msg.task} is {state}: only a queued task's priority can change"
            return [ToPeer(peer, ref, m.ErrorReply(code="conflict", message=message))]
        reply = m.PrioritySet(task=msg.task, state=state, priority=msg.priority)
        return [ToPeer(peer, ref, reply)]

    def _on_usage(self, peer: bytes, ref: bytes, msg: m.GetUsage, now: int) -> list[ToPeer]:
        rows = self.store.usage(msg.since, msg.by)
        return [ToPeer(peer, ref, m.Usage(rows=rows, by=msg.by, since=msg.since))]

    def _on_set_schedule(
        self, peer: bytes, ref: bytes, msg: m.SetSchedule, now: int
    ) -> list[ToPeer]:
        try:
            budget = msgspec.convert(msg.budget, BudgetConfig)
            self.schedule.configure(msg.limits, budget)
        except (msgspec.ValidationError, ValueError) as exc:
            return [ToPeer(peer, ref, m.ErrorReply(code="bad_request", message=str(exc)))]
        self._news()
        logger.info("schedule reloaded: {} limit(s)", len(msg.limits))  # not their text: a URL
        return [ToPeer(peer, ref, m.Accepted()), *self.dispatch(now)]


def no_such_task(task: int) -> m.ErrorReply:
    return m.ErrorReply(
        code="not_found", message=f"no task {task}: `fleetctl list` shows the known tasks"
    )
