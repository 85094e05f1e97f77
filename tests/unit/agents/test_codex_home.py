"""Private Codex homes: seeded from the host, harvested for the session, removed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fleetd.agents.codex_home import PrivateHomes, find_credential, host_codex_home
from fleetd.runtime.redaction import Redactor

SECRET = "sk-test-codexhome-0123456789abcdef"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    home = tmp_path / "host-codex"
    home.mkdir()
    (home / "config.toml").write_text('model = "gpt-4.1"\n')
    (home / "auth.json").write_text('{"tokens": {"refresh_token": "r0"}}')
    (home / "AGENTS.md").write_text("Always run the tests.\n")
    (home / "sessions").mkdir()  # the host's own history stays behind
    return home


@pytest.fixture
def homes(tmp_path: Path, host: Path) -> PrivateHomes:
    root = tmp_path / "state" / "codex-homes"
    root.mkdir(parents=True)
    redactor = Redactor([SECRET])
    return PrivateHomes(root, tmp_path / "state" / "sessions", host, lambda b: redactor.mask(b)[0])


def write_session(home: Path, thread: str, text: str) -> Path:
    session = (
        home / "sessions" / "2026" / "11" / "25" / f"rollout-2026-11-25T20-00-00-{thread}.jsonl"
    )
    session.parent.mkdir(parents=True, exist_ok=True)
    session.write_text(text)
    return session


def test_home_is_seeded_with_config_and_credential_owner_only(homes: PrivateHomes) -> None:
    home = homes.create(7)
    assert (home / "config.toml").read_text() == 'model = "gpt-4.1"\n'
    assert (home / "AGENTS.md").read_text() == "Always run the tests.\n"
    assert not (home / "sessions").exists()
    assert (home / "auth.json").read_text() == '{"tokens": {"refresh_token": "r0"}}'
    assert stat.S_IMODE((home / "auth.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert homes.create(8) != home


def test_finish_keeps_the_threads_session_masked_and_removes_the_home(
    homes: PrivateHomes, tmp_path: Path
) -> None:
    home = homes.create(3)
    write_session(home, "other-thread", "{}\n")
    write_session(home, "thread-1", f'{{"echo": "{SECRET}"}}\n{{"n": 2}}\n')
    kept = homes.finish(3, "thread-1")
    assert kept is not None
    assert kept.startswith(str(tmp_path / "state" / "sessions" / "3"))
    assert "thread-1" in Path(kept).name
    text = Path(kept).read_text()
    assert SECRET not in text
    assert text == '{"echo": "[REDACTED]"}\n{"n": 2}\n'
    assert not home.exists()


def test_finish_without_a_session_keeps_nothing(homes: PrivateHomes) -> None:
    home = homes.create(4)
    assert homes.finish(4, None) is None
    assert not home.exists()


def test_resume_places_the_kept_session_in_the_new_home(homes: PrivateHomes) -> None:
    first = homes.create(5)
    write_session(first, "thread-5", '{"turn": 1}\n')
    kept = homes.finish(5, "thread-5")
    assert kept is not None
    second = homes.create(6, resume_session=kept)
    copies = list(second.glob("sessions/rollout-*thread-5.jsonl"))
    assert [p.read_text() for p in copies] == ['{"turn": 1}\n']


def test_a_refreshed_token_is_written_back_to_the_host(homes: PrivateHomes, host: Path) -> None:
    home = homes.create(9)
    (home / "auth.json").write_text('{"tokens": {"refresh_token": "r1"}}')
    homes.finish(9, None)
    assert (host / "auth.json").read_text() == '{"tokens": {"refresh_token": "r1"}}'


def test_a_token_refreshed_by_another_run_first_is_kept(homes: PrivateHomes, host: Path) -> None:
    first, second = homes.create(10), homes.create(11)
    (first / "auth.json").write_text('{"tokens": {"refresh_token": "first"}}')
    (second / "auth.json").write_text('{"tokens": {"refresh_token": "second"}}')
    homes.finish(10, None)
    homes.finish(11, None)
    assert (host / "auth.json").read_text() == '{"tokens": {"refresh_token": "first"}}'


def test_credential_from_allowed_variables_or_auth_file(tmp_path: Path, host: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    allowed = ["OPENAI_API_KEY", "CODEX_API_KEY", "GATEWAY_KEY"]
    assert find_credential({"CODEX_HOME": str(empty)}, allowed) is None
    assert find_credential({"CODEX_HOME": str(empty), "OPENAI_API_KEY": "k"}, allowed) == (
        "$OPENAI_API_KEY"
    )
    # A key the allow-list keeps from the agent is no credential for it.
    assert find_credential({"CODEX_HOME": str(empty), "OPENAI_API_KEY": "k"}, ["PATH"]) is None
    gateway = {"CODEX_HOME": str(empty), "GATEWAY_KEY": "k"}
    assert find_credential(gateway, allowed, "GATEWAY_KEY") == "$GATEWAY_KEY"
    assert find_credential({"CODEX_HOME": str(host)}, allowed) == str(host / "auth.json")


def test_host_home_defaults_to_dot_codex(tmp_path: Path) -> None:
    assert host_codex_home({"HOME": str(tmp_path)}) == tmp_path / ".codex"
    assert host_codex_home({"CODEX_HOME": "/x", "HOME": str(tmp_path)}) == Path("/x")
