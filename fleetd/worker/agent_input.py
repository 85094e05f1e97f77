"""What the worker writes to an agent it speaks to (codex app-server): a non-blocking pipe
with its backlog, so a slow reader never stalls the worker's loop."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from fleetd.agents.base import Conversation, ToAgent

RETRY_SECONDS = 0.05  # when the pipe is full: the loop comes back this soon


@dataclass
class AgentInput:
    """The write end of the agent's stdin and the conversation that fills it."""

    fd: int
    conversation: Conversation
    backlog: bytearray = field(default_factory=bytearray)
    retry_at: float | None = None

    def send(self, items: list[ToAgent], now: float) -> list[tuple[bytes, int]]:
        """Queue `items` and write what the pipe takes; their event lines, to record."""
        for item in items:
            self.backlog += item.line + b"\n"
        self.flush(now)
        return [(item.event, 0) for item in items]

    def flush(self, now: float) -> None:
        """Write what the pipe takes; close it once the conversation is over and all is out."""
        while self.backlog and self.fd >= 0:
            try:
                written = os.write(self.fd, self.backlog)
            except BlockingIOError:
                self.retry_at = now + RETRY_SECONDS
                return
            except OSError:  # the agent closed its stdin (or died): nobody reads any more
                self.backlog.clear()
                break
            del self.backlog[:written]
        self.retry_at = None
        if self.conversation.finished and not self.backlog:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
