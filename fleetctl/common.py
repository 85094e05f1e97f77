"""What every fleetctl command shares: options, the daemon connection, output and exit codes."""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import msgspec

from fleetctl.display import visible, visible_line
from shared import messages as m
from shared.client import ControlClient
from shared.config import load_config
from shared.errors import DaemonUnavailable, FleetError, RequestFailed
from shared.models import (
    MAX_SECONDS,
    EventRecord,
    ExecutionResult,
    TaskView,
    flag_names,
    rfc3339,
)

if TYPE_CHECKING:
    import typer

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3

MIN_REQUEST_TIMEOUT = 0.1
DEFAULT_REQUEST_TIMEOUT = 10.0
STATE_DIR_ENV = "FLEET_STATE_DIR"


def __getattr__(name: str) -> Any:
    # `JsonOption` is built on first use, by the command modules: `fleetctl status` runs
    # without importing typer (see fleetctl.app), which costs as much as zmq and msgspec.
    if name == "JsonOption":
        import typer

        return Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def request_timeout_ok(seconds: float) -> bool:
    """Whether --request-timeout is in range; written so that NaN fails it too."""
    return MIN_REQUEST_TIMEOUT <= seconds <= MAX_SECONDS


class Session:
    """The global options, set by the root callback (a plain class: `dataclasses` imports
    `inspect`, which would cost `fleetctl status` more than the rest of this module)."""

    def __init__(self, state_dir: Path | None, timeout: float) -> None:
        self.state_dir = state_dir
        self.timeout = timeout

    def control_socket(self) -> Path:
        flags = {"state_dir": str(self.state_dir) if self.state_dir else None}
        try:
            config = load_config(os.environ, None, flags)
        except FleetError as exc:
            fail(str(exc), EXIT_USAGE)
        path = config.paths().control_socket
        try:
            str(path).encode()  # ZeroMQ takes endpoints as UTF-8
        except UnicodeEncodeError:
            fail(f"the state directory {str(path.parent)!r} is not a UTF-8 path", EXIT_USAGE)
        return path

    @contextlib.contextmanager
    def client(self) -> Iterator[ControlClient]:
        with ControlClient(self.control_socket(), self.timeout) as client:
            yield client

    def ask(self, request: m.Message) -> m.Message:
        """One request; failures become a message on stderr and a meaningful exit code."""
        with self.client() as client, daemon_errors():
            return client.request(request)
        raise AssertionError("unreachable")


def session(ctx: typer.Context) -> Session:
    return ctx.ensure_object(Session)


@contextlib.contextmanager
def daemon_errors() -> Iterator[None]:
    try:
        yield
    except DaemonUnavailable as exc:
        fail(str(exc), EXIT_NOT_RUNNING)
    except RequestFailed as exc:
        if exc.code == "bad_request":
            fail(_with_flag(str(exc)), EXIT_USAGE)
        fail(str(exc), EXIT_FAILURE)
    except FleetError as exc:
        fail(str(exc), EXIT_FAILURE)


# A decoder's "- at `$.tasks[0].idle_timeout`": the flag that set that field.
_FIELD_AT = re.compile(r" - at `\$(?:\.tasks\[(\d+)\])?\.(\w+)[^`]*`$")
_POSITIONAL = {"task": "TASK", "prompt": "PROMPT", "argv": "ARGV"}


def _with_flag(message: str) -> str:
    """A validation error named by its flag (`--idle-timeout`), not its wire field."""
    found = _FIELD_AT.search(message)
    if found is None:
        return message
    index, name = found.groups()
    flag = _POSITIONAL.get(name) or "--" + name.replace("_", "-").replace("-hours", "")
    where = f" (task {int(index) + 1})" if index is not None and index != "0" else ""
    detail = message[: found.start()].removeprefix("invalid request: ")
    return f"invalid {flag}{where}: {detail}"


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    echo(f"fleetctl: {visible(message)}", err=True)
    # SystemExit rather than typer.Exit (which click turns into the same sys.exit): the lean
    # `status` path has no typer.
    raise SystemExit(code)


# --- text ----------------------------------------------------------------------------------

_ANSI_CODE = re.compile(r"\033\[[;?0-9]*[a-zA-Z]")  # click's pattern


def echo(text: str = "", err: bool = False) -> None:
    """One line to stdout (stderr), as typer.echo writes it, without importing typer: ANSI
    codes stripped unless the stream is a terminal, UTF-8 if the stream says ASCII, flushed."""
    stream = sys.stderr if err else sys.stdout
    line = text + "\n"
    try:
        terminal = stream.isatty()
    except Exception:  # a closed or odd stream: click treats it as no terminal
        terminal = False
    if not terminal and "\033" in line:
        line = _ANSI_CODE.sub("", line)
    binary = getattr(stream, "buffer", None)
    if _ascii(stream) and binary is not None:
        stream.flush()
        binary.write(line.encode("utf-8", "replace"))
        binary.flush()
        return
    stream.write(line)
    stream.flush()


def _ascii(stream: Any) -> bool:
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        return codecs.lookup(encoding).name == "ascii"
    except LookupError:
        return False


# --- JSON ----------------------------------------------------------------------------------

_json = msgspec.json.Encoder()


def print_json(value: Any) -> None:
    sys.stdout.write(_json.encode(value).decode() + "\n")


def result_json(result: ExecutionResult | None) -> dict[str, Any] | None:
    return msgspec.to_builtins(result) if result is not None else None


def task_json(task: TaskView, with_executions: bool) -> dict[str, Any]:
    """The documented JSON shape of a task (`show --json`, `list --json`)."""
    out: dict[str, Any] = {
        "id": task.id,
        "state": task.state,
        "attempts": task.attempts,
        "spec": msgspec.to_builtins(task.spec),
        "result": result_json(task.result),
        "enqueued_at": rfc3339(task.enqueued_at),
        "started_at": rfc3339(task.started_at),
        "finished_at": rfc3339(task.finished_at),
        "not_before": rfc3339(task.not_before),
        "priority": task.priority,
        "waiting": task.waiting,
    }
    if with_executions:
        out["executions"] = [
            {
                "id": e.id,
                "attempt": e.attempt,
                "worker": e.worker,
                "outcome": e.outcome,
                "claimed_at": rfc3339(e.claimed_at),
                "started_at": rfc3339(e.started_at),
                "finished_at": rfc3339(e.finished_at),
                "result": result_json(e.result),
            }
            for e in task.executions
        ]
    return out


_decode_any = msgspec.json.Decoder().decode


def event_json(event: EventRecord) -> dict[str, Any]:
    """The documented JSON shape of an event: the payload parsed when it is JSON, else text."""
    payload: Any
    try:
        payload = _decode_any(event.payload)
    except msgspec.DecodeError:
        payload = event.payload.decode("utf-8", errors="backslashreplace")
    return {
        "execution": event.execution,
        "seq": event.seq,
        "type": event.type,
        "ts": rfc3339(event.ts),
        "flags": flag_names(event.flags),
        "payload": payload,
    }


# --- tables --------------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]]
    cells += [["-" if v is None else visible_line(str(v)) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        line = "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True))
        echo(line.rstrip())


def short_time(us: int | None) -> str | None:
    stamp = rfc3339(us)
    return stamp[:19].replace("T", " ") if stamp else None


def one_line(text: str | None, width: int = 60) -> str | None:
    if text is None:
        return None
    flat = visible(" ".join(text.split()))
    return flat if len(flat) <= width else flat[: width - 1] + "…"
