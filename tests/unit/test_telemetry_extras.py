"""The optional exporters (the ``otlp`` and ``xray`` extras): the core install works without them, and a setting
that needs a missing one fails at start with an error that names the extra to install.

Each case runs in a fresh interpreter in which the extra's modules cannot be imported (``sys.modules[name] =
None``), as in an install without the extra.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: The modules each extra brings, one missing at a time.
MISSING = {
    "otlp": ("otlp", ["opentelemetry.exporter.otlp.proto.http"]),
    "xray-propagator": ("xray", ["opentelemetry.propagators.aws"]),
    "xray-sdk-extension": ("xray", ["opentelemetry.sdk.extension.aws"]),
}
ALL_EXTRA_MODULES = [module for _, modules in MISSING.values() for module in modules]

#: Settings, and the extra each needs (None: none).
CASES: dict[str, tuple[dict[str, object], str | None]] = {
    "otlp": ({"otel_exporter": "otlp"}, "otlp"),
    "auto with an endpoint": ({"otel_exporter_otlp_endpoint": "http://127.0.0.1:4318"}, "otlp"),
    "otlp, metrics only": ({"otel_exporter": "otlp", "tracing_enabled": False}, "otlp"),
    "xray": ({"xray": True}, "xray"),
    "defaults": ({}, None),
    "console": ({"otel_exporter": "console"}, None),
    "none with an endpoint": ({"otel_exporter": "none", "otel_exporter_otlp_endpoint": "http://127.0.0.1:4318"}, None),
    "otlp, nothing on": ({"otel_exporter": "otlp", "metrics_enabled": False, "tracing_enabled": False}, None),
    "xray without tracing": ({"xray": True, "tracing_enabled": False}, None),
}

_SCRIPT = """
import json

from productos.domain.errors import ConfigurationError
from productos.observability.telemetry import build_telemetry
from productos.settings import Settings

errors = {{}}
for case, (settings, _) in {cases!r}.items():
    try:
        telemetry = build_telemetry(Settings(**settings))
    except ConfigurationError as exc:
        errors[case] = str(exc)
    else:
        telemetry.shutdown()
        errors[case] = None
print(json.dumps(errors))
"""


def run_without(modules: list[str], script: str, tmp_path: Path) -> str:
    """Run ``script`` in a fresh interpreter in which ``modules`` cannot be imported; its last line of output."""
    blocked = f"import sys\nfor name in {modules!r}:\n    sys.modules[name] = None\n"
    done = subprocess.run(
        [sys.executable, "-c", blocked + script], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


@pytest.mark.parametrize("missing", MISSING)
def test_a_setting_that_needs_a_missing_extra_fails_and_names_it(missing: str, tmp_path: Path) -> None:
    extra, modules = MISSING[missing]
    errors = json.loads(run_without(modules, _SCRIPT.format(cases=CASES), tmp_path))
    for case, (_, needs) in CASES.items():
        error = errors[case]
        if needs != extra:
            assert error is None, (case, error)
            continue
        assert error is not None, case
        assert f"pip install 'productos[{extra}]'" in error, error
        assert ("PRODUCTOS_XRAY=true" if extra == "xray" else "PRODUCTOS_OTEL_EXPORTER=otlp") in error, error
        assert f"no module {modules[0]}" in error, error


def test_the_core_install_imports_no_extra(tmp_path: Path) -> None:
    """The app is built, started and serves a request without the extras' packages."""
    script = textwrap.dedent(
        """
        import asyncio, httpx
        from asgi_lifespan import LifespanManager
        from productos import Settings
        from productos.services.productos.app import create_app

        async def main():
            app = create_app(Settings(database_url="sqlite+aiosqlite:///./core.db"))
            async with LifespanManager(app) as manager:
                transport = httpx.ASGITransport(app=manager.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    assert (await client.get("/health/live")).status_code == 200

        asyncio.run(main())
        """
    )
    run_without(ALL_EXTRA_MODULES, script, tmp_path)


def test_the_meter_provider_becomes_the_global_one(tmp_path: Path) -> None:
    """The app's own instruments (``metrics.get_meter(__name__)``) export with ours: this reads the name of
    OpenTelemetry's private default provider class, which a release may change (``.ci/newest`` runs this)."""
    script = textwrap.dedent(
        """
        from opentelemetry import metrics
        from productos.observability.telemetry import build_telemetry
        from productos.settings import Settings

        telemetry = build_telemetry(Settings(otel_exporter="console", tracing_enabled=False))
        assert telemetry.meter_provider is not None
        assert metrics.get_meter_provider() is telemetry.meter_provider, metrics.get_meter_provider()
        telemetry.shutdown()
        """
    )
    run_without([], script, tmp_path)
