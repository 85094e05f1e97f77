"""GuardedSummary: a plug-in summary's exception is contained and said, once."""

from __future__ import annotations

from fleetd.agents.base import AgentSummary
from fleetd.agents.guard import GuardedSummary
from shared.models import ExecutionResult, TokenUsage


class Flaky(AgentSummary):
    def __init__(self) -> None:
        super().__init__()
        self.fed = 0

    def feed(self, payload: bytes, parsed: object) -> None:
        self.fed += 1
        self.commands += 1
        if payload == b"bad":
            raise KeyError("token sk-proj-GuardTest0123456789abcdef")

    def token_usage(self) -> TokenUsage:
        return TokenUsage(output_tokens=self.fed)


def _masked(data: bytes) -> bytes:
    return data.replace(b"sk-proj-GuardTest0123456789abcdef", b"[REDACTED]")


def test_after_the_first_exception_the_summary_is_read_no_more_and_the_run_fails() -> None:
    inner = Flaky()
    guarded = GuardedSummary(inner, "flaky", _masked)
    guarded.feed(b"good", None)
    assert guarded.failure() is None and guarded.verdict(0, None) is None
    assert guarded.token_usage().output_tokens == 1 and guarded.commands == 1
    guarded.feed(b"bad", None)
    guarded.feed(b"good", None)
    assert inner.fed == 2  # not fed after it broke
    reason = guarded.failure()
    assert reason == (
        "the 'flaky' agent adapter's summary failed reading an output line: "
        "KeyError: 'token [REDACTED]'"
    )
    assert guarded.verdict(0, None) == ("permanent", reason)
    # Neutral answers from then on; the fields it had are still read through.
    assert guarded.token_usage() == TokenUsage() and guarded.commands == 2
    result = ExecutionResult()
    assert guarded.into(result) is result
