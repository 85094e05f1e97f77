"""The API's own OpenAPI document, fuzzed with schemathesis against a real fleetd: a bounded
number of generated requests per operation, none answered with a 5xx."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.web import WebFleet, web_fleet

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

pytestmark = pytest.mark.timeout(600)

CASES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def web() -> Iterator[WebFleet]:
    # Fuzzed specs may name any agent and argv: the agents find no program to run (an empty
    # PATH, no agent binaries), so a generated task fails at once and does nothing.
    env = {**os.environ, "PATH": "/nonexistent", "FLEET_CODEX_BIN": "/nonexistent/codex"}
    env["FLEET_CLAUDE_BIN"] = "/nonexistent/claude"
    env["OPENAI_API_KEY"] = "sk-fuzz-not-a-real-key"  # else codex tasks are refused: 503
    with web_fleet(env=env) as started:
        yield started


def test_no_generated_request_gets_a_server_error(web: WebFleet) -> None:
    document = web.api.get("/api/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    headers = {"authorization": f"Bearer {web.token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    failures = []
    for operation in operations:

        @settings(
            max_examples=CASES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def check(case) -> None:
            response = case.call(base_url=web.url, headers=headers, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.text[:300]}")

        check()
    assert failures == [], "\n".join(failures)
