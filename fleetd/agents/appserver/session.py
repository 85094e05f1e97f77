"""The JSON-RPC conversation with one `codex app-server`, socket-free: each line it prints in,
the lines to write to its stdin out (each with the event that records it).

    INITIALIZING --initialize answered--> OPENING (thread/start, or thread/resume)
      --thread opened--> STARTING (turn/start) --turn id--> IN_TURN
      --turn/completed--> STARTING again (a continuation, up to `max_turns`) or CLOSED

CLOSED means fleetd has nothing more to say: the worker closes codex's stdin and codex exits.
Requests codex sends (approvals, questions to the user) are answered at once by the policy
from `[codex]`, so a run never waits for a person. `say` steers the turn in progress
(`turn/steer`); `interrupt` ends it (`turn/interrupt`) and starts no other.
"""

from __future__ import annotations

import enum
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from fleetd.agents.appserver import protocol as p
from fleetd.agents.base import ToAgent

CLIENT = p.ClientInfo(name="agent-fleet", version="0.1.0", title="agent-fleet (fleetd)")
# The agent's last line, when a task may run several turns, says whether it is done.
CONTINUE_MARK = "FLEET: CONTINUE"
DONE_MARK = "FLEET: DONE"
MARK_INSTRUCTION = (
    f"End your final message with the line `{CONTINUE_MARK}` if more remains to do after "
    f"this turn, else `{DONE_MARK}`."
)
CONTINUE_PROMPT = f"Continue the task from where you stopped. {MARK_INSTRUCTION}"
DENIED = "fleetd's policy (codex.approvals = deny) denies it; do without it"


class Envelope(msgspec.Struct):
    """Any JSON-RPC message: a request or notification (method), or a response (id)."""

    id: int | str | None = None
    method: str | None = None
    params: msgspec.Raw = msgspec.Raw()  # left undecoded (empty: absent) until the method
    result: msgspec.Raw = msgspec.Raw()  # says what it is
    error: Any = None


_envelope = msgspec.json.Decoder(Envelope).decode
_encode = msgspec.json.Encoder().encode


def decode_envelope(payload: bytes) -> Envelope | None:
    """The line as a JSON-RPC message, or None if it is not one."""
    try:
        message = _envelope(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return message if message.method is not None or message.id is not None else None


def message_params(message: Envelope) -> bytes:
    return bytes(message.params) if message.params else b"{}"


class Phase(enum.Enum):
    INITIALIZING = "initializing"
    OPENING = "opening"
    STARTING = "starting"
    IN_TURN = "in_turn"
    CLOSED = "closed"


@dataclass(frozen=True)
class Policy:
    """How codex's requests to a user are answered."""

    approvals: Literal["approve", "deny"] = "deny"
    user_input_answer: str = "Nobody is available to answer; decide for yourself and carry on."


@dataclass(frozen=True)
class ThreadSettings:
    """What the thread is opened with."""

    prompt: str
    cwd: str
    model: str | None = None
    sandbox: Literal["read-only", "workspace-write", "danger-full-access"] | None = None
    approval_policy: Literal["untrusted", "on-request", "never"] = "never"
    effort: str | None = None
    resume_thread: str | None = None  # continue this thread (thread/resume) instead
    max_turns: int = 1


@dataclass
class AppServerSession:
    """One run's conversation; `finished` once nothing more is to be sent."""

    settings: ThreadSettings
    policy: Policy = field(default_factory=Policy)
    phase: Phase = Phase.INITIALIZING
    thread_id: str | None = None
    turn_id: str | None = None
    turns_started: int = 0
    stop_after_turn: bool = False
    failure: str | None = None
    next_id: int = 0
    pending: dict[int, str] = field(default_factory=dict)  # request id -> method
    steers: deque[str] = field(default_factory=deque)  # said before the turn had an id
    wants_more: bool = False  # the turn's last agent message ended with CONTINUE_MARK

    @property
    def finished(self) -> bool:
        return self.phase is Phase.CLOSED

    def opening(self) -> list[ToAgent]:
        return [self._request("initialize", p.InitializeParams(client_info=CLIENT))]

    def on_line(self, payload: bytes) -> list[ToAgent]:
        message = decode_envelope(payload)
        if message is None or self.finished:
            return []
        try:
            if message.method is not None and message.id is not None:
                return [self._answer(message)]
            if message.method is not None:
                return self._notification(message)
            return self._response(message)
        except msgspec.ValidationError as exc:
            if message.method is not None and message.id is None:
                return []  # a notification of another shape: stored as an event, not read
            self.failure = f"codex app-server sent what fleetd cannot read: {exc}"
            return self._close()

    def say(self, text: str) -> tuple[list[ToAgent], str | None]:
        """Steer the turn in progress with `text`; or why it cannot be."""
        if self.finished:
            return [], "the agent's conversation has ended"
        if self.phase is not Phase.IN_TURN or self.turn_id is None:
            self.steers.append(text)  # sent as soon as the turn has begun
            return [], None
        return [self._steer(text)], None

    def interrupt(self) -> tuple[list[ToAgent], str | None]:
        """End the turn in progress (the run then ends with what it has); or why not."""
        if self.finished:
            return [], "the agent's conversation has ended"
        self.stop_after_turn = True
        if self.phase is Phase.IN_TURN and self.turn_id is not None and self.thread_id:
            params = p.TurnInterruptParams(thread_id=self.thread_id, turn_id=self.turn_id)
            return [self._request("turn/interrupt", params)], None
        return [], None  # no turn id yet: the turn is interrupted as soon as it has one

    # --- what codex says ----------------------------------------------------------------------

    def _response(self, message: Envelope) -> list[ToAgent]:
        method = self.pending.pop(message.id, None) if isinstance(message.id, int) else None
        if method is None:
            return []
        if message.error is not None:
            return self._refused(method, message.error)
        match method:
            case "initialize":
                return [_notify("initialized"), self._open_thread()]
            case "thread/start" | "thread/resume":
                opened = msgspec.json.decode(message.result, type=p.ThreadStartResponse)
                self.thread_id = opened.thread.id
                return [self._start_turn(self.settings.prompt)]
            case "turn/start":
                started = msgspec.json.decode(message.result, type=p.TurnStartResponse)
                return self._in_turn(started.turn.id)
        return []

    def _refused(self, method: str, error: Any) -> list[ToAgent]:
        words = error.get("message") if isinstance(error, dict) else None
        if method in ("turn/steer", "turn/interrupt"):
            return []  # too late for this turn: the run goes on, the answer is an event
        self.failure = f"codex app-server refused {method}: {words or error}"
        return self._close()

    def _notification(self, message: Envelope) -> list[ToAgent]:
        if not message.params:
            return []
        if message.method == "turn/started":
            started = msgspec.json.decode(message.params, type=p.TurnStartedNotification)
            return self._in_turn(started.turn.id)
        if message.method == "item/completed":
            item = msgspec.json.decode(message.params, type=p.ItemCompletedNotification).item
            if item.type == "agentMessage" and item.text is not None:
                self.wants_more = item.text.rstrip().endswith(CONTINUE_MARK)
            return []
        if message.method == "turn/completed":
            done = msgspec.json.decode(message.params, type=p.TurnCompletedNotification)
            return self._turn_completed(done.turn)
        return []

    def _in_turn(self, turn_id: str) -> list[ToAgent]:
        if self.phase is not Phase.STARTING and self.turn_id == turn_id:
            return []
        self.turn_id = turn_id
        self.phase = Phase.IN_TURN
        out = [self._steer(text) for text in self.steers]
        self.steers.clear()
        if self.stop_after_turn and self.thread_id:
            params = p.TurnInterruptParams(thread_id=self.thread_id, turn_id=turn_id)
            out.append(self._request("turn/interrupt", params))
        return out

    def _turn_completed(self, turn: p.Turn) -> list[ToAgent]:
        self.turn_id = None
        if turn.status != "completed" or self.stop_after_turn:
            return self._close()
        if self.turns_started >= self.settings.max_turns or not self.wants_more:
            return self._close()
        return [self._start_turn(CONTINUE_PROMPT)]

    def _answer(self, request: Envelope) -> ToAgent:
        """A request codex sent (approvals, questions): answered now, by policy."""
        approve = self.policy.approvals == "approve"
        method = request.method
        result: Any
        match method:
            case "item/commandExecution/requestApproval":
                result = p.CommandExecutionRequestApprovalResponse(
                    decision="accept" if approve else "decline"
                )
            case "item/fileChange/requestApproval":
                result = p.FileChangeRequestApprovalResponse(
                    decision="accept" if approve else "decline"
                )
            case "execCommandApproval" | "applyPatchApproval":
                result = p.ExecCommandApprovalResponse(
                    decision="approved" if approve else {"denied": {"rejection": DENIED}}
                )
            case "item/tool/requestUserInput":
                asked = msgspec.json.decode(
                    message_params(request), type=p.ToolRequestUserInputParams
                )
                answer = p.ToolRequestUserInputAnswer(answers=[self.policy.user_input_answer])
                answers = {question.id: answer for question in asked.questions}
                result = p.ToolRequestUserInputResponse(answers=answers)
            case "mcpServer/elicitation/request":
                result = p.McpServerElicitationRequestResponse(action="decline")
            case _:
                error = {"code": -32601, "message": f"fleetd does not answer {method}"}
                return _line({"jsonrpc": "2.0", "id": request.id, "error": error}, method)
        return _line({"jsonrpc": "2.0", "id": request.id, "result": result}, method)

    # --- what fleetd says ---------------------------------------------------------------------

    def _open_thread(self) -> ToAgent:
        self.phase = Phase.OPENING
        s = self.settings
        if s.resume_thread:
            resume = p.ThreadResumeParams(
                thread_id=s.resume_thread,
                cwd=s.cwd,
                model=s.model,
                sandbox=s.sandbox,
                approval_policy=s.approval_policy,
            )
            return self._request("thread/resume", resume)
        start = p.ThreadStartParams(
            cwd=s.cwd, model=s.model, sandbox=s.sandbox, approval_policy=s.approval_policy
        )
        return self._request("thread/start", start)

    def _start_turn(self, text: str) -> ToAgent:
        assert self.thread_id is not None
        self.phase = Phase.STARTING
        self.turns_started += 1
        self.wants_more = False
        if self.settings.max_turns > 1 and self.turns_started == 1:
            text = f"{text}\n\n{MARK_INSTRUCTION}"
        params = p.TurnStartParams(
            thread_id=self.thread_id, input=[_text(text)], effort=self.settings.effort
        )
        return self._request("turn/start", params)

    def _steer(self, text: str) -> ToAgent:
        assert self.thread_id is not None and self.turn_id is not None
        params = p.TurnSteerParams(
            thread_id=self.thread_id, expected_turn_id=self.turn_id, input=[_text(text)]
        )
        return self._request("turn/steer", params)

    def _request(self, method: str, params: Any) -> ToAgent:
        self.next_id += 1
        self.pending[self.next_id] = method
        return _line({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})

    def _close(self) -> list[ToAgent]:
        self.phase = Phase.CLOSED
        return []


def _text(text: str) -> dict[str, Any]:
    return msgspec.to_builtins(p.TextUserInput(type="text", text=text))


def _notify(method: str) -> ToAgent:
    return _line({"jsonrpc": "2.0", "method": method})


def _line(message: dict[str, Any], answering: str | None = None) -> ToAgent:
    """The line to write, and the event that records it (`fleet.sent`)."""
    line = _encode(message)
    record: dict[str, Any] = {"type": "fleet.sent", "message": json.loads(line)}
    if answering is not None:
        record["answering"] = answering
    return ToAgent(line=line, event=_encode(record))
