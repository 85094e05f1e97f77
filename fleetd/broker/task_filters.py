"""The WHERE clauses of `QueueStore.list_tasks`' filters, read from the task spec (JSON).

They narrow a keyset page (`id < ?  ORDER BY id DESC LIMIT n`): SQLite walks the ids down
from `before` and stops at the n-th match, so a common filter costs what a page does and a
rare one at most one pass over the tasks below the cursor.
"""

from __future__ import annotations


def narrowing(narrow: dict[str, str | None]) -> list[tuple[str, list[object]]]:
    """The WHERE clauses of list_tasks' filters over the spec (JSON), each with its values."""
    out: list[tuple[str, list[object]]] = []
    if narrow.get("agent"):
        out.append(("coalesce(json_extract(spec, '$.agent'), 'codex') = ?", [narrow["agent"]]))
    if narrow.get("repo"):
        out.append(("json_extract(spec, '$.repo') = ?", [narrow["repo"]]))
    if narrow.get("label"):
        key, _, value = str(narrow["label"]).partition("=")
        # json_each rather than a JSON path: any key, quotes and dots included, matches.
        clause = "EXISTS (SELECT 1 FROM json_each(spec, '$.labels') WHERE key = ? AND value = ?)"
        out.append((clause, [key, value]))
    if narrow.get("search"):
        out.append(
            ("instr(lower(json_extract(spec, '$.prompt')), lower(?)) > 0", [narrow["search"]])
        )
    return out
