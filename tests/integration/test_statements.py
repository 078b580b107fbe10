"""SQLAlchemy Core statements on ``SqlConnection`` (``productos.infra.db.statements``), on a real PostgreSQL (the
asyncpg path) and on SQLite (through SQLAlchemy): the same tests, the same answers; then what only the asyncpg
path has (its caches, the driver connection's listeners, invalidation)."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, assert_type

import asyncpg
import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidRequestError, ResourceClosedError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.domain.errors import ConflictError, DatabaseUnavailableError
from productos.infra.db.driver import DriverConnection, add_statement_listener
from productos.infra.db.engine import create_engine
from productos.infra.db.statements import (
    DriverSqlConnection,
    SqlAlchemySqlConnection,
    SqlConnection,
    SqlUnitOfWork,
    StatementCache,
    statement_cache,
)
from productos.infra.db.types import Money, UtcDateTime
from productos.infra.db.uow import EngineUnitOfWorkFactory
from tests.conftest import make_settings

ADMIN_URL = os.environ.get("DATABASE_URL_TEST") or "postgresql://postgres@127.0.0.1:5432/test"

metadata = MetaData()


def _slug(context: Any) -> str:
    """A context-sensitive default, as SQLAlchemy documents them."""
    return str(context.get_current_parameters()["nombre"]).lower().replace(" ", "-")


t = Table(
    "stmt_productos",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("nombre", String(100), nullable=False, unique=True),
    Column("descripcion", Text(), nullable=True),
    Column("precio", Money(), nullable=False),
    Column("stock", Integer(), nullable=False, default=0),
    Column("version", Integer(), nullable=False, default=1),
    Column("codigo", String(20), nullable=False, default=lambda: "sin-codigo"),
    Column("slug", String(100), nullable=False, default=_slug),
    Column("cambios", Integer(), nullable=False, default=0, onupdate=1),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    sqlite_autoincrement=True,
)

NOW = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)

# Declared once, as a repository would.
INSERT = (
    insert(t)
    .values(
        nombre=bindparam("nombre"),
        descripcion=bindparam("descripcion"),
        precio=bindparam("precio"),
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .returning(*t.c)
)
GET = select(t).where(t.c.id == bindparam("id"))
COUNT = select(func.count()).select_from(t)
SET_PRECIO = (
    update(t)
    .where(t.c.id == bindparam("b_id"))
    .values(precio=bindparam("precio"), version=t.c.version + 1)
    .returning(t.c.id, t.c.precio, t.c.version, t.c.cambios)
)
DELETE = delete(t).where(t.c.id == bindparam("id")).returning(t.c.id)
BY_IDS = select(t.c.id, t.c.nombre).where(t.c.id.in_(bindparam("ids", expanding=True))).order_by(t.c.id)


class Unit(SqlUnitOfWork):
    connection: SqlConnection

    def _bind(self, connection: SqlConnection) -> None:
        self.connection = connection


def _new(nombre: str, precio: str = "9.99", descripcion: str | None = "d") -> dict[str, Any]:
    return {"nombre": nombre, "descripcion": descripcion, "precio": Decimal(precio), "now": NOW}


# --- databases -------------------------------------------------------------------------------------------------


async def _admin_execute(statement: str) -> None:
    admin = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def postgres_url() -> AsyncIterator[str]:
    """A scratch database of this module's own, dropped at the end."""
    name = f"productos_stmt_{secrets.token_hex(5)}"
    await _admin_execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
async def postgres(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(make_settings(postgres_url, db_pool_size=2, db_max_overflow=0))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
async def pg(postgres: AsyncEngine) -> AsyncEngine:
    """PostgreSQL, with an empty table."""
    async with postgres.begin() as conn:
        await conn.execute(text(f"TRUNCATE {t.name} RESTART IDENTITY"))
    return postgres


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """SQLite, the embedded default, in a file of the test's own."""
    engine = create_engine(make_settings(f"sqlite:///{tmp_path / 'statements.db'}"))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest) -> AsyncEngine:
    """Each backend in turn, with an empty table."""
    selected: AsyncEngine = request.getfixturevalue("pg" if request.param == "postgresql" else "sqlite")
    return selected


async def _add(engine: AsyncEngine, *names: str) -> list[int]:
    async with Unit(engine) as unit:
        ids = [(await unit.connection.fetch_value(INSERT, _new(name))) for name in names]
        await unit.commit()
    return ids


# --- the same on both backends ---------------------------------------------------------------------------------


async def test_the_backend_is_chosen_from_the_engine(engine: AsyncEngine) -> None:
    async with Unit(engine, read_only=True) as unit:
        expected = DriverSqlConnection if engine.dialect.name == "postgresql" else SqlAlchemySqlConnection
        assert type(unit.connection) is expected


async def test_insert_select_update_delete_with_returning(engine: AsyncEngine) -> None:
    async with Unit(engine) as unit:
        row = await unit.connection.fetch_one(INSERT, _new("Teclado", "49.99"))
        assert row is not None
        assert row.id == row[0] == 1
        assert (row.nombre, row.precio, row.created_at) == ("Teclado", Decimal("49.99"), NOW)
        assert row._fields == tuple(c.key for c in t.c)
        assert row._asdict()["descripcion"] == "d"
        await unit.connection.fetch_one(INSERT, _new("Ratón", "19.50"))
        await unit.commit()

    async with Unit(engine, read_only=True) as unit:
        got = await unit.connection.fetch_one(GET, {"id": 1})
        assert got is not None and tuple(got) == tuple(row)
        assert await unit.connection.fetch_one(GET, {"id": 99}) is None
        assert await unit.connection.fetch_value(COUNT) == 2
        nombre = select(t.c.nombre).where(t.c.id == bindparam("id"))
        assert await unit.connection.fetch_value(nombre, {"id": 99}) is None
        assert [r.nombre for r in await unit.connection.fetch_all(select(t).order_by(t.c.id))] == ["Teclado", "Ratón"]

    async with Unit(engine, autocommit=True) as unit:
        changed = await unit.connection.fetch_one(SET_PRECIO, {"b_id": 2, "precio": Decimal("21.00")})
        assert changed is not None and tuple(changed) == (2, Decimal("21.00"), 2, 1)  # cambios: onupdate=1
        assert await unit.connection.execute(update(t).values(stock=t.c.stock + 5)) == 2
        none = update(t).where(t.c.id == bindparam("b_id")).values(stock=0)
        assert await unit.connection.execute(none, {"b_id": 9}) == 0
        assert await unit.connection.fetch_value(DELETE, {"id": 1}) == 1
        assert await unit.connection.fetch_all(DELETE, {"id": 1}) == []
        assert await unit.connection.execute(DELETE, {"id": 2}) == 1  # rows RETURNING gave count
        assert await unit.connection.fetch_value(COUNT) == 0


async def test_money_is_exact_both_ways(engine: AsyncEngine) -> None:
    amounts = ["0.01", "0.10", "12345678.91", "99999999.99", "1.05"]
    async with Unit(engine) as unit:
        for index, amount in enumerate(amounts):
            await unit.connection.execute(INSERT, _new(f"p{index}", amount))
        await unit.commit()
    async with Unit(engine, read_only=True) as unit:
        rows = await unit.connection.fetch_all(select(t.c.precio).order_by(t.c.id))
        assert [row.precio for row in rows] == [Decimal(a) for a in amounts]
        assert all(type(row.precio) is Decimal for row in rows)
        stored = await unit.connection.fetch_value(text(f"SELECT precio FROM {t.name} WHERE id = 3"))
        # Stored as the backend's own type: cents on SQLite (Money's bind processor ran), NUMERIC on PostgreSQL.
        assert stored == (1234567891 if engine.dialect.name == "sqlite" else Decimal("12345678.91"))
        # A Money parameter in a WHERE clause goes through the same processor.
        cheap = select(t.c.nombre).where(t.c.precio < bindparam("limite", type_=Money())).order_by(t.c.id)
        assert [r.nombre for r in await unit.connection.fetch_all(cheap, {"limite": Decimal("1.00")})] == ["p0", "p1"]


async def test_utc_datetimes_both_ways_and_naive_ones_refused(engine: AsyncEngine) -> None:
    madrid = timezone(timedelta(hours=1))
    async with Unit(engine) as unit:
        row = await unit.connection.fetch_one(INSERT, _new("a") | {"now": datetime(2026, 1, 1, 13, 0, tzinfo=madrid)})
        assert row is not None
        assert row.created_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        assert row.created_at.utcoffset() == timedelta(0)
        with pytest.raises(StatementError) as raised:
            await unit.connection.execute(INSERT, _new("b") | {"now": datetime(2026, 1, 1, 12, 0)})
        assert isinstance(raised.value.orig, ValueError)
        assert "naive datetime" in str(raised.value)
        literal = insert(t).values(nombre="c", precio=Decimal(1), created_at=datetime(2026, 1, 1), updated_at=NOW)
        with pytest.raises(StatementError):
            await unit.connection.execute(literal)
        await unit.commit()
    async with Unit(engine, read_only=True) as unit:
        assert await unit.connection.fetch_value(COUNT) == 1


async def test_column_types_process_values_the_driver_leaves_as_they_are(engine: AsyncEngine) -> None:
    """Off SQLite the types' processors are single functions (types.py): they still put UTC on a naive timestamp
    column's values and refuse naive datetimes, and leave decimals and aware datetimes as they are."""
    naive = "'2026-01-01 12:00'::timestamp" if engine.dialect.name == "postgresql" else "'2026-01-01 12:00:00.000000'"
    query = text(f"SELECT {naive} AS at, NULL AS missing, 2 AS amount").columns(
        at=UtcDateTime(), missing=UtcDateTime(), amount=Money()
    )
    async with Unit(engine, read_only=True) as unit:
        row = await unit.connection.fetch_one(query)
    assert row is not None
    assert row.at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC) and row.missing is None
    dialect = engine.sync_engine.dialect
    if dialect.name == "postgresql":
        assert row.amount == 2
        assert Money().dialect_impl(dialect).bind_processor(dialect) is None  # the Decimal as it is
        bind = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
        assert bind is not None
        with pytest.raises(ValueError, match="naive datetime"):
            bind(datetime(2026, 1, 1))
        aware = datetime(2026, 1, 1, tzinfo=madrid_time)
        assert bind(aware) is aware and bind(None) is None
    else:
        assert row.amount == Decimal("0.02")  # integer cents


madrid_time = timezone(timedelta(hours=1))


async def test_literal_values_in_statements_are_honoured(engine: AsyncEngine) -> None:
    await _add(engine, "uno", "dos", "tres")
    second = select(t.c.nombre).where(t.c.id == 2)
    literal_insert = (
        insert(t)
        .values(nombre="cuatro", precio=Decimal("4.40"), version=7, created_at=NOW, updated_at=NOW)
        .returning(t.c.id, t.c.version, t.c.precio)
    )
    async with Unit(engine) as unit:
        assert await unit.connection.fetch_value(second) == "dos"
        assert await unit.connection.fetch_value(second) == "dos"  # the cached path keeps the value
        for wanted in (1, 3):  # the same shape with other values: each statement's own
            assert await unit.connection.fetch_value(select(t.c.id).where(t.c.id == wanted)) == wanted
        assert tuple(await unit.connection.fetch_one(literal_insert) or ()) == (4, 7, Decimal("4.40"))
        for index in range(3):  # INSERT built anew with per-call values: one shape, each statement's own values
            row = {"nombre": f"nuevo {index}", "precio": Decimal(f"{index}.25"), "created_at": NOW, "updated_at": NOW}
            anew = insert(t).values(**row).returning(t.c.nombre, t.c.precio, t.c.slug)
            expected = (row["nombre"], row["precio"], f"nuevo-{index}")
            assert tuple(await unit.connection.fetch_one(anew) or ()) == expected
        page = select(t.c.id).where(t.c.id > bindparam("after")).order_by(t.c.id).limit(2)
        assert [r.id for r in await unit.connection.fetch_all(page, {"after": 1})] == [2, 3]
        assert [r[0] for r in await unit.connection.fetch_all(page.limit(1), {"after": 0})] == [1]
        await unit.commit()


async def test_python_column_defaults_are_honoured(engine: AsyncEngine) -> None:
    async with Unit(engine, autocommit=True) as unit:
        row = await unit.connection.fetch_one(INSERT, _new("Silla Alta"))
        assert row is not None
        assert (row.stock, row.version, row.codigo, row.slug, row.cambios) == (0, 1, "sin-codigo", "silla-alta", 0)
        # A value given for a defaulted column wins over the default.
        explicit = insert(t).values(stock=5, codigo="X-1", slug="s").returning(t.c.stock, t.c.codigo, t.c.slug)
        given = await unit.connection.fetch_one(explicit, _new("Mesa") | {"created_at": NOW, "updated_at": NOW})
        assert given is not None and tuple(given) == (5, "X-1", "s")


async def test_parameters_named_after_columns_add_them_to_insert_and_update(engine: AsyncEngine) -> None:
    bare_insert = insert(t).returning(t.c.id, t.c.stock, t.c.descripcion)
    values = {"nombre": "a", "precio": Decimal(1), "created_at": NOW, "updated_at": NOW}
    touch = update(t).where(t.c.id == bindparam("b_id")).returning(t.c.stock, t.c.descripcion)
    async with Unit(engine, autocommit=True) as unit:
        first = await unit.connection.fetch_one(bare_insert, values)
        second = await unit.connection.fetch_one(bare_insert, values | {"nombre": "b", "stock": 9})
        assert first is not None and second is not None
        assert (first.stock, second.stock) == (0, 9)
        assert tuple(await unit.connection.fetch_one(touch, {"b_id": 2, "descripcion": "nueva"}) or ()) == (9, "nueva")
        assert tuple(await unit.connection.fetch_one(touch, {"b_id": 2, "stock": 1}) or ()) == (1, "nueva")


async def test_nulls(engine: AsyncEngine) -> None:
    async with Unit(engine, autocommit=True) as unit:
        row = await unit.connection.fetch_one(INSERT, _new("sin descripción", descripcion=None))
        assert row is not None and row.descripcion is None
        without = select(t.c.id).where(t.c.descripcion.is_(None))
        assert await unit.connection.fetch_value(without) == row.id
        set_null = update(t).values(descripcion=bindparam("d")).returning(t.c.descripcion)
        assert await unit.connection.fetch_value(set_null, {"d": None}) is None


async def test_expanding_in(engine: AsyncEngine) -> None:
    await _add(engine, "uno", "dos", "tres", "cuatro")
    async with Unit(engine, read_only=True) as unit:
        for ids, expected in (([1, 3], [1, 3]), ([4, 2, 9], [2, 4]), ([2], [2]), ([], [])):
            assert [row.id for row in await unit.connection.fetch_all(BY_IDS, {"ids": ids})] == expected
        literal = select(t.c.nombre).where(t.c.id.in_([2, 3])).order_by(t.c.id)
        assert [row.nombre for row in await unit.connection.fetch_all(literal)] == ["dos", "tres"]
        money = select(t.c.id).where(t.c.precio.in_(bindparam("precios", expanding=True)))
        assert len(await unit.connection.fetch_all(money, {"precios": [Decimal("9.99")]})) == 4


async def test_text_statements(engine: AsyncEngine) -> None:
    await _add(engine, "uno", "dos")
    async with Unit(engine, read_only=True) as unit:
        statement = text(f"SELECT id, nombre AS name FROM {t.name} WHERE id > :after ORDER BY id")
        rows = await unit.connection.fetch_all(statement, {"after": 0})
        assert [(row.id, row.name) for row in rows] == [(1, "uno"), (2, "dos")]
        assert rows[0]._fields == ("id", "name")


async def test_bind_values_callables_and_params(engine: AsyncEngine) -> None:
    await _add(engine, "uno", "dos")
    calls: list[int] = []

    def next_id() -> int:
        calls.append(1)
        return len(calls)

    by_callable = select(t.c.nombre).where(t.c.id == bindparam("id", callable_=next_id))
    defaulted = select(t.c.nombre).where(t.c.id == bindparam("id", 2))
    async with Unit(engine, read_only=True) as unit:
        # Called on every execution, as SQLAlchemy does.
        assert [await unit.connection.fetch_value(by_callable) for _ in range(2)] == ["uno", "dos"]
        assert await unit.connection.fetch_value(defaulted) == "dos"
        assert await unit.connection.fetch_value(defaulted, {"id": 1}) == "uno"  # params win over the value
        assert await unit.connection.fetch_value(GET.with_only_columns(t.c.nombre).params(id=2)) == "dos"


async def test_mistakes_are_refused_as_sqlalchemy_refuses_them(engine: AsyncEngine) -> None:
    async with Unit(engine, read_only=True) as unit:
        with pytest.raises(StatementError) as raised:
            await unit.connection.fetch_one(GET)
        assert isinstance(raised.value.orig, InvalidRequestError)
        assert "A value is required for bind parameter 'id'" in str(raised.value)
    async with Unit(engine) as unit:
        no_returning = insert(t).values(nombre="x", precio=Decimal(1), created_at=NOW, updated_at=NOW)
        with pytest.raises(ResourceClosedError):
            await unit.connection.fetch_one(no_returning)


async def test_a_unique_violation_is_a_conflict(engine: AsyncEngine) -> None:
    await _add(engine, "único")
    async with Unit(engine, autocommit=True) as unit:
        with pytest.raises(ConflictError):
            await unit.connection.execute(INSERT, _new("único"))
        assert await unit.connection.fetch_value(COUNT) == 1


async def test_transactions(engine: AsyncEngine) -> None:
    async with Unit(engine) as unit:
        await unit.connection.execute(INSERT, _new("sin commit"))
    async with Unit(engine) as unit:
        await unit.connection.execute(INSERT, _new("con commit"))
        await unit.commit()
    async with Unit(engine) as unit:
        await unit.connection.execute(INSERT, _new("deshecho"))
        await unit.rollback()
    async with Unit(engine, read_only=True) as unit:
        assert [r.nombre for r in await unit.connection.fetch_all(select(t.c.nombre))] == ["con commit"]


async def test_the_factory_makes_units_of_the_subclass(engine: AsyncEngine) -> None:
    factory = Unit.factory(engine, acquire_timeout=2.0)
    assert_type(factory, EngineUnitOfWorkFactory[Unit])
    unit = factory(read_only=True)
    assert_type(unit, Unit)
    async with unit:
        assert await unit.connection.fetch_value(COUNT) == 0


async def test_a_failing_bind_gives_the_connection_back(engine: AsyncEngine) -> None:
    class Broken(SqlUnitOfWork):
        def _bind(self, connection: SqlConnection) -> None:
            raise RuntimeError("repository set-up failed")

    for _ in range(3):  # more than the pool holds
        with pytest.raises(RuntimeError):
            async with Broken(engine):
                pass
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


# --- the asyncpg path ------------------------------------------------------------------------------------------


async def test_a_statement_is_compiled_once_per_shape(pg: AsyncEngine) -> None:
    cache = statement_cache(pg)
    await _add(pg, "uno", "dos")
    async with Unit(pg, read_only=True) as unit:
        statement = select(t.c.nombre).where(t.c.id == bindparam("id")).where(t.c.stock >= 0)
        before = cache.compilations
        for _ in range(3):
            assert await unit.connection.fetch_value(statement, {"id": 1}) == "uno"
        assert cache.compilations == before + 1
        # Built anew on each call, with other literal values: the same shape, compiled once more in all.
        for wanted, name in ((1, "uno"), (2, "dos"), (1, "uno")):
            anew = select(t.c.nombre).where(t.c.id == wanted).where(t.c.stock >= 0)
            assert await unit.connection.fetch_value(anew) == name
        assert cache.compilations == before + 2


async def test_statements_built_anew_do_not_pile_up(pg: AsyncEngine) -> None:
    cache = statement_cache(pg)
    await _add(pg, "uno")
    async with Unit(pg, read_only=True) as unit:
        await unit.connection.fetch_value(select(t.c.id).where(t.c.nombre == "uno"))
        gc.collect()
        remembered = len(cache)
        for _ in range(50):
            assert await unit.connection.fetch_value(select(t.c.id).where(t.c.nombre == "uno")) == 1
        gc.collect()
        assert len(cache) <= remembered


@pytest.fixture
async def driver(pg: AsyncEngine) -> AsyncIterator[DriverConnection]:
    connection = await DriverConnection.checkout(pg)
    yield connection
    await connection.release()


async def test_the_caches_are_bounded(pg: AsyncEngine, driver: DriverConnection) -> None:
    await _add(pg, *(f"p{i}" for i in range(1, 11)))
    cache = StatementCache(pg.dialect, max_statements=4, max_shapes=3)
    connection = DriverSqlConnection(driver, cache)
    # Ten shapes (one more condition each), all kept alive: more than either cache holds.
    statements = [
        select(t.c.nombre).where(t.c.id == bindparam("id"), *(t.c.stock >= -k for k in range(i))) for i in range(1, 11)
    ]
    for _ in range(2):
        for index, statement in enumerate(statements, start=1):
            assert await connection.fetch_value(statement, {"id": index}) == f"p{index}"
            assert len(cache) <= 4 and cache.shapes <= 3
    assert cache.compilations == 20  # every one evicted before its next use
    # Parameter-name variants of one INSERT are bounded too.
    bare = insert(t).returning(t.c.id)
    small = StatementCache(pg.dialect, max_variants=2)
    connection = DriverSqlConnection(driver, small)
    base = {"precio": Decimal(1), "created_at": NOW, "updated_at": NOW}
    extras: list[dict[str, Any]] = [{}, {"stock": 1}, {"version": 2}, {"descripcion": "d"}]
    for index, extra in enumerate(extras):
        await connection.execute(bare, base | {"nombre": f"v{index}"} | extra)
    assert len(small) == 1


async def test_statement_listeners_time_every_statement(pg: AsyncEngine) -> None:
    heard: list[tuple[str, int, BaseException | None]] = []
    add_statement_listener(pg, lambda statement, elapsed, error: heard.append((statement, elapsed, error)))
    await _add(pg, "único")
    async with Unit(pg, autocommit=True) as unit:
        assert await unit.connection.fetch_one(GET, {"id": 1}) is not None
        with pytest.raises(ConflictError):
            await unit.connection.execute(INSERT, _new("único"))
    statements = [statement for statement, _, _ in heard]
    insert_sql = statement_cache(pg).sql(INSERT, _new("x"))
    assert statements == ["BEGIN ISOLATION LEVEL READ COMMITTED", insert_sql, "COMMIT", heard[3][0], insert_sql]
    assert heard[3][0].startswith("SELECT") and "$1" in heard[3][0]
    assert all(elapsed > 0 for _, elapsed, _ in heard)
    assert isinstance(heard[-1][2], asyncpg.UniqueViolationError)


async def _terminate(pid: int) -> None:
    """End backend ``pid`` as a server shutdown or a failover does, and wait until it is gone."""
    admin = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        for _ in range(100):
            if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                return
            await asyncio.sleep(0.02)
        pytest.fail(f"backend {pid} did not end")
    finally:
        await admin.close()


async def test_a_terminated_backend_is_database_unavailable(pg: AsyncEngine) -> None:
    await _add(pg, "uno")
    async with Unit(pg, read_only=True) as unit:
        pid = await unit.connection.fetch_value(text("SELECT pg_backend_pid()"))
        await _terminate(pid)
        await asyncio.sleep(0.1)  # the client reads the server's goodbye and the end of the stream
        with pytest.raises(DatabaseUnavailableError):
            await unit.connection.fetch_one(GET, {"id": 1})
    assert pg.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    async with Unit(pg, read_only=True) as unit:  # the next unit gets a live connection
        assert await unit.connection.fetch_value(text("SELECT pg_backend_pid()")) != pid
        assert await unit.connection.fetch_value(COUNT) == 1


async def test_a_backend_terminated_mid_statement_is_database_unavailable(pg: AsyncEngine) -> None:
    async with Unit(pg, read_only=True) as unit:
        pid = await unit.connection.fetch_value(text("SELECT pg_backend_pid()"))
        slow = asyncio.create_task(unit.connection.fetch_value(select(func.pg_sleep(2))))
        await asyncio.sleep(0.2)
        await _terminate(pid)
        with pytest.raises(DatabaseUnavailableError) as raised:
            await slow
        assert isinstance(raised.value.__cause__, asyncpg.PostgresConnectionError | asyncpg.AdminShutdownError)
    assert pg.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_commit_after_a_failed_statement_refuses_to_pretend(pg: AsyncEngine) -> None:
    await _add(pg, "único")
    async with Unit(pg) as unit:
        await unit.connection.execute(INSERT, _new("otro"))
        with pytest.raises(ConflictError):
            await unit.connection.execute(INSERT, _new("único"))
        with pytest.raises(RuntimeError, match="nothing was committed"):
            await unit.commit()
    async with Unit(pg, read_only=True) as unit:
        assert await unit.connection.fetch_value(COUNT) == 1


async def test_an_unreachable_database_is_unavailable() -> None:
    engine = create_engine(make_settings("postgresql://postgres@127.0.0.1:1/test"))
    try:
        with pytest.raises(DatabaseUnavailableError):
            async with Unit(engine, read_only=True):
                pass
    finally:
        await engine.dispose()


def test_row_access_costs_what_a_namedtuple_costs() -> None:
    """Rows of the asyncpg path: attribute access through a C getter, no ``__getattr__`` on the way."""
    from productos.infra.db.statements import _row_type

    row_type = _row_type(("id", "nombre", "count", "id"))
    row = tuple.__new__(row_type, (1, "a", 3, 4))
    assert (row[0], row.nombre, row._fields) == (1, "a", ("id", "nombre", "count", "id"))
    assert row.count(1) == 1  # as on SQLAlchemy's rows, the tuple's methods win
    with pytest.raises(InvalidRequestError, match="Ambiguous column name 'id'"):
        _ = row.id
