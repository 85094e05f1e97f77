"""load_config: defaults, TOML < FLEET_* < flags, and errors that name what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import (
    SECTIONS,
    TABLES,
    FleetConfig,
    GitHubTrackerConfig,
    iter_settings,
    load_config,
    setting_keys,
    url_without_password,
)
from shared.errors import ConfigError


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def env_of(home: Path, **variables: str) -> dict[str, str]:
    return {"HOME": str(home), **variables}


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_env_or_flags(home: Path) -> None:
    config = load_config(env_of(home))
    assert config.workers == 2
    assert config.log_json is False
    assert config.log_level == "INFO"
    assert config.queue.max_attempts == 3
    assert config.queue.lease_seconds == 30.0
    assert config.worker.heartbeat_seconds == 1.0
    assert config.worker.max_line_bytes == 64 * 1024 * 1024
    assert config.worker.secret_env == [
        "OPENAI_API_KEY",
        "CODEX_API_KEY",
        "ANTHROPIC_API_KEY",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "ANTHROPIC_AUTH_TOKEN",
    ]
    assert config.claude.allowed_tools[0] == "Bash" and config.claude.max_turns == 0
    assert config.codex.sandbox == "workspace-write"
    assert config.codex.config == []
    assert config.recorder.batch_max == 20000
    assert config.supervisor.crash_loop_restarts == 5


def test_state_dir_defaults_under_home_local_state(home: Path) -> None:
    config = load_config(env_of(home))
    assert config.state_dir == str(home / ".local" / "state" / "agent-fleet")


def test_state_dir_defaults_under_xdg_state_home(home: Path, tmp_path: Path) -> None:
    config = load_config(env_of(home, XDG_STATE_HOME=str(tmp_path / "xdg")))
    assert config.state_dir == str(tmp_path / "xdg" / "agent-fleet")


def test_relative_state_dir_is_made_absolute(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(env_of(home, FLEET_STATE_DIR="rel/state"))
    assert config.state_dir == str(tmp_path / "rel" / "state")


def test_paths_derive_from_state_dir(home: Path, tmp_path: Path) -> None:
    config = load_config(env_of(home, FLEET_STATE_DIR=str(tmp_path / "s")))
    assert config.paths().queue_db == tmp_path / "s" / "queue.db"


def test_toml_file_sets_values(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, 'workers = 4\n[queue]\nmax_attempts = 5\n[codex]\nmodel = "m1"\n')
    config = load_config(env_of(home), path)
    assert (config.workers, config.queue.max_attempts, config.codex.model) == (4, 5, "m1")
    assert config.queue.lease_seconds == 30.0


def test_env_overrides_toml(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, "workers = 4\n[queue]\nmax_attempts = 5\nlease_seconds = 7\n")
    config = load_config(env_of(home, FLEET_WORKERS="6", FLEET_QUEUE_MAX_ATTEMPTS="8"), path)
    assert config.workers == 6
    assert config.queue.max_attempts == 8
    assert config.queue.lease_seconds == 7.0


def test_flags_override_env_and_toml(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, "workers = 4\n[queue]\nmax_attempts = 5\n")
    env = env_of(home, FLEET_WORKERS="6", FLEET_QUEUE_MAX_ATTEMPTS="8")
    config = load_config(env, path, {"workers": 9, "queue.max_attempts": 10})
    assert config.workers == 9
    assert config.queue.max_attempts == 10


def test_flag_set_to_none_leaves_lower_layers(home: Path) -> None:
    config = load_config(env_of(home, FLEET_WORKERS="6"), flags={"workers": None})
    assert config.workers == 6


def test_flag_in_section_keeps_the_section_siblings(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, "[queue]\nlease_seconds = 7\n")
    config = load_config(env_of(home), path, {"queue.max_attempts": 4})
    assert (config.queue.max_attempts, config.queue.lease_seconds) == (4, 7.0)


def test_config_file_from_fleet_config_variable(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, "workers = 7\n")
    assert load_config(env_of(home, FLEET_CONFIG=str(path))).workers == 7


def test_default_config_file_under_home_is_read(home: Path) -> None:
    path = home / ".config" / "agent-fleet" / "fleet.toml"
    path.parent.mkdir(parents=True)
    path.write_text("workers = 5\n")
    assert load_config(env_of(home)).workers == 5


def test_default_config_file_under_xdg_config_home_is_read(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "xdgconf" / "agent-fleet" / "fleet.toml"
    path.parent.mkdir(parents=True)
    path.write_text("workers = 3\n")
    assert load_config(env_of(home, XDG_CONFIG_HOME=str(tmp_path / "xdgconf"))).workers == 3


def test_explicit_config_file_beats_fleet_config_variable(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("workers = 11\n")
    path = toml(tmp_path, "workers = 12\n")
    assert load_config(env_of(home, FLEET_CONFIG=str(other)), path).workers == 12


def test_env_list_is_comma_separated_and_stripped(home: Path) -> None:
    config = load_config(env_of(home, FLEET_WORKER_ENV_ALLOW=" PATH, HOME,,LANG ,"))
    assert config.worker.env_allow == ["PATH", "HOME", "LANG"]


def test_env_lists_for_every_list_setting(home: Path) -> None:
    env = env_of(home, FLEET_WORKER_SECRET_ENV="A,B", FLEET_CODEX_CONFIG="x=1,y=2")
    config = load_config(env)
    assert config.worker.secret_env == ["A", "B"]
    assert config.codex.config == ["x=1", "y=2"]


def test_env_values_convert_from_text(home: Path) -> None:
    env = env_of(home, FLEET_LOG_JSON="true", FLEET_QUEUE_LEASE_SECONDS="2.5")
    config = load_config(env)
    assert config.log_json is True
    assert config.queue.lease_seconds == 2.5


def test_unknown_toml_key_is_named(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, "workers = 2\nbogus_key = 1\n")
    with pytest.raises(ConfigError, match="bogus_key"):
        load_config(env_of(home), path)


def test_unknown_toml_key_in_section_is_named_with_its_section(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, "[queue]\nmax_attempts = 2\nretries = 1\n")
    with pytest.raises(ConfigError, match=r"`retries` - at `queue`"):
        load_config(env_of(home), path)


def test_unknown_toml_section_is_named(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, "[scheduler]\nmode = 1\n")
    with pytest.raises(ConfigError, match="scheduler"):
        load_config(env_of(home), path)


def test_error_names_the_config_file(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, "bogus_key = 1\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(env_of(home), path)


def test_unknown_fleet_variables_are_all_named(home: Path) -> None:
    env = env_of(home, FLEET_BOGUS="1", FLEET_QUEUE_RETRIES="2", FLEET_WORKERS="3")
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert "FLEET_BOGUS, FLEET_QUEUE_RETRIES" in str(caught.value)
    assert "FLEET_WORKERS" not in str(caught.value)


def test_fleet_config_variable_is_not_a_setting(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, "")
    assert load_config(env_of(home, FLEET_CONFIG=str(path))).workers == 2


def test_variables_without_the_prefix_are_ignored(home: Path) -> None:
    assert load_config(env_of(home, FLEETX_WORKERS="9", WORKERS="9")).workers == 2


def test_wrong_type_in_toml_is_named(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, 'workers = "many"\n')
    with pytest.raises(ConfigError, match=r"Expected `int`, got `str` - at `workers`"):
        load_config(env_of(home), path)


def test_wrong_type_in_env_is_named(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"`float`.*queue\.lease_seconds"):
        load_config(env_of(home, FLEET_QUEUE_LEASE_SECONDS="soon"))


def test_wrong_type_of_list_in_toml_is_named(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, '[worker]\nenv_allow = "PATH"\n')
    with pytest.raises(ConfigError, match=r"worker\.env_allow"):
        load_config(env_of(home), path)


def test_out_of_range_value_is_rejected(home: Path) -> None:
    with pytest.raises(ConfigError, match=r">= 1 - at `workers`"):
        load_config(env_of(home, FLEET_WORKERS="0"))


def test_invalid_choice_is_rejected(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"codex\.sandbox"):
        load_config(env_of(home, FLEET_CODEX_SANDBOX="yolo"))


def test_wrong_type_of_section_in_toml_is_named(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, "queue = 5\n")
    with pytest.raises(ConfigError, match=r"Expected `object`, got `int` - at `queue`"):
        load_config(env_of(home), path)


def test_wrong_type_of_section_in_toml_is_named_even_with_env_override(
    home: Path, tmp_path: Path
) -> None:
    path = toml(tmp_path, "queue = 5\n")
    with pytest.raises(ConfigError, match="queue"):
        load_config(env_of(home, FLEET_QUEUE_MAX_ATTEMPTS="4"), path)


def test_missing_config_file_is_a_config_error(home: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(env_of(home), tmp_path / "missing.toml")


def test_invalid_toml_is_a_config_error(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, "workers = = 2\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(env_of(home), path)


def test_iter_settings_lists_every_field_with_a_description() -> None:
    settings = list(iter_settings())
    top = [name for name in FleetConfig.__struct_fields__ if name not in SECTIONS]
    expected = [name for name in top if name != "tracker"]
    for section in SECTIONS:
        fields = type(getattr(FleetConfig(), section)).__struct_fields__
        expected += [f"{section}.{field}" for field in fields]
    expected = [key for key in expected if key not in TABLES]
    expected += [f"tracker.github.{field}" for field in GitHubTrackerConfig.__struct_fields__]
    assert [key for key, _, _, _ in settings] == expected
    assert len(expected) == 58 + 10  # + queue.url, node.name, worker.output_batch_ms
    assert [key for key, _, text, _ in settings if not text.strip()] == []


def test_iter_settings_env_names_and_defaults() -> None:
    settings = {key: (env, default) for key, env, _, default in iter_settings()}
    assert settings["workers"] == ("FLEET_WORKERS", 2)
    assert settings["queue.lease_seconds"] == ("FLEET_QUEUE_LEASE_SECONDS", 30.0)
    assert settings["worker.secret_env"] == (
        "FLEET_WORKER_SECRET_ENV",
        [
            "OPENAI_API_KEY",
            "CODEX_API_KEY",
            "ANTHROPIC_API_KEY",
            "CLAUDE_CODE_OAUTH_TOKEN",
            "GITHUB_TOKEN",
            "GH_TOKEN",
            "ANTHROPIC_AUTH_TOKEN",
        ],
    )
    assert settings["codex.bin"] == ("FLEET_CODEX_BIN", None)
    assert settings["claude.bin"] == ("FLEET_CLAUDE_BIN", None)


def test_every_listed_env_variable_is_accepted(home: Path, tmp_path: Path) -> None:
    values = {
        "state_dir": str(tmp_path / "s"),
        "log_json": "false",
        "log_level": "DEBUG",
        "codex.sandbox": "read-only",
        "claude.permission_mode": "acceptEdits",
        "tracker.github.repos": "o/a,o/b",
        "tracker.github.api_url": "https://ghe.example/api/v3",
    }
    env = env_of(home)
    for key, variable, _, default in iter_settings():
        if key in values:
            env[variable] = values[key]
        elif isinstance(default, list):
            env[variable] = "A,B"
        elif default is None:
            env[variable] = "x"
        else:
            env[variable] = str(default)
    config = load_config(env)
    assert config.worker.env_allow == ["A", "B"]
    assert config.codex.bin == "x"
    assert config.log_level == "DEBUG"


def test_setting_keys_are_iter_settings_keys() -> None:
    assert setting_keys() == [key for key, _, _, _ in iter_settings()]


def test_tracker_github_comes_from_its_table_and_is_off_without_it(
    home: Path, tmp_path: Path
) -> None:
    assert load_config(env_of(home)).tracker.github is None
    path = toml(tmp_path, '[tracker.github]\nrepos = ["o/r"]\nagent = "command"\nargv = ["x"]\n')
    github = load_config(env_of(home), path).tracker.github
    assert github is not None
    assert (github.repos, github.agent, github.argv, github.label) == (
        ["o/r"],
        "command",
        ["x"],
        "agent-fleet",
    )
    env = {**env_of(home), "FLEET_TRACKER_GITHUB_REPOS": "a/b, c/d"}
    assert load_config(env).tracker.github.repos == ["a/b", "c/d"]


def test_an_unknown_tracker_key_is_named(home: Path, tmp_path: Path) -> None:
    path = toml(tmp_path, "[tracker.github]\nrepo = 'o/r'\n")
    with pytest.raises(ConfigError, match="repo"):
        load_config(env_of(home), path)


@pytest.mark.parametrize(
    "line",
    [
        'repos = ["../etc"]',
        'repos = ["o/.."]',
        'label = "a,b"',
        'api_url = "file:///x"',
        "poll_seconds = 0",
    ],
)
def test_a_bad_tracker_value_is_refused_by_name(home: Path, tmp_path: Path, line: str) -> None:
    path = toml(tmp_path, f"[tracker.github]\n{line}\n")
    with pytest.raises(ConfigError, match=line.split(" ")[0]):
        load_config(env_of(home), path)


def test_node_name_defaults_to_the_host_name(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import socket

    assert os.uname().nodename == socket.gethostname()  # what it reads, socket-free
    for host, node in [("build-7.example.org", "build-7"), ("_odd host!", "odd-host-")]:
        real = os.uname()
        named = os.uname_result((real.sysname, host, real.release, real.version, real.machine))
        monkeypatch.setattr("os.uname", lambda named=named: named)
        assert load_config(env_of(home)).node.name == node


def test_node_name_comes_from_the_environment(home: Path) -> None:
    assert load_config(env_of(home, FLEET_NODE_NAME="host-b")).node.name == "host-b"


@pytest.mark.parametrize("name", ["", "a/b", "../x", "-x", "a b", "x" * 64, "é"])
def test_an_unsafe_node_name_is_refused_by_key(home: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"node\.name"):
        load_config(env_of(home, FLEET_NODE_NAME=name))


def test_queue_url_defaults_to_sqlite_and_takes_a_postgresql_url() -> None:
    assert load_config({"HOME": "/tmp"}).queue.url == "sqlite"
    url = "postgresql://fleet:hunter2-secret@db.example:5432/fleet"
    config = load_config({"HOME": "/tmp", "FLEET_QUEUE_URL": url})
    assert config.queue.url == url and config.queue.postgres


def test_a_bad_queue_url_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"HOME": "/tmp", "FLEET_QUEUE_URL": "mysql://fleet:hunter2-secret@db/fleet"})
    assert "queue.url" in str(caught.value) and "mysql" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_url_without_password_masks_the_authority_and_parameters() -> None:
    masked = url_without_password("postgresql://fleet:p@ss:wd@db:5432/q?password=x&sslmode=on")
    assert masked == "postgresql://fleet:***@db:5432/q?password=***&sslmode=on"
    assert url_without_password("postgresql://db/q") == "postgresql://db/q"
