"""One execution in progress inside a worker: the agent process, its output, its limits.

Socket-free and clock-free: the worker passes `now` (monotonic seconds) into every call.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
from dataclasses import dataclass, field
from io import FileIO
from pathlib import Path
from typing import Literal

from fleetd.agents.base import AgentCommand, AgentSummary
from fleetd.agents.failures import classify_result
from fleetd.runtime.agent_registry import AgentRecord
from fleetd.runtime.processes import signal_group
from fleetd.runtime.redaction import Redactor
from fleetd.runtime.spool import SpoolWriter
from fleetd.worker.agent_input import AgentInput
from fleetd.worker.agent_process import AgentProcess, spawn
from fleetd.worker.budget import RunBudget
from fleetd.worker.output import LineSplitter, OutputRest, classify
from shared import messages as m
from shared.models import (
    FLAG_REDACTED,
    EventRecord,
    ExecutionResult,
    FinishedOutcome,
    TimeoutKind,
    now_us,
)

READ_CHUNK = 1 << 20
STDERR_TAIL_LINES = 20
# After the agent's leader exits, how long stray writers may keep its pipes open.
DRAIN_SECONDS = 1.0
# Reads of the pipes left when the leader exits, before the loop polls them again.
DRAIN_READS = 16

NOT_LISTENING = "its agent takes no messages (only codex does, with codex.mode = app-server)"

# Why the worker ended an agent before it ended by itself; the execution's outcome is the same.
EndReason = Literal["timed_out", "cancelled", "interrupted", "failed"]


@dataclass
class Limits:
    """Monotonic deadlines of a run; None when not armed."""

    timeout_at: float
    idle_seconds: float = float("inf")
    last_output: float = 0.0
    kill_at: float | None = None
    drain_until: float | None = None


@dataclass
class Execution:
    """One attempt's agent from spawn to the last line read; the worker drives it from its loop."""

    assign: m.Assign
    spool_path: Path  # created at the first batch: a run that prints nothing makes no file
    redactor: Redactor
    max_line: int
    grace: float
    stderr_path: Path
    agent_record: AgentRecord
    proc: AgentProcess | None = None
    pidfd: int = -1
    seq: int = 0
    started_mono: float = 0.0
    started_at: int = 0
    end_reason: EndReason | None = None
    timeout_kind: TimeoutKind | None = None
    error: str | None = None
    spool_failed: bool = False
    limits: Limits = field(default_factory=lambda: Limits(timeout_at=float("inf")))
    summary: AgentSummary = field(default_factory=AgentSummary)
    budget: RunBudget | None = None
    over_budget: str | None = None  # why the run was ended for its spend
    rest: OutputRest = field(default_factory=lambda: OutputRest(0.0))  # between reads
    heard_bytes: int = 0  # of stdout and stderr

    def __post_init__(self) -> None:
        cut, window = self.redactor.cut_before, self.redactor.window
        self.out_lines = LineSplitter(self.max_line, cut, window)
        self.err_lines = LineSplitter(self.max_line, cut, window)
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.stderr_file: int = -1
        # Not made before the spawn: creating, locking and naming it took 0.1-0.3 ms of the
        # dispatch path on this disk, and the first batch cannot come before the agent runs.
        self.spool: SpoolWriter | None = None
        self.agent_input: AgentInput | None = None  # an agent fleetd speaks to (app-server)

    # --- life ------------------------------------------------------------------------------

    def start(
        self, command: AgentCommand, timeout: float, idle_timeout: float, now: float
    ) -> list[bytes]:
        """Spawn the agent (and open its conversation, if it has one); event batches to send.
        A failure to start ends the execution at once with the reason."""
        self.started_mono = now
        self.started_at = now_us()
        self.limits.timeout_at = self.started_mono + timeout
        self.limits.idle_seconds = idle_timeout
        self.limits.last_output = self.started_mono
        self.rest.begin(now, idle_timeout)
        try:
            self.proc = spawn(command)
        except (OSError, ValueError) as exc:
            # The task's content (a NUL byte, a bad path) fails this attempt, never the worker.
            program = command.argv[0] if command.argv else ""
            self.error = f"cannot start agent {program!r}: {getattr(exc, 'strerror', None) or exc}"
            return []
        self.agent_record.record(self.proc.pid, self.proc.spawned)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        os.set_blocking(self.proc.stderr.fileno(), False)
        self.pidfd = os.pidfd_open(self.proc.pid)
        if command.conversation is None:
            return []
        self.agent_input = AgentInput(self.proc.stdin, command.conversation)
        return self.emit(self.agent_input.send(command.conversation.opening(), now), now)

    def tell(self, order: m.SteerExecution | m.InterruptExecution, now: float) -> list[bytes]:
        """`fleetctl say` or `interrupt`, to the agent if it listens; either way an event says
        what became of it."""
        if isinstance(order, m.SteerExecution):
            batches, refusal = self.say(order.message, now)
        else:
            batches, refusal = self.interrupt(now)
        if refusal is None:
            return batches
        what = "message" if isinstance(order, m.SteerExecution) else "interrupt"
        line = json.dumps({"type": "fleet.refused", "what": what, "why": refusal}).encode()
        return [*batches, *self.emit([(line, 0)], now)]

    def say(self, text: str, now: float) -> tuple[list[bytes], str | None]:
        """Steer the running agent with `text`: event batches, or why it cannot be."""
        if self.agent_input is None or self.end_reason is not None:
            return [], NOT_LISTENING
        items, refusal = self.agent_input.conversation.say(text)
        said = json.dumps({"type": "fleet.say", "text": text}).encode()
        lines = [(said, 0), *self.agent_input.send(items, now)] if refusal is None else []
        return self.emit(lines, now), refusal

    def interrupt(self, now: float) -> tuple[list[bytes], str | None]:
        """End the agent's current turn (the run ends with what it has), or why not."""
        if self.agent_input is None or self.end_reason is not None:
            return [], NOT_LISTENING
        items, refusal = self.agent_input.conversation.interrupt()
        return self.emit(self.agent_input.send(items, now), now), refusal

    @property
    def started(self) -> bool:
        return self.proc is not None

    def fds(self, now: float) -> list[int]:
        """The fds to poll: open output pipes (not while resting) and, until the leader exits,
        its pidfd."""
        if self.proc is None:
            return []
        if self.pidfd >= 0 and self.rest.resting(now):
            return [self.pidfd]
        fds = [pipe.fileno() for pipe in self._open_pipes()]
        if self.pidfd >= 0:
            fds.append(self.pidfd)
        return fds

    def end(self, reason: EndReason, now: float) -> None:
        """Begin ending the agent's group: SIGTERM now, SIGKILL after the grace period."""
        if self.end_reason is None:
            self.end_reason = reason
        if self.proc is None or self.limits.kill_at is not None:
            return
        signal_group(self.proc.pid, signal.SIGTERM)
        self.limits.kill_at = now + self.grace

    def on_fd(self, fd: int, now: float) -> list[bytes]:
        """Handle one readable fd; returns encoded event batches to send."""
        assert self.proc is not None
        if fd == self.pidfd:
            return self._leader_exited(now)
        stdout = self.proc.stdout
        if stdout is not None and not stdout.closed and fd == stdout.fileno():
            return self._read_stdout(now)
        stderr = self.proc.stderr
        if stderr is not None and not stderr.closed and fd == stderr.fileno():
            self._read_stderr(now)
        return []

    def on_timer(self, now: float) -> None:
        limits = self.limits
        if self.end_reason is None and now >= limits.timeout_at:
            self.timeout_kind = "wall"
            self.end("timed_out", now)
        if self.end_reason is None and now >= limits.last_output + limits.idle_seconds:
            self.timeout_kind = "idle"
            self.end("timed_out", now)
        if limits.kill_at is not None and now >= limits.kill_at and self.proc is not None:
            signal_group(self.proc.pid, signal.SIGKILL)
            limits.kill_at = float("inf")
        if limits.drain_until is not None and now >= limits.drain_until:
            self._close_pipes()
        if self.agent_input is not None and self.agent_input.retry_at is not None:
            self.agent_input.flush(now)

    def next_deadline(self, now: float) -> float:
        limits = self.limits
        running = self.end_reason is None
        candidates = [
            limits.timeout_at if running else float("inf"),
            limits.last_output + limits.idle_seconds if running else float("inf"),
        ]
        if self.pidfd >= 0 and self.rest.resting(now):
            candidates.append(self.rest.until)
        retry = self.agent_input.retry_at if self.agent_input is not None else None
        candidates += [t for t in (limits.kill_at, limits.drain_until, retry) if t is not None]
        return min(candidates)

    @property
    def done(self) -> bool:
        """The leader was reaped and both pipes are closed (or were never opened)."""
        if self.proc is None:
            return True
        return self.pidfd < 0 and not self._open_pipes()

    # --- output ----------------------------------------------------------------------------

    def _read_stdout(self, now: float) -> list[bytes]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            data = os.read(self.proc.stdout.fileno(), READ_CHUNK)
        except BlockingIOError:
            return []
        if not data:
            self.proc.stdout.close()
            return self.emit(self.out_lines.finish(), now)
        self._heard(len(data), now)
        return self.emit(self.out_lines.feed(data), now)

    def _heard(self, size: int, now: float) -> None:
        """Output came: the agent is not hung (stderr counts too); the pipes may rest."""
        self.limits.last_output = now
        self.heard_bytes += size
        self.rest.heard(size, now, self.limits.idle_seconds)

    def _drain(self, now: float) -> list[bytes]:
        """The leader exited: read what its pipes hold now (to their end, unless a stray
        writer keeps one open: the loop polls that one on, for the drain period)."""
        assert self.proc is not None
        batches: list[bytes] = []
        for _ in range(DRAIN_READS):
            pipes, heard = self._open_pipes(), self.heard_bytes
            for pipe in pipes:
                if pipe is self.proc.stdout:
                    batches += self._read_stdout(now)
                else:
                    self._read_stderr(now)
            if not pipes or (self.heard_bytes == heard and not any(p.closed for p in pipes)):
                break  # all read, or nothing more for now
        return batches

    def _open_pipes(self) -> list[FileIO]:
        """The agent's output pipes not yet closed: stdout first."""
        assert self.proc is not None
        return [p for p in (self.proc.stdout, self.proc.stderr) if p is not None and not p.closed]

    def emit(self, lines: list[tuple[bytes, int]], now: float) -> list[bytes]:
        """Turn lines into one encoded batch: redacted, classified, numbered, spooled."""
        if not lines or self.spool_failed:
            return []
        ts = now_us()
        execution = self.assign.execution
        events = []
        # One check of the agent's lines joined spares masking each (what we tell the agent
        # back is masked line by line: it is not in that check).
        clean = self.redactor.holds_nothing(b"".join([raw for raw, _ in lines]))
        pending = collections.deque((raw, flags, clean) for raw, flags in lines)
        while pending:
            raw, flags, known_clean = pending.popleft()
            payload, redacted = (raw, False) if known_clean else self.redactor.mask(raw)
            kind, kind_flags, parsed = classify(payload)
            self.summary.feed(payload, parsed)
            if self.agent_input is not None:
                # What the agent is told back is recorded right after what it said.
                replies = self.agent_input.conversation.on_line(payload)
                told = self.agent_input.send(replies, now)
                pending.extendleft(reversed([(line, bits, False) for line, bits in told]))
            self.seq += 1
            flags |= kind_flags | (FLAG_REDACTED if redacted else 0)
            events.append(EventRecord(execution, self.seq, ts, kind, flags, payload))
        if self.budget is not None and self.over_budget is None:
            self._check_budget(now)
        batch = m.EventBatch(task=self.assign.task, execution=execution, events=events)
        record = m.RECORDER_REQUESTS.encode(batch)
        try:
            if self.spool is None:
                self.spool = SpoolWriter(self.spool_path)
            self.spool.append(record)
        except OSError as exc:
            self.seq -= len(events)  # never kept: the stream ends before them
            self._cannot_record(exc, now)
            return []
        return [record]

    def _check_budget(self, now: float) -> None:
        """Past its token or cost budget, the agent's group is ended (TERM, grace, KILL)."""
        assert self.budget is not None
        usage, reported, model = self.summary.spent()
        self.over_budget = self.budget.exceeded(usage, self.budget.cost(usage, reported, model))
        if self.over_budget is not None:
            self.end("failed", now)

    def _cannot_record(self, exc: OSError, now: float) -> None:
        """Output that cannot be kept (a full disk) ends the agent: the task fails, saying why."""
        self.spool_failed = True
        self.error = f"cannot record the agent's output: {exc.strerror or exc} ({self.spool_path})"
        self.end("failed", now)

    def _read_stderr(self, now: float) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        try:
            data = os.read(self.proc.stderr.fileno(), READ_CHUNK)
        except BlockingIOError:
            return
        lines = self.err_lines.feed(data) if data else self.err_lines.finish()
        if data:
            self._heard(len(data), now)
        else:
            self.proc.stderr.close()
        if not lines:
            return
        masked = [self.redactor.mask(line)[0] for line, _ in lines]
        with contextlib.suppress(OSError):  # a full disk: the tail below is still kept
            if self.stderr_file < 0:
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                self.stderr_file = os.open(self.stderr_path, flags, 0o600)
            os.write(self.stderr_file, b"".join(line + b"\n" for line in masked))
        self.stderr_tail.extend(line[:500].decode(errors="replace") for line in masked)

    def _leader_exited(self, now: float) -> list[bytes]:
        assert self.proc is not None
        self.proc.poll()
        if self.proc.returncode is None:
            return []
        os.close(self.pidfd)
        self.pidfd = -1
        if self.agent_input is not None:
            self.agent_input.close()
        # Whatever the leader left behind in its group ends with it.
        signal_group(self.proc.pid, signal.SIGKILL)
        self.limits.drain_until = now + DRAIN_SECONDS
        return self._drain(now)

    def _close_pipes(self) -> None:
        for pipe in self._open_pipes():
            pipe.close()
        self.limits.drain_until = None

    # --- result ----------------------------------------------------------------------------

    def finish(self, now: float) -> tuple[list[bytes], FinishedOutcome, ExecutionResult]:
        """Last batches, the outcome and the result, once `done`."""
        batches = self.emit(self.out_lines.finish(), now) if self.proc is not None else []
        result = ExecutionResult(
            duration_s=round(now - self.started_mono, 6) if self.started else 0.0,
            events=self.seq,
        )
        self.summary.into(result)
        if self.budget is not None and result.cost_usd is None:
            result.cost_usd = self.budget.cost(result.usage, None, self.summary.spent()[2])
        if self.agent_input is not None and self.error is None:
            self.error = self.agent_input.conversation.failure  # e.g. an unreadable answer
        if self.proc is not None:
            code = self.proc.returncode
            result.exit_code = code if code is not None and code >= 0 else None
            result.signal = -code if code is not None and code < 0 else None
        outcome = self._outcome(result)
        if self.stderr_tail:
            result.stderr_tail = "\n".join(self.stderr_tail)
        self._cleanup()
        return batches, outcome, result

    def _outcome(self, result: ExecutionResult) -> FinishedOutcome:
        if self.over_budget is not None:  # not worth a retry: it would spend as much again
            result.error = result.reason = self.over_budget
            result.failure_class = "budget"
            return "failed"
        if self.error is not None:
            result.error = self.error
            if self.spool_failed:  # not the agent's doing; a retry cannot help while it is full
                result.failure_class, result.reason = "permanent", self.error
            else:
                classify_result(result, self.summary, self.stderr_tail, self.error)
            return "failed"
        if self.end_reason is not None:
            result.timeout_kind = self.timeout_kind
            result.reason = {
                "timed_out": self._timeout_reason(),
                "cancelled": "cancelled by request",
                "interrupted": "fleet stopping; task put back in the queue",
            }.get(self.end_reason, self.end_reason)
            return self.end_reason
        if result.exit_code == 0 and self.summary.failure() is None:
            return "succeeded"
        if result.error is None:
            how = (
                f"status {result.exit_code}"
                if result.exit_code is not None
                else (f"signal {result.signal}")
            )
            result.error = f"agent exited with {how}"
        classify_result(result, self.summary, self.stderr_tail, None)
        return "failed"

    def _timeout_reason(self) -> str:
        limits = self.limits
        if self.timeout_kind == "idle":
            return f"idle timeout: no output for {limits.idle_seconds:g} s"
        wall = limits.timeout_at - self.started_mono
        return f"wall-clock timeout reached ({wall:g} s)"

    def _cleanup(self) -> None:
        if self.agent_input is not None:
            self.agent_input.close()
        if self.stderr_file >= 0:
            os.close(self.stderr_file)
            self.stderr_file = -1
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        self.agent_record.forget()

    def close_spool(self) -> None:
        if self.spool is None:
            return
        with contextlib.suppress(OSError):
            self.spool.close()
