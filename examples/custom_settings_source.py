"""A settings source of your own: here, a JSON file (baked into the AMI, or mounted by your orchestrator).

Any object with ``async def load(self) -> Mapping[str, SettingValue]`` is a source (the ``SettingsSource``
port). Its values rank above Secrets Manager and SSM and below the environment and explicit arguments; the
label of each value is what ``productos check`` shows as its source. Raise ``ConfigurationError`` with a
message that says what to fix, never with a secret in it.

Run: ``python examples/custom_settings_source.py [settings.json]`` (without an argument it writes a sample
file in a temporary folder; no server, no AWS).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from productos import ConfigurationError, Settings
from productos.runtime import open_runtime, resolve_settings
from productos.services.productos.app import MIGRATIONS, unit_of_work_factory
from productos.services.productos.service import ProductoService
from productos.settings import SettingValue, env_names


class JsonFileSource:
    """Settings from a JSON object in a file: ``{"LOG_LEVEL": "warning", "DATABASE_URL": "..."}``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def load(self) -> Mapping[str, SettingValue]:
        try:
            text = await asyncio.to_thread(self.path.read_text, encoding="utf-8")
        except FileNotFoundError:
            raise ConfigurationError(f"{self.path} does not exist: create it or remove JsonFileSource") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            # ``from None``: the decoder's error holds the file's text, which may hold secrets.
            raise ConfigurationError(f"{self.path} is not valid JSON (line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise ConfigurationError(f"{self.path} must hold a JSON object of settings")
        return {key: SettingValue(value, f"file:{self.path}") for key, value in data.items()}


def show(settings: Settings, sources: Mapping[str, str]) -> None:
    """What ``productos check`` prints: every setting, secrets masked, with its source."""
    for name, field in sorted(env_names().items()):
        value = getattr(settings, field)
        shown = "**********" if isinstance(value, SecretStr) else value
        if sources[field] != "default":
            print(f"{name:<24} {shown!s:<20} {sources[field]}")


async def main(path: Path) -> None:
    source = JsonFileSource(path)
    resolved = await resolve_settings(sources=[source], env_file=None)
    show(resolved.settings, resolved.sources)

    # The service with the same source: the runtime resolves the settings itself and owns the clients.
    async with open_runtime(sources=[source], env_file=None, migrations=[MIGRATIONS]) as runtime:
        page = await ProductoService(unit_of_work_factory(runtime.engine)).list(limit=5)
        print(f"service: log level {runtime.settings.log_level}, {len(page.items)} product(s)")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory() as folder:
            sample = Path(folder) / "settings.json"
            database = Path(folder) / "productos.db"
            sample.write_text(
                json.dumps({"LOG_LEVEL": "warning", "DATABASE_URL": f"sqlite:///{database}", "DB_POOL_SIZE": 4})
            )
            asyncio.run(main(sample))
