"""The queue's tables (`queue.db`), as forward migrations counted by `PRAGMA user_version`."""

from __future__ import annotations

MIGRATIONS = [
    """
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        spec TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        max_attempts INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        executions INTEGER NOT NULL DEFAULT 0,
        not_before INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        enqueued_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        result TEXT
    );
    CREATE INDEX tasks_claim ON tasks (state, priority DESC, id);
    CREATE TABLE executions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id INTEGER NOT NULL REFERENCES tasks (id),
        attempt INTEGER NOT NULL,
        worker TEXT,
        outcome TEXT NOT NULL,
        claimed_at INTEGER NOT NULL,
        lease_expires_at INTEGER,
        started_at INTEGER,
        agent_pid INTEGER,
        finished_at INTEGER,
        result TEXT
    );
    CREATE INDEX executions_task ON executions (task_id, id);
    CREATE INDEX executions_outcome ON executions (outcome, lease_expires_at);
    """,
    # v2: `fleetctl retry --resume` names the execution whose Codex thread the next runs continue.
    """
    ALTER TABLE tasks ADD COLUMN resume_from INTEGER;
    """,
    # v3 (issue 11): dependencies, and each execution's spend for budgets and `fleetctl usage`.
    # A task waiting on others stays `queued` with `not_before` at the end of time, so the
    # claim stays one query on `tasks_claim`; `ready_at` is its own not_before, restored once
    # its last dependency settles. `dependents` spares a task no one waits for the lookup when
    # it ends (most tasks: the closing transaction stays as it was). `agent` and `repo` (as the
    # selectors match it) let a claim leave out what a full limit or a hold keeps back.
    """
    CREATE TABLE task_deps (
        after_id INTEGER NOT NULL,
        task_id INTEGER NOT NULL,
        any_outcome INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (after_id, task_id)
    ) WITHOUT ROWID;
    ALTER TABLE tasks ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN ready_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN dependents INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN agent TEXT NOT NULL DEFAULT 'codex';
    ALTER TABLE tasks ADD COLUMN repo TEXT;
    UPDATE tasks SET agent = COALESCE(json_extract(spec, '$.agent'), 'codex'),
        repo = rtrim(json_extract(spec, '$.repo'), '/') WHERE state IN ('queued', 'running');
    ALTER TABLE executions ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
    CREATE INDEX executions_finished ON executions (finished_at);
    """,
    # v4: counts per state kept by triggers, so `status` reads a handful of rows, not every task
    # (a GROUP BY over 100,000 queued tasks cost 12 ms of broker CPU per status). Triggers, not
    # the store's methods, so that no way of changing a task's state can miss its count.
    """
    CREATE TABLE task_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO task_counts SELECT state, COUNT(*) FROM tasks GROUP BY state;
    CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
        INSERT INTO task_counts VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
        UPDATE task_counts SET n = n - 1 WHERE state = OLD.state;
    END;
    CREATE TRIGGER task_counts_update AFTER UPDATE OF state ON tasks
        WHEN OLD.state IS NOT NEW.state BEGIN
        UPDATE task_counts SET n = n - 1 WHERE state = OLD.state;
        INSERT INTO task_counts VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
    END;
    """,
    # v5 (issue 12): the node (fleetd) that claimed each execution. On SQLite one node owns
    # the queue, so it is a record only; the lease token is the execution id itself.
    """
    ALTER TABLE executions ADD COLUMN node TEXT;
    """,
]
