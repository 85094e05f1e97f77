"""The recorder process's edge: a request whose handling fails is answered, never fatal."""

from __future__ import annotations

from fleetd.recorder import process
from fleetd.runtime.routing import ToPeer
from shared import messages as m


class FailingRecorder:
    """A recorder whose every request raises, as a page query past SQLite's integers did."""

    def handle(self, *args: object) -> list[ToPeer]:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")


def test_a_request_that_raises_gets_an_internal_error_and_the_recorder_lives() -> None:
    frames = [b"peer", b"ref", m.RECORDER_REQUESTS.encode(m.GetEvents(task=1))]
    out = process._serve(FailingRecorder(), frames)  # type: ignore[arg-type]
    assert out == [
        ToPeer(
            b"peer",
            b"ref",
            m.ErrorReply(code="internal", message="the recorder failed; see the fleetd log"),
        )
    ]
