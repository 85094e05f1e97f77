"""An issue's prompt: the repository's WORKFLOW.md (Symphony-style) or the built-in template.

WORKFLOW.md may open with front matter between `---` lines, flat `key: value` pairs that set
the task's options (agent, model, timeout, idle_timeout, max_attempts, sandbox,
reasoning_effort); its body is the prompt, with `{{ issue.title }}`, `{{ issue.body }}`,
`{{ issue.number }}`, `{{ issue.url }}`, `{{ issue.labels }}`, `{{ issue.comments }}` and
`{{ repository }}` filled in. A placeholder it does not know is left as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fleetd.tracker.base import Comment, Issue

BUILT_IN = """\
Resolve GitHub issue #{{ issue.number }} of {{ repository }}: {{ issue.title }}

{{ issue.body }}

Labels: {{ issue.labels }}

Comments so far:
{{ issue.comments }}

Make the change in this repository's working tree; it is committed and proposed as a pull
request for you.
"""

OPTIONS = {
    "agent": str,
    "model": str,
    "sandbox": str,
    "reasoning_effort": str,
    "timeout": float,
    "idle_timeout": float,
    "max_attempts": int,
}
MAX_COMMENTS = 50
MAX_PROMPT_CHARS = 200_000
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_.]+)\s*\}\}")


class WorkflowError(ValueError):
    """WORKFLOW.md's front matter cannot be read; the message names the line."""


@dataclass(frozen=True)
class Workflow:
    template: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_workflow(text: str | None) -> Workflow:
    """WORKFLOW.md as template and options; the built-in template when there is none."""
    if text is None or not text.strip():
        return Workflow(BUILT_IN)
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return Workflow(text)
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise WorkflowError("WORKFLOW.md opens front matter with --- but never closes it") from None
    options = dict(
        _option(number, line) for number, line in enumerate(lines[1:end], 2) if _kept(line)
    )
    return Workflow("\n".join(lines[end + 1 :]).lstrip("\n"), options)


def _kept(line: str) -> bool:
    return bool(line.strip()) and not line.lstrip().startswith("#")


def _option(number: int, line: str) -> tuple[str, Any]:
    name, colon, value = line.partition(":")
    name, value = name.strip(), value.strip().strip("\"'")
    kind = OPTIONS.get(name)
    if not colon or kind is None:
        known = ", ".join(OPTIONS)
        raise WorkflowError(
            f"WORKFLOW.md line {number}: expected `key: value` with key one of {known}"
        )
    try:
        return name, kind(value)
    except ValueError:
        raise WorkflowError(
            f"WORKFLOW.md line {number}: {name} takes a number, not {value!r}"
        ) from None


def render(workflow: Workflow, issue: Issue, comments: list[Comment]) -> str:
    """The prompt of `issue` from the template."""
    shown = comments[-MAX_COMMENTS:]
    values = {
        "issue.title": issue.title,
        "issue.body": issue.body or "(no description)",
        "issue.number": str(issue.number),
        "issue.url": issue.url,
        "issue.labels": ", ".join(issue.labels) or "(none)",
        "issue.comments": "\n\n".join(f"{c.author or 'someone'}: {c.body}" for c in shown)
        or "(none)",
        "repository": issue.repo,
    }
    prompt = _PLACEHOLDER.sub(lambda hit: values.get(hit.group(1), hit.group(0)), workflow.template)
    return prompt.replace("\0", "")[:MAX_PROMPT_CHARS]
