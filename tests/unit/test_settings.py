"""Settings resolution: explicit > environment > .env > defaults, with the source of every value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from productos.domain.errors import ConfigurationError
from productos.runtime import load_settings, resolve_settings
from productos.settings import DEFAULT_DATABASE_URL, Settings, env_names

SECRET = "pw-Zq81-never-print-me"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting from the developer's environment or working directory leaks into these tests."""
    names = set(env_names())
    for key in list(os.environ):
        if key.upper() in names:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def write_env(path: Path, **values: object) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()), encoding="utf-8")
    return path


async def test_defaults(tmp_path: Path) -> None:
    resolved = await resolve_settings(env_file=tmp_path / "missing.env")
    settings = resolved.settings
    assert settings.database_url.get_secret_value() == DEFAULT_DATABASE_URL
    assert (settings.app_host, settings.app_port, settings.log_level) == ("0.0.0.0", 8000, "info")
    assert (settings.db_pool_size, settings.db_max_overflow, settings.db_pool_recycle) == (4, 4, 3600)
    assert settings.is_sqlite and settings.should_migrate_on_start
    assert set(resolved.sources) == set(Settings.model_fields)
    assert set(resolved.sources.values()) == {"default"}


async def test_dotenv_beats_defaults(tmp_path: Path) -> None:
    env_file = write_env(tmp_path / "custom.env", APP_PORT=9000, LOG_LEVEL="DEBUG")
    resolved = await resolve_settings(env_file=env_file)
    assert resolved.settings.app_port == 9000
    assert resolved.settings.log_level == "debug"
    assert resolved.sources["app_port"] == ".env"
    assert resolved.sources["db_pool_size"] == "default"


async def test_environment_beats_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write_env(tmp_path / "custom.env", APP_PORT=9000, DB_POOL_SIZE=3)
    monkeypatch.setenv("APP_PORT", "9100")
    resolved = await resolve_settings(env_file=env_file)
    assert resolved.settings.app_port == 9100
    assert resolved.sources["app_port"] == "env"
    assert resolved.settings.db_pool_size == 3
    assert resolved.sources["db_pool_size"] == ".env"


async def test_explicit_beats_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = write_env(tmp_path / "custom.env", APP_PORT=9000)
    monkeypatch.setenv("APP_PORT", "9100")
    resolved = await resolve_settings(env_file=env_file, app_port=9200)
    assert resolved.settings.app_port == 9200
    assert resolved.sources["app_port"] == "explicit"


async def test_environment_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("db_pool_size", "7")
    resolved = await resolve_settings(env_file=None)
    assert resolved.settings.db_pool_size == 7
    assert resolved.sources["db_pool_size"] == "env"


async def test_dotenv_in_the_working_directory_is_the_default(tmp_path: Path) -> None:
    write_env(tmp_path / ".env", WORKERS=3)
    resolved = await resolve_settings()
    assert resolved.settings.workers == 3
    assert resolved.sources["workers"] == ".env"


async def test_env_file_none_reads_no_dotenv(tmp_path: Path) -> None:
    write_env(tmp_path / ".env", LOG_LEVEL="debug", APP_PORT=9000)
    resolved = await resolve_settings(env_file=None)
    assert (resolved.settings.log_level, resolved.settings.app_port) == ("info", 8000)
    assert resolved.sources["log_level"] == resolved.sources["app_port"] == "default"


async def test_another_env_file_replaces_the_working_directory_one(tmp_path: Path) -> None:
    write_env(tmp_path / ".env", LOG_LEVEL="debug")
    other = write_env(tmp_path / "other.env", APP_PORT=9000)
    resolved = await resolve_settings(env_file=other)
    assert resolved.settings.log_level == "info" and resolved.sources["log_level"] == "default"
    assert resolved.settings.app_port == 9000


async def test_unrelated_variables_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOT_A_PRODUCTOS_SETTING", "x")
    env_file = write_env(tmp_path / "custom.env", SOMETHING_ELSE="y")
    resolved = await resolve_settings(env_file=env_file)
    assert set(resolved.sources.values()) == {"default"}


async def test_load_settings_applies_overrides_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "warning")
    monkeypatch.setenv("APP_PORT", "8100")
    settings = await load_settings(log_level="error")
    assert isinstance(settings, Settings)
    assert settings.log_level == "error"
    assert settings.app_port == 8100


async def test_database_url_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@db.internal:5432/productos")
    settings = (await resolve_settings(env_file=None)).settings
    assert SECRET in settings.database_url.get_secret_value()
    for text in (str(settings), repr(settings), settings.model_dump_json()):
        assert SECRET not in text
    assert not settings.is_sqlite and not settings.should_migrate_on_start


# --- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APP_PORT", SECRET),
        ("APP_PORT", "70000"),
        ("LOG_LEVEL", SECRET),
        ("DB_POOL_SIZE", "0"),
        ("WORKERS", SECRET),
        ("PRODUCTOS_HEALTH_TIMEOUT", "10"),
        ("PRODUCTOS_MIGRATE_ON_START", SECRET),
        ("PRODUCTOS_SERVICE_NAME", ""),
    ],
)
async def test_invalid_environment_value_names_setting_and_source_not_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        await resolve_settings(env_file=None)
    message = str(raised.value)
    assert f"{name} (from env)" in message
    assert SECRET not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


async def test_invalid_dotenv_value_names_dotenv_as_source(tmp_path: Path) -> None:
    env_file = write_env(tmp_path / "custom.env", DB_MAX_OVERFLOW=SECRET)
    with pytest.raises(ConfigurationError) as raised:
        await resolve_settings(env_file=env_file)
    assert "DB_MAX_OVERFLOW (from .env)" in str(raised.value)
    assert SECRET not in str(raised.value)


async def test_invalid_explicit_value_names_explicit_as_source() -> None:
    with pytest.raises(ConfigurationError, match=r"APP_PORT \(from explicit\)"):
        await resolve_settings(env_file=None, app_port=0)


async def test_every_invalid_setting_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PORT", "nope")
    monkeypatch.setenv("DB_POOL_SIZE", "-1")
    with pytest.raises(ConfigurationError) as raised:
        await resolve_settings(env_file=None)
    assert "APP_PORT" in str(raised.value) and "DB_POOL_SIZE" in str(raised.value)


async def test_invalid_secret_type_does_not_print_it() -> None:
    with pytest.raises(ConfigurationError) as raised:
        await resolve_settings(env_file=None, database_url=[SECRET])
    assert "DATABASE_URL (from explicit)" in str(raised.value)
    assert SECRET not in str(raised.value)


async def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="APP_PORT"):
        await load_settings(app_port="x")
