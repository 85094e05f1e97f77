"""Codex's JSON Lines event shape (`codex exec --json`), as far as fleetd reads it.

Only the fields the run summary and the failure classes read are declared; msgspec skips the
rest unparsed. The generic command adapter's agents may print the same shape.
"""

from __future__ import annotations

import msgspec


class LineItem(msgspec.Struct):
    """The parts of a Codex `item` the summary reads; other fields are skipped unparsed."""

    type: str = ""
    text: str | None = None
    exit_code: int | None = None
    status: str | None = None


class LineUsage(msgspec.Struct):
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0


class LineError(msgspec.Struct):
    message: str = ""


class AgentLine(msgspec.Struct):
    """A JSON Lines event, decoded only as far as the summary needs (Codex's event shape)."""

    type: str = ""
    thread_id: str | None = None
    item: LineItem | None = None
    usage: LineUsage | None = None
    error: LineError | None = None
    message: str | None = None
    # JSON-RPC (codex app-server): a notification or request names its method; a response
    # has only an id.
    method: str | None = None
    id: int | str | None = None

    def kind(self) -> str:
        """The event type this line is stored under."""
        if self.type:
            return self.type
        if self.method:
            return self.method
        return "rpc.response" if self.id is not None else "json"
