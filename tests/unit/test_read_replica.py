"""Read replicas without I/O: the settings, the state a sample leaves, read-your-writes scopes, and which units a
factory sends to the replica. The real streaming replica is in tests/integration/test_read_replica.py."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from productos.db import EngineUnitOfWorkFactory, ReadReplica, note_write, read_your_writes
from productos.domain.errors import ConfigurationError
from productos.entrypoints.check import _masked
from productos.infra.db.replica import classify, wrote_in_scope
from productos.runtime import resolve_settings
from productos.settings import Settings, settings_from_values

READ_URL = "postgresql://reader:s3cret-pw@replica.internal:5432/app"


@pytest.fixture
async def engine() -> Any:
    # Lazy: nothing connects.
    engine = create_async_engine("postgresql+asyncpg://reader@replica.internal:5432/app")
    yield engine
    await engine.dispose()


def test_database_read_url_is_an_optional_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from_values({}).database_read_url is None
    assert settings_from_values({"database_read_url": "  "}).database_read_url is None
    monkeypatch.setenv("DATABASE_READ_URL", READ_URL)
    settings = Settings()
    assert isinstance(settings.database_read_url, SecretStr)
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in str(settings.database_read_url)
    masked = _masked("database_read_url", settings.database_read_url)
    assert "s3cret-pw" not in masked and "replica.internal" in masked


def test_db_read_max_lag_is_positive_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from_values({}).db_read_max_lag == 5.0
    monkeypatch.setenv("DB_READ_MAX_LAG", "0.5")
    assert Settings().db_read_max_lag == 0.5
    with pytest.raises(ValidationError, match=r"db_read_max_lag|DB_READ_MAX_LAG"):
        settings_from_values({"db_read_max_lag": 0})


@pytest.mark.parametrize(
    ("database_url", "read_url", "message"),
    [
        ("sqlite:///./app.db", READ_URL, "DATABASE_READ_URL .* PostgreSQL read replica of a PostgreSQL DATABASE_URL"),
        ("postgresql://app@db:5432/app", "sqlite:///./replica.db", "PostgreSQL read replica"),
        ("postgresql://app@db:5432/app", "mysql://x@y/z", "DATABASE_READ_URL uses the unsupported scheme"),
        ("postgresql://app@db:5432/app", "postgresql://x:s3cret-pw@y/z?sslmode=bogus", "DATABASE_READ_URL has sslmode"),
    ],
)
async def test_a_read_url_that_cannot_be_a_replica_is_refused_at_load(
    tmp_path: Path, database_url: str, read_url: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        await resolve_settings(env_file=tmp_path / "none.env", database_url=database_url, database_read_url=read_url)
    assert "s3cret-pw" not in str(caught.value)


@pytest.mark.parametrize(
    ("in_recovery", "lag", "state"),
    [
        (True, 0.0, "connected"),
        (True, 5.0, "connected"),
        (True, 5.01, "lagging"),
        (True, None, "lagging"),  # nothing replayed yet: unknown
        (False, None, "connected"),  # promoted
        (False, 99.0, "connected"),
    ],
)
def test_classify(in_recovery: bool, lag: float | None, state: str) -> None:
    assert classify(in_recovery=in_recovery, lag=lag, max_lag=5.0)[0] == state


def test_the_replica_serves_reads_only_once_a_sample_says_so(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    replica = ReadReplica(engine, max_lag=2)
    assert replica.state == "unavailable" and not replica.should_read()
    with caplog.at_level(logging.INFO, logger="productos.infra.db.replica"):
        assert replica.record(in_recovery=True, lag=-0.3) == "connected"  # clocks apart: caught up
        assert replica.lag == 0.0 and replica.should_read()
        assert replica.record(in_recovery=True, lag=3.0) == "lagging"
        assert not replica.should_read() and "DB_READ_MAX_LAG" in replica.reason
        assert replica.record(in_recovery=True, lag=0.1) == "connected"
        replica.unreachable("ConnectionRefusedError")
        assert replica.state == "unavailable" and replica.reason == "ConnectionRefusedError"
        assert not replica.should_read()
        assert replica.record(in_recovery=False, lag=0.0) == "connected"  # promoted: still serves reads
        assert replica.in_recovery is False and replica.should_read()
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("the read replica serves reads") == 3
    assert "the read replica is lagging: reads go to the primary" in messages
    assert "the read replica is unavailable: reads go to the primary" in messages
    assert any("promoted" in message for message in messages)
    assert all("s3cret" not in message for message in messages)


def test_with_max_lag_not_positive_is_refused(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="max_lag"):
        ReadReplica(engine, max_lag=0)


async def test_read_your_writes_scopes(engine: AsyncEngine) -> None:
    replica = ReadReplica(engine, max_lag=2)
    replica.record(in_recovery=True, lag=0.0)

    async def scoped() -> None:
        with read_your_writes():
            assert replica.should_read() and not wrote_in_scope()
            note_write()
            assert wrote_in_scope() and not replica.should_read()
            with read_your_writes():  # a scope of its own: the outer one's write is not its
                assert replica.should_read()
            assert not replica.should_read()
        with read_your_writes():
            assert replica.should_read()

            async def child() -> None:
                note_write()

            await asyncio.create_task(child())  # a task of the scope writes for the whole scope
            assert not replica.should_read()
        # Outside any scope nothing was written.
        assert replica.should_read()

    await asyncio.create_task(scoped())

    async def unscoped() -> None:
        note_write()  # a job without a scope: the rest of its context reads its writes
        assert not replica.should_read()

    await asyncio.create_task(unscoped())
    assert replica.should_read()


class _Recorder:
    def __init__(self, engine: AsyncEngine, **options: Any) -> None:
        self.engine = engine
        self.options = options


def test_a_factory_gives_the_replica_to_its_read_only_units_only(engine: AsyncEngine) -> None:
    replica = ReadReplica(engine, max_lag=2)
    factory: EngineUnitOfWorkFactory[Any] = EngineUnitOfWorkFactory(
        _Recorder, engine, acquire_timeout=1.5, replica=replica
    )
    assert factory(read_only=True).options == {
        "read_only": True, "autocommit": False, "acquire_timeout": 1.5, "replica": replica,
    }  # fmt: skip
    assert "replica" not in factory().options
    assert "replica" not in factory(autocommit=True).options
    without = EngineUnitOfWorkFactory(_Recorder, engine, acquire_timeout=1.5)
    assert "replica" not in without(read_only=True).options
