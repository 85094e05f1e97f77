"""fleetd, the agent-fleet daemon: one OS process per role, each role a folder.

Every role has the same shape: `logic.py` is a socket-free state machine (messages, file
descriptor events and `now` in; outgoing messages out; its phases an Enum), unit-tested
without sockets or sleeps, and `process.py` owns the ZeroMQ sockets and the poll loop and
has the entry point `run()`.

    cli.py          `fleetd`: starts the supervisor (attached, or detached) with the roles'
                    entry points
    supervisor/     the main process: children (fork server, restarts, crash loops), the
                    control socket, requests forwarded to the broker and recorder, stop and
                    drain (shutdown.py), orphan reaping, systemd notify and socket activation
    broker/         the queue: tasks and executions in queue.db (store.py, schema.py,
                    rows.py; where a task goes when an attempt ends in policy.py), claims,
                    leases, dispatch to idle workers (logic.py), what workers report, a result
                    with its worker's next claim (worker_reports.py); scheduling: the claim's
                    gate of limits and holds (scheduling.py, reads.py), dependencies
                    (dependencies.py), fleet budgets and rate-limit holds (budgets.py)
    stores/         the queue's seam (protocol.py: QueueStoreAPI) and open_queue_store,
                    which opens queue.url's store: broker/store.py (SQLite) or postgres/
                    (several hosts: SKIP LOCKED claims, lease tokens, nodes, NOTIFY,
                    migrations, outages waited out); the event log's seam (events.py:
                    EventStore, open_event_store) and its PostgreSQL store
                    (postgres_events.py); the nodes' heartbeats (nodes.py)
    recorder/       the event log: every agent line in events.db (eventlog.py), batches
                    filled from the spools, the live feed, sealed streams
    worker/         one attempt at a time: the agent process (execution.py,
                    agent_process.py), its output turned into events (output.py), its
                    directory or worktree (attempt.py), the attempts closing beside the
                    next (closing.py), what it sends held to share a message (outbox.py)
    web/            the dashboard, the HTTP API and /metrics: uvicorn + Starlette on the
                    socket the supervisor bound, a client of the control socket and the
                    recorder's feed (control.py, streams.py), never of a database; its
                    access, query and resume decisions in logic.py
    tracker/        issues in, pull requests out (GitHub first): polls, plans (logic.py),
                    enqueues through the control socket, pushes and opens pull requests
    workspace/      git worktrees for repository tasks, hooks, worktree gc; blocking, run on
                    a helper thread
    agents/         adapters, one module per agent kind (codex, claude, command), found by
                    name through the `agent_fleet.agents` entry points; Codex's
                    and Claude Code's event schemas, their private CODEX_HOME and
                    CLAUDE_CONFIG_DIR, failure classes; appserver/: codex app-server's
                    JSON-RPC (generated types, the conversation, its summary)
    runtime/        what every process shares, each written once: sockets, ROUTER
                    requests, process facts (the one reader of /proc), file locks,
                    SQLite, background jobs, spool files, the agent registry, start-up

The roles never import each other; they meet in `shared.messages`. See docs/ARCHITECTURE.md.
"""
