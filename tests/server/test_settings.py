"""Settings: one typed object from env/file/overrides; bad values refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import ConfigError
from server.settings import Settings


def test_defaults_are_the_zero_config_embedded_server() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.is_sqlite and settings.should_auto_migrate
    assert settings.effective_database_url.endswith(".asyncfl/asyncfl.db")


def test_environment_values_are_typed() -> None:
    settings = Settings.from_env(
        {
            "ASYNCFL_PORT": "9001",
            "ASYNCFL_AUTO_MIGRATE": "false",
            "ASYNCFL_SESSION_DEADLINE_S": "12.5",
            "ASYNCFL_DATA_DIR": "/tmp/x",
        }
    )
    assert settings.port == 9001
    assert settings.auto_migrate is False
    assert settings.session_deadline_s == 12.5
    assert settings.data_dir == Path("/tmp/x")


def test_config_file_is_read_and_env_wins(tmp_path: Path) -> None:
    config = tmp_path / "asyncfl.toml"
    config.write_text('port = 7000\nhost = "127.0.0.2"\n')
    settings = Settings.from_env({"ASYNCFL_CONFIG": str(config), "ASYNCFL_PORT": "7001"})
    assert (settings.host, settings.port) == ("127.0.0.2", 7001)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"ASYNCFL_PORT": "abc"}, "port"),
        ({"ASYNCFL_PORT": "70000"}, "port"),
        ({"ASYNCFL_LOG_FSYNC": "sometimes"}, "log_fsync"),
        ({"ASYNCFL_AUTO_MIGRATE": "maybe"}, "auto_migrate"),
        ({"ASYNCFL_SESSION_DEADLINE_S": "-1"}, "session_deadline_s"),
        ({"ASYNCFL_HEAP_TRIM_S": "-5"}, "heap_trim_s"),
        ({"ASYNCFL_HEAP_TRIM_S": "nan"}, "heap_trim_s"),
    ],
)
def test_bad_values_are_refused_with_the_setting_named(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env(env)


def test_unknown_keys_in_a_config_file_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "asyncfl.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        Settings.from_env({"ASYNCFL_CONFIG": str(config)})


def test_generated_secrets_persist_across_restarts(tmp_path: Path) -> None:
    first = Settings.from_env({}, data_dir=tmp_path).with_secrets()
    second = Settings.from_env({}, data_dir=tmp_path).with_secrets()
    assert first.admin_token and first.admin_token == second.admin_token
    assert first.secret_key == second.secret_key
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0


def test_public_dict_hides_secrets_and_url_passwords() -> None:
    settings = Settings.from_env(
        {}, admin_token="tok", database_url="postgresql+asyncpg://u:pw@db/x"
    )
    public = settings.public_dict()
    assert public["admin_token"] == "***"
    assert "pw" not in public["database_url"]
