"""Selectors of tasks, as `[limits]` and `[budget.per]` name them: `agent:claude`,
`repo:<path or URL>`, `label:team=web`, and `*` for every task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

SelectorKind = Literal["agent", "repo", "label", "all"]
SELECTOR_HELP = "selectors are agent:KIND, repo:PATH-OR-URL, label:KEY=VALUE or *"


class Scoped(Protocol):
    """What a selector looks at: a `TaskSpec`, or the broker's lighter view of one."""

    @property
    def agent(self) -> str: ...
    @property
    def repo(self) -> str | None: ...
    @property
    def labels(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class Selector:
    """Which tasks a limit or a budget counts; `text` is how the config spells it."""

    kind: SelectorKind
    value: str
    text: str

    def matches(self, spec: Scoped) -> bool:
        match self.kind:
            case "all":
                return True
            case "agent":
                return spec.agent == self.value
            case "repo":
                return spec.repo is not None and spec.repo.rstrip("/") == self.value
            case _:
                key, _, value = self.value.partition("=")
                return spec.labels.get(key) == value


def parse_selector(text: str) -> Selector:
    """A selector from its text; ValueError (naming it) if it is not one."""
    if text.strip() == "*":
        return Selector("all", "", text)
    kind, sep, value = text.partition(":")
    if not sep or not value or kind not in ("agent", "repo", "label"):
        raise ValueError(f"{text!r} is not a selector: {SELECTOR_HELP}")
    if kind == "label" and ("=" not in value or value.startswith("=")):
        raise ValueError(f"{text!r}: a label selector is label:KEY=VALUE")
    if kind == "repo":
        value = value.rstrip("/")
    return Selector(kind, value, text)  # type: ignore[arg-type]
