"""The PostgreSQL queue's tables, as versioned forward migrations (`schema_version`).

Each migration runs in its own transaction; the whole run holds a session advisory lock, so
that two nodes starting together (or `fleetd migrate` beside a starting broker) apply each
once. The columns mirror queue.db's (fleetd/broker/schema.py), times in µs as bigint, so the
same rows read back as the same views; what differs is PostgreSQL's own: a partial index for
the claim, `lease_token` from a sequence (the fencing token), `node` on every execution.
"""

from __future__ import annotations

import psycopg

from shared.errors import FleetError

MIGRATION_LOCK = 0x666C656574  # pg_advisory_lock key: "fleet"

MIGRATIONS = [
    # v1 (issue 12): queue.db v1 to v5 in one.
    """
    CREATE TABLE tasks (
        id bigserial PRIMARY KEY,
        state text NOT NULL,
        priority integer NOT NULL DEFAULT 0,
        spec text NOT NULL,
        idempotency_key text UNIQUE,
        max_attempts integer NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        executions integer NOT NULL DEFAULT 0,
        not_before bigint NOT NULL DEFAULT 0,
        cancel_requested integer NOT NULL DEFAULT 0,
        enqueued_at bigint NOT NULL,
        started_at bigint,
        finished_at bigint,
        result text,
        resume_from bigint,
        waiting integer NOT NULL DEFAULT 0,
        ready_at bigint NOT NULL DEFAULT 0,
        dependents integer NOT NULL DEFAULT 0,
        agent text NOT NULL DEFAULT 'codex',
        repo text
    );
    CREATE INDEX tasks_claim ON tasks (priority DESC, id) WHERE state = 'queued';
    CREATE INDEX tasks_state ON tasks (state);
    CREATE TABLE executions (
        id bigserial PRIMARY KEY,
        task_id bigint NOT NULL REFERENCES tasks (id),
        attempt integer NOT NULL,
        worker text,
        outcome text NOT NULL,
        claimed_at bigint NOT NULL,
        lease_expires_at bigint,
        started_at bigint,
        agent_pid integer,
        finished_at bigint,
        result text,
        tokens bigint NOT NULL DEFAULT 0,
        cost_usd double precision NOT NULL DEFAULT 0,
        node text NOT NULL,
        lease_token bigint NOT NULL
    );
    CREATE INDEX executions_task ON executions (task_id, id);
    CREATE INDEX executions_running ON executions (node, worker) WHERE outcome = 'running';
    CREATE INDEX executions_lease ON executions (lease_expires_at) WHERE outcome = 'running';
    CREATE INDEX executions_finished ON executions (finished_at);
    CREATE TABLE task_deps (
        after_id bigint NOT NULL,
        task_id bigint NOT NULL,
        any_outcome integer NOT NULL DEFAULT 0,
        PRIMARY KEY (after_id, task_id)
    );
    CREATE SEQUENCE lease_tokens;
    """,
    # v2 (issue 12): the nodes' heartbeats (fleetd/stores/nodes.py) and the event log
    # (fleetd/stores/postgres_events.py; events.db's `streams` is `event_streams` here).
    """
    CREATE TABLE nodes (
        name text PRIMARY KEY,
        seen_at bigint NOT NULL,
        worker_count integer NOT NULL,
        workers bytea NOT NULL
    );
    CREATE TABLE event_streams (
        execution_id bigint PRIMARY KEY,
        task_id bigint NOT NULL,
        last_seq bigint NOT NULL DEFAULT 0,
        sealed_at bigint
    );
    CREATE INDEX event_streams_task ON event_streams (task_id, execution_id);
    CREATE TABLE events (
        execution_id bigint NOT NULL,
        seq bigint NOT NULL,
        ts bigint NOT NULL,
        type text NOT NULL,
        flags integer NOT NULL,
        payload bytea NOT NULL,
        PRIMARY KEY (execution_id, seq)
    );
    """,
]


class SchemaTooNew(FleetError):
    """The database's schema is newer than this fleetd."""


def current_version(conn: psycopg.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return (row[0] if row else None) or 0


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply the migrations the database lacks, each in its own transaction, under the
    migration lock; the versions applied (none: up to date)."""
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        with conn.transaction():
            version = current_version(conn)
        if version > len(MIGRATIONS):
            raise SchemaTooNew(
                f"the PostgreSQL queue's schema is version {version}, newer than this fleetd "
                f"knows ({len(MIGRATIONS)}); upgrade agent-fleet on this host"
            )
        applied = []
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with conn.transaction():
                conn.execute(script)  # type: ignore[arg-type]
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
            applied.append(number)
        return applied
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
