"""Sources of your own: ``examples/custom_settings_source.py`` runs, and its source ranks where documented."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from productos.domain.settings_ports import SettingsSource, SettingValue
from productos.runtime import resolve_settings
from tests.integration.conftest import Aws

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_settings_source.py"


def run_example(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PRODUCTOS_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_example_runs(tmp_path: Path) -> None:
    result = run_example(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["LOG_LEVEL", "warning"] and "file:" in line for line in lines)
    assert any(line.split()[:2] == ["DATABASE_URL", "**********"] for line in lines)
    assert "service: log level warning, 0 product(s)" in result.stdout


def test_the_example_reports_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "settings.json"
    broken.write_text('{"DATABASE_URL": "postgresql://u:hunter2@db/p",')
    result = run_example(tmp_path, str(broken))
    assert result.returncode != 0
    assert f"{broken} is not valid JSON" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


class Fixed:
    """A source of fixed values, labelled ``fixed``."""

    def __init__(self, **values: object) -> None:
        self.values = values

    async def load(self) -> Mapping[str, SettingValue]:
        return {key: SettingValue(value, "fixed") for key, value in self.values.items()}


async def test_own_sources_rank_above_aws_and_below_the_environment(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.put_parameters({"/p/database-url": "postgresql://ssm@db/p"})
    aws.put_parameters({"/p/workers": "2", "/p/log-level": "debug"}, kind="String")
    aws.put_secret("s", {"LOG_LEVEL": "info", "DB_POOL_SIZE": 3})
    monkeypatch.setenv("PRODUCTOS_SSM_PATH", "/p")
    monkeypatch.setenv("PRODUCTOS_SECRET_ID", "s")
    monkeypatch.setenv("APP_PORT", "8200")
    source = Fixed(LOG_LEVEL="error", APP_PORT="8100")
    assert isinstance(source, SettingsSource)

    resolved = await resolve_settings(sources=[source])

    assert (resolved.settings.log_level, resolved.sources["log_level"]) == ("error", "fixed")
    assert (resolved.settings.app_port, resolved.sources["app_port"]) == (8200, "env")
    assert resolved.sources["db_pool_size"] == "secretsmanager:s"
    assert resolved.sources["workers"] == "ssm:/p/workers"


async def test_later_sources_win_and_plain_values_are_labelled_by_class(aws: Aws) -> None:
    class Plain:
        async def load(self) -> Mapping[str, object]:
            return {"workers": 6}

    sources: list[SettingsSource] = [Fixed(WORKERS=5, LOG_LEVEL="error"), Plain()]  # type: ignore[list-item]
    resolved = await resolve_settings(sources=sources, env_file=None)
    assert (resolved.settings.workers, resolved.sources["workers"]) == (6, "Plain")
    assert resolved.sources["log_level"] == "fixed"
