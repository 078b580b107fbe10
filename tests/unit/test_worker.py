"""The worker class and its server, without processes: how gunicorn's timeouts and the settings become uvicorn's,
and what SIGTERM does to the serving phase."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.config import Config as GunicornConfig
from uvicorn.config import Config

from productos import Settings, create_service
from productos.entrypoints.protocol import HttpLimits, ProductosHttpToolsProtocol
from productos.entrypoints.worker import (
    SHUTDOWN_MARGIN,
    DrainingServer,
    InstanceShutdown,
    ProductosUvicornWorker,
    server_applies_proxy_headers,
    serving_settings,
    watch_instance_shutdown,
)
from productos.http.drain import Drain, Phase


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.chdir(tmp_path)  # no .env
    serving_settings.cache_clear()
    # UvicornWorker gives uvicorn's loggers gunicorn's handlers: put them back for the other tests.
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "uvicorn.access")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield monkeypatch
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers, lg.level, lg.propagate = handlers, level, propagate
    serving_settings.cache_clear()


def worker(graceful_timeout: int) -> ProductosUvicornWorker:
    cfg = GunicornConfig()
    cfg.set("graceful_timeout", graceful_timeout)
    log = logging.getLogger("test")
    log.error_log = log.access_log = log  # type: ignore[attr-defined]
    made = ProductosUvicornWorker(1, os.getpid(), [], None, 30, cfg, log)
    made.tmp.close()  # the heartbeat file gunicorn gives each worker
    return made


def test_the_drain_and_in_flight_requests_share_gunicorns_graceful_timeout(settings_env: pytest.MonkeyPatch) -> None:
    settings_env.setenv("PRODUCTOS_DRAIN_SECONDS", "15")
    settings_env.setenv("PRODUCTOS_MAX_HEADER_SIZE", "4096")
    settings_env.setenv("PRODUCTOS_MAX_HEADER_COUNT", "50")
    settings_env.setenv("PRODUCTOS_HEADER_TIMEOUT", "3")
    w = worker(15 + 30)  # what the tuned configuration sets: the drain plus PRODUCTOS_GRACEFUL_TIMEOUT
    assert w.drain_seconds == 15
    assert w.config.timeout_graceful_shutdown == 30 - SHUTDOWN_MARGIN
    assert w.config.access_log is False
    assert issubclass(w.config.http, ProductosHttpToolsProtocol)
    assert w.config.http.limits == HttpLimits(4096, 50, 3.0)
    assert w.config.http.drain is w.drain


def test_a_drain_longer_than_gunicorns_timeout_is_shortened_to_fit(settings_env: pytest.MonkeyPatch) -> None:
    """``gunicorn -k ...ProductosUvicornWorker`` without the tuned configuration: gunicorn's 30 s default."""
    settings_env.setenv("PRODUCTOS_DRAIN_SECONDS", "40")
    w = worker(30)
    assert w.drain_seconds == 30 - SHUTDOWN_MARGIN - 1
    assert w.config.timeout_graceful_shutdown >= 1
    assert w.drain_seconds + w.config.timeout_graceful_shutdown + SHUTDOWN_MARGIN <= 30


async def app(scope: Any, receive: Any, send: Any) -> None:
    pass


def server(stopping: bool, drain_seconds: float = 5) -> DrainingServer:
    config = Config(app=app, lifespan="off")
    config.load()
    s = DrainingServer(config, Drain(), drain_seconds, instance_stopping=lambda: stopping)
    s.started = True
    s.servers = []
    return s


async def test_sigterm_for_the_instance_drains_and_keeps_serving() -> None:
    s = server(stopping=True)
    s.handle_exit(signal.SIGTERM, None)
    assert s.drain.phase is Phase.DRAINING and not s.drain.ready
    assert not s.should_exit and not await s.on_tick(1)  # no connection open, still serving: the balancer may come
    s.handle_exit(signal.SIGTERM, None)  # a second one ends the drain
    assert s.should_exit


async def test_sigterm_for_a_reload_retires_and_leaves_once_no_connection_is_open() -> None:
    s = server(stopping=False)
    s.server_state.connections.add(object())  # type: ignore[arg-type]
    s.handle_exit(signal.SIGTERM, None)
    assert s.drain.phase is Phase.RETIRING and s.drain.ready
    assert not await s.on_tick(1)
    s.server_state.connections.clear()
    assert await s.on_tick(1)


async def test_the_drain_ends_after_its_seconds() -> None:
    s = server(stopping=True, drain_seconds=0.01)
    s.handle_exit(signal.SIGTERM, None)
    await asyncio.sleep(0.02)
    assert await s.on_tick(1)


def test_no_drain_is_uvicorns_shutdown_at_once() -> None:
    s = server(stopping=True, drain_seconds=0)
    s.handle_exit(signal.SIGTERM, None)
    assert s.should_exit and s.drain.phase is Phase.SERVING


def test_the_master_sets_the_flag_before_it_stops_the_workers() -> None:
    class Arbiter:
        def handle_term(self) -> None:
            raise StopIteration

    arbiter = Arbiter()
    flag = watch_instance_shutdown(arbiter)
    assert not flag.is_set()
    with pytest.raises(StopIteration):
        arbiter.handle_term()
    assert flag.is_set()


def test_the_flag_is_one_byte_of_shared_memory() -> None:
    flag = InstanceShutdown()
    assert not flag.is_set()
    flag.set()
    assert flag.is_set()


def service_app() -> Any:
    return create_service(title="t", settings=Settings(database_url="sqlite+aiosqlite:///:memory:"))


@pytest.mark.parametrize(
    ("forwarded_allow_ips", "setting", "server_applies"),
    [
        (["10.0.0.0/16"], "10.0.0.7/16", False),  # the tuned configuration's list: the app applies it alone
        ([], "", False),
        (["*"], "10.0.0.0/16,*", False),
        (["127.0.0.1", "::1"], "", True),  # gunicorn's default, without the tuned configuration: not the app's
        (["proxy.internal"], "", True),  # a host's name: uvicorn's to interpret
    ],
)
def test_the_server_leaves_proxy_headers_to_a_service_that_applies_the_same_proxies(
    settings_env: pytest.MonkeyPatch, forwarded_allow_ips: list[str], setting: str, server_applies: bool
) -> None:
    """Under the tuned configuration uvicorn's proxy-headers handling and the app's would do the same work twice
    on every request; the app's (PRODUCTOS_TRUSTED_PROXIES, applied under any server) is kept."""
    settings_env.setenv("PRODUCTOS_TRUSTED_PROXIES", setting)
    assert server_applies_proxy_headers(service_app(), forwarded_allow_ips) is server_applies
    assert server_applies_proxy_headers(app, forwarded_allow_ips) is True  # an app of its own: the server does it
