"""WORKFLOW.md: front matter for options, a template with the issue's fields."""

from __future__ import annotations

import pytest

from fleetd.tracker.base import Comment, Issue
from fleetd.tracker.prompt import BUILT_IN, WorkflowError, parse_workflow, render

ISSUE = Issue(
    repo="o/r", number=7, title="Crash", body="It crashes.", labels=("agent-fleet", "bug"), url="U"
)


def test_front_matter_sets_options_and_the_body_is_the_template() -> None:
    text = (
        "---\nmodel: gpt-x\ntimeout: 600\n# a comment\nmax_attempts: 2\n---\nFix {{ issue.title }}"
    )
    workflow = parse_workflow(text)
    assert workflow.options == {"model": "gpt-x", "timeout": 600.0, "max_attempts": 2}
    assert render(workflow, ISSUE, []) == "Fix Crash"


def test_the_built_in_template_holds_the_issue_its_labels_and_comments() -> None:
    workflow = parse_workflow(None)
    assert workflow.template == BUILT_IN
    prompt = render(workflow, ISSUE, [Comment(id=1, body="still broken", author="ann")])
    for part in ("#7 of o/r: Crash", "It crashes.", "agent-fleet, bug", "ann: still broken"):
        assert part in prompt


def test_an_unknown_placeholder_is_left_as_written() -> None:
    assert render(parse_workflow("{{ issue.nope }} {{ issue.number }}"), ISSUE, []) == (
        "{{ issue.nope }} 7"
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("---\nmodel: x\n", "never closes"),
        ("---\ncolour: red\n---\nbody", "line 2"),
        ("---\ntimeout: soon\n---\nbody", "takes a number"),
    ],
)
def test_bad_front_matter_is_named(text: str, words: str) -> None:
    with pytest.raises(WorkflowError, match=words):
        parse_workflow(text)
