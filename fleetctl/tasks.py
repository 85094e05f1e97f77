"""Task commands: enqueue, list, show, cancel, retry."""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from fleetctl import show as render
from fleetctl import tracker
from fleetctl.common import (
    EXIT_USAGE,
    JsonOption,
    Session,
    echo,
    fail,
    one_line,
    print_json,
    print_table,
    session,
    short_time,
    task_json,
)
from fleetctl.schedule import TIME_HELP, parse_time
from shared import messages as m
from shared.models import (
    BUILT_IN_AGENTS,
    TASK_STATES,
    AgentKind,
    ClaudePermissionMode,
    SandboxMode,
    TaskSpec,
    TaskView,
    spec_problem,
)

app = typer.Typer()

FILE_KEYS = frozenset(f.name for f in msgspec.structs.fields(TaskSpec))


@app.command()
def enqueue(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Argument(help="what the agent should do")] = None,
    argv: Annotated[
        list[str] | None,
        typer.Argument(help="after `--`: the command agent's argv (it reads the prompt on stdin)"),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            help="codex, claude, command, or an installed adapter's name "
            "(default: command if ARGV given, else codex)"
        ),
    ] = None,
    cwd: Annotated[
        Path | None, typer.Option(help="working directory of the agent (default: a fresh one)")
    ] = None,
    repo: Annotated[
        str | None,
        typer.Option(
            help="git repository (path or URL): the task runs in its own worktree on branch "
            "fleet/<task-id>, and its changes are committed there"
        ),
    ] = None,
    ref: Annotated[
        str | None, typer.Option(help="with --repo: where the branch starts (default: HEAD)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="model name (codex)")] = None,
    sandbox: Annotated[
        str | None,
        typer.Option(help="codex sandbox: read-only, workspace-write or danger-full-access"),
    ] = None,
    reasoning_effort: Annotated[
        str | None, typer.Option(help="codex reasoning effort (e.g. low, medium, high)")
    ] = None,
    codex_config: Annotated[
        list[str] | None,
        typer.Option("--codex-config", help="KEY=VALUE passed to codex as -c, repeatable"),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="wall-clock limit in seconds")
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option("--idle-timeout", help="end the agent after this many seconds without output"),
    ] = None,
    max_attempts: Annotated[int | None, typer.Option(help="attempts before failing")] = None,
    max_turns: Annotated[
        int | None,
        typer.Option(
            help="most turns: codex (app-server) continues while the agent says more "
            "remains; claude's --max-turns"
        ),
    ] = None,
    allowed_tool: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-tool", help="claude: a tool the run may use (repeatable; else claude's)"
        ),
    ] = None,
    permission_mode: Annotated[
        str | None,
        typer.Option(help="claude: default, acceptEdits, plan or bypassPermissions"),
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="idempotency key: the same key gives the same task")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="K=V, repeatable")] = None,
    priority: Annotated[
        int, typer.Option(help="higher runs first (default 0; FIFO within one priority)")
    ] = 0,
    not_before: Annotated[
        str | None, typer.Option("--not-before", help="not started before: " + TIME_HELP)
    ] = None,
    after: Annotated[
        list[int] | None,
        typer.Option(
            "--after", help="run only once this task succeeded (repeatable); cancelled if not"
        ),
    ] = None,
    after_any: Annotated[
        bool, typer.Option("--after-any", help="with --after: run once they ended, however")
    ] = False,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="end the run past this many tokens")
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", help="end the run past this cost, in USD")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help="JSON Lines of tasks (keys named as the flags); - for stdin"
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Add a task (or many, with --file) to the queue; prints the new task ids."""
    if file is not None:
        if prompt is not None or argv:
            fail("give either PROMPT or --file, not both", EXIT_USAGE)
        specs = _read_task_file(file)
    else:
        if prompt is None:
            fail("missing PROMPT (or --file tasks.jsonl)", EXIT_USAGE)
        labels = dict(_label(item) for item in label or [])
        spec = TaskSpec(
            prompt=prompt,
            agent=_agent(agent, argv),
            argv=list(argv or []),
            cwd=_directory(cwd, "--cwd") if cwd else None,
            repo=_repo(repo),
            ref=ref,
            model=model,
            timeout=timeout,
            idle_timeout=idle_timeout,
            max_attempts=max_attempts,
            max_turns=max_turns,
            allowed_tools=list(allowed_tool or []),
            permission_mode=_permission_mode(permission_mode),
            key=key,
            labels=labels,
            sandbox=_sandbox(sandbox),
            reasoning_effort=reasoning_effort,
            codex_config=list(codex_config or []),
            priority=priority,
            not_before=parse_time(not_before, "--not-before") if not_before else None,
            after=list(after or []),
            after_any=after_any,
            max_tokens=max_tokens,
            max_cost=max_cost,
        )
        specs = [spec]
    for index, spec in enumerate(specs, start=1):
        problem = spec_problem(spec)
        if problem is not None:
            fail(f"line {index}: {problem}" if file else problem, EXIT_USAGE)
    reply = session(ctx).ask(m.Enqueue(tasks=specs))
    assert isinstance(reply, m.Enqueued)
    if json_out:
        print_json([{"id": i, "created": c} for i, c in zip(reply.ids, reply.created, strict=True)])
    else:
        for task_id in reply.ids:
            typer.echo(task_id)


def _repo(repo: str | None) -> str | None:
    """A local repository as an absolute path (the daemon may run elsewhere); URLs as given."""
    if repo is None or "://" in repo or (":" in repo and not Path(repo).exists()):
        return repo
    return _directory(Path(repo).expanduser(), "--repo")


def _directory(path: Path, flag: str) -> str:
    """An existing directory as an absolute path; anything else is a usage error, now rather
    than at the task's first attempt."""
    try:
        resolved = path.resolve()
        if resolved.is_dir():
            return str(resolved)
        what = "is not a directory" if resolved.exists() else "does not exist"
    except (OSError, ValueError) as exc:  # a loop of links, a NUL byte
        what = f"cannot be used ({exc})"
    fail(f"{flag} {path} {what}", EXIT_USAGE)
    raise AssertionError("unreachable")


SANDBOX_MODES: tuple[str, ...] = typing.get_args(SandboxMode)


def _agent(agent: str | None, argv: list[str] | None) -> Any:
    if agent is None:
        return "command" if argv else "codex"
    try:
        # Which adapters exist is the daemon's to say (its entry points); the name's form is ours.
        return msgspec.convert(agent, AgentKind)
    except msgspec.ValidationError:
        fail(
            f"bad agent name {agent!r}: {_either(BUILT_IN_AGENTS)}, or an adapter's name "
            "(lower-case letters, digits, - and _)",
            EXIT_USAGE,
        )


def _sandbox(value: str | None) -> Any:
    if value is not None and value not in SANDBOX_MODES:
        fail(f"unknown sandbox {value!r}: {_either(SANDBOX_MODES)}", EXIT_USAGE)
    return value


def _permission_mode(value: str | None) -> Any:
    modes: tuple[str, ...] = typing.get_args(ClaudePermissionMode)
    if value is not None and value not in modes:
        fail(f"unknown permission mode {value!r}: {_either(modes)}", EXIT_USAGE)
    return value


def _either(names: tuple[str, ...]) -> str:
    """`a, b or c`."""
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _label(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name:
        fail(f"--label takes K=V, got {item!r}", EXIT_USAGE)
    return name, value


def _read_task_file(path: Path) -> list[TaskSpec]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)
    except UnicodeDecodeError as exc:
        fail(f"{path} is not UTF-8 text (byte {exc.start}): tasks are JSON Lines", EXIT_USAGE)
    specs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        specs.append(_task_line(line, number))
    if not specs:
        fail(f"{path} holds no tasks", EXIT_USAGE)
    return specs


def _task_line(line: str, number: int) -> TaskSpec:
    try:
        raw = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        fail(f"line {number}: not JSON: {exc}", EXIT_USAGE)
    if not isinstance(raw, dict):
        fail(f"line {number}: expected a JSON object", EXIT_USAGE)
    unknown = sorted(set(raw) - FILE_KEYS)
    if unknown:
        fail(f"line {number}: unknown key(s) {', '.join(unknown)}", EXIT_USAGE)
    if "agent" not in raw:
        raw["agent"] = "command" if raw.get("argv") else "codex"
    if isinstance(raw.get("cwd"), str) and raw["cwd"]:
        raw["cwd"] = _directory(Path(raw["cwd"]), f"line {number}: cwd")
    if isinstance(raw.get("repo"), str):
        raw["repo"] = _repo(raw["repo"])
    if isinstance(raw.get("not_before"), str):
        raw["not_before"] = parse_time(raw["not_before"], f"line {number}: not_before")
    try:
        return msgspec.convert(raw, TaskSpec)
    except msgspec.ValidationError as exc:
        fail(f"line {number}: {m.plain_words(str(exc))}", EXIT_USAGE)
    raise AssertionError("unreachable")


@app.command("list")
def list_tasks(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(help="only tasks in this state: " + ", ".join(TASK_STATES))
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            min=1, help=f"at most this many, newest first (one listing holds {m.LIST_LIMIT_MAX})"
        ),
    ] = 50,
    agent: Annotated[str | None, typer.Option(help="only tasks of this agent")] = None,
    repo: Annotated[str | None, typer.Option(help="only tasks on this repository")] = None,
    label: Annotated[str | None, typer.Option(help="only tasks with this label K=V")] = None,
    search: Annotated[
        str | None, typer.Option(help="only tasks whose prompt holds this text (any case)")
    ] = None,
    before: Annotated[int | None, typer.Option(min=1, help="only tasks older than this id")] = None,
    json_out: JsonOption = False,
) -> None:
    """List tasks, newest first."""
    if state is not None and state not in TASK_STATES:
        fail(f"unknown state {state!r}: use one of {', '.join(TASK_STATES)}", EXIT_USAGE)
    if limit > m.LIST_LIMIT_MAX:
        echo(f"fleetctl: --limit {limit}: showing at most {m.LIST_LIMIT_MAX}, the newest", err=True)
        limit = m.LIST_LIMIT_MAX
    if label is not None and ("=" not in label or label.startswith("=")):
        fail(f"--label takes KEY=VALUE, not {label!r}", EXIT_USAGE)
    ask = m.ListTasks(
        state=state,  # type: ignore[arg-type]
        limit=limit,
        before=before,
        agent=agent,  # type: ignore[arg-type]
        repo=_repo(repo),
        label=label,
        search=search,
    )
    found = _listing(session(ctx), ask)
    if json_out:
        print_json([task_json(t, with_executions=False) for t in found])
        return
    rows = [
        (
            t.id,
            t.state,
            t.spec.agent,
            t.attempts,
            short_time(t.enqueued_at),
            one_line(t.spec.prompt),
        )
        for t in found
    ]
    print_table(("ID", "STATE", "AGENT", "ATTEMPTS", "ENQUEUED (UTC)", "PROMPT"), rows)


def _listing(ctl: Session, ask: m.ListTasks) -> list[TaskView]:
    """Up to `ask.limit` tasks: a filtered listing comes in bounded windows, asked in turn."""
    found: list[TaskView] = []
    wanted = ask.limit
    while True:
        reply = ctl.ask(ask)
        assert isinstance(reply, m.TaskList)
        found += reply.tasks
        if reply.next_before is None or len(found) >= wanted:
            return found[:wanted]
        ask = msgspec.structs.replace(ask, before=reply.next_before, limit=wanted - len(found))


@app.command()
def show(
    ctx: typer.Context,
    task: Annotated[int, typer.Argument(help="task id")],
    json_out: JsonOption = False,
) -> None:
    """Show a task: its spec, state, attempts, executions, final message and token usage."""
    reply = session(ctx).ask(m.ShowTask(task=task))
    assert isinstance(reply, m.TaskDetail)
    view = reply.task
    link = tracker.link_of(session(ctx).state_dir, task) if view.spec.key else None
    if json_out:
        shown = task_json(view, with_executions=True)
        print_json({**shown, "tracker": link} if link else shown)
        return
    for line in render.field_lines(render.task_fields(view) + tracker.link_fields(link)):
        typer.echo(line)
    if view.executions:
        typer.echo("")
        rows = [
            (
                e.id,
                e.attempt,
                e.worker,
                e.outcome,
                short_time(e.started_at),
                render.exit_words(e.result) if e.result else None,
                one_line(e.result.failure_class or e.result.error or e.result.reason, 30)
                if e.result
                else None,
            )
            for e in view.executions
        ]
        print_table(("EXECUTION", "RUN", "WORKER", "OUTCOME", "STARTED", "EXIT", "NOTE"), rows)
        for line in render.execution_lines(view):
            typer.echo(line)


@app.command()
def cancel(
    ctx: typer.Context,
    task: Annotated[int, typer.Argument(help="task id")],
    json_out: JsonOption = False,
) -> None:
    """Cancel a task: a queued one never starts; a running one's agent is ended."""
    reply = session(ctx).ask(m.CancelTask(task=task))
    assert isinstance(reply, m.Cancelled)
    if json_out:
        print_json({"id": reply.task, "state": reply.state, "pending": reply.pending})
    elif reply.pending:
        typer.echo(f"task {reply.task}: cancelling (its agent is being ended)")
    elif reply.state == "cancelled":
        typer.echo(f"task {reply.task}: cancelled")
    else:
        fail(f"task {reply.task} is already {reply.state}; nothing to cancel")


@app.command()
def retry(
    ctx: typer.Context,
    task: Annotated[int, typer.Argument(help="task id")],
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="continue the Codex thread of its last attempt (codex exec resume), "
            "in the same worktree",
        ),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Run a finished task again: one more attempt, from scratch or (--resume) where it stopped."""
    reply = session(ctx).ask(m.RetryTask(task=task, resume=resume))
    assert isinstance(reply, m.Retried)
    if json_out:
        print_json({"id": reply.task, "state": reply.state, "resume": reply.resume})
    elif reply.resume:
        typer.echo(f"task {reply.task}: queued again; it resumes its last Codex thread")
    else:
        typer.echo(f"task {reply.task}: queued again")
