"""``productos check``: the troubleshooting section of the guide, done by a program.

Is the configuration complete, and can this instance reach its database, and if not, why? It resolves the
settings (secrets masked, each with its source), then times DNS, TCP, the database login and a query, checks
that the worst case of the pools' connections fits the connection budget (``productos.entrypoints.budget``) and
that migrations are at head, and ends with a verdict. Exit status 0 when everything passed, 1 otherwise, 2 when
the configuration itself is invalid.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from productos.domain.errors import ConfigurationError
from productos.entrypoints.budget import budget_hint, check_budget
from productos.infra.db.engine import SessionLimits, behind_pooler, transactional
from productos.infra.db.migrate import Migrations, alembic_config
from productos.infra.db.replica import LAGGING, classify
from productos.infra.db.replica_lag import LAG_QUERY
from productos.infra.db.url import DatabaseTarget, parse_database_url
from productos.runtime.bootstrap import open_engine
from productos.runtime.settings_loader import ResolvedSettings, open_settings
from productos.settings import Settings, env_names


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    ms: float | None = None
    hint: str | None = None


def _masked(field_name: str, value: Any) -> str:
    if isinstance(value, SecretStr):
        if field_name in ("database_url", "database_migrate_url", "database_read_url"):
            try:
                return make_url(value.get_secret_value()).render_as_string(hide_password=True)
            except Exception:
                return "**********"
        return "**********"
    return str(value)


def settings_rows(resolved: ResolvedSettings) -> list[dict[str, str]]:
    names = {field: env for env, field in env_names().items()}
    return [
        {
            "name": names[field],
            "value": _masked(field, getattr(resolved.settings, field)),
            "source": resolved.sources[field],
        }
        for field in Settings.model_fields
    ]


async def _timed(name: str, action: Callable[[], Awaitable[str]], hint: Callable[[BaseException], str]) -> Step:
    start = time.perf_counter()
    try:
        detail = await action()
    except Exception as exc:
        ms = (time.perf_counter() - start) * 1000
        return Step(name, False, _describe(exc), round(ms, 1), hint(exc))
    return Step(name, True, detail, round((time.perf_counter() - start) * 1000, 1))


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    while cause is not None and type(exc).__module__.startswith("sqlalchemy"):
        exc, cause = cause, cause.__cause__ or cause.__context__
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def pooler_hint(exc: BaseException) -> str | None:
    """What to set when ``exc`` (or what it was raised from) is a connection pooler's refusal; else ``None``."""
    seen: BaseException | None = exc
    while seen is not None:
        text_ = str(seen).lower()
        if "unsupported startup parameter" in text_:
            return (
                "a connection pooler (PgBouncer in transaction mode) refused the session settings sent at login: "
                "set DB_POOLER=transaction for URLs that lead to it"
            )
        if "not allowed in statement pooling mode" in text_:
            return (
                "PgBouncer's pool_mode=statement refuses transactions, which units of work need: "
                "use pool_mode=transaction, with DB_POOLER=transaction"
            )
        if "prepared statement" in text_ and ("already exists" in text_ or "does not exist" in text_):
            return (
                "named prepared statements met another client's on a pooler's shared server connections: "
                "set DB_POOLER=transaction for URLs that lead to a transaction-mode pooler"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _login_hint(exc: BaseException) -> str:
    pooler = pooler_hint(exc)
    if pooler is not None:
        return pooler
    text_ = _describe(exc).lower()
    if "password" in text_ or "authentication" in text_:
        return (
            "the server refused the login: check the user and password in DATABASE_URL or the secret "
            "(PRODUCTOS_SECRET_ID) — after a rotation, the secret must hold the new password"
        )
    if "does not exist" in text_:
        return "the database or role does not exist: check the database name and user in DATABASE_URL"
    if "no pg_hba.conf entry" in text_ or "ssl" in text_:
        return "the server requires TLS or refuses this client: add ?sslmode=require to DATABASE_URL"
    if isinstance(exc, TimeoutError) or "timeout" in text_:
        return "TCP works but the login timed out: the server is overloaded or hung; check RDS metrics"
    return "the database refused the connection: see the error above"


async def _database_steps(resolved: ResolvedSettings, target: DatabaseTarget, migrations: Migrations) -> list[Step]:
    settings = resolved.settings
    if target.dialect == "sqlite":
        return await _sqlite_steps(resolved, target, migrations)
    host = target.url.host or "localhost"
    port = target.url.port or 5432
    timeout = settings.db_connect_timeout
    steps: list[Step] = []
    addresses: list[str] = []

    async def dns() -> str:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
        )
        addresses.extend(dict.fromkeys(str(info[4][0]) for info in infos))
        return f"{host} → {', '.join(addresses)}"

    steps.append(
        await _timed(
            "dns",
            dns,
            lambda _: f"{host} does not resolve: check the RDS endpoint in DATABASE_URL and the VPC's DNS settings",
        )
    )
    if not steps[-1].ok:
        return steps

    async def tcp() -> str:
        _, writer = await asyncio.wait_for(asyncio.open_connection(addresses[0], port), timeout)
        writer.close()
        await writer.wait_closed()
        return f"{addresses[0]}:{port} accepts connections"

    def tcp_hint(exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return (
                f"no answer from {addresses[0]}:{port} within {timeout:g} s: the RDS security group must allow "
                f"TCP {port} from this instance's security group (and subnets/NACLs must route it)"
            )
        if isinstance(exc, ConnectionRefusedError):
            return f"{addresses[0]} answered but nothing listens on {port}: check the port and that the database is up"
        return "the network refused the connection: check routing between this instance and the database"

    steps.append(await _timed("tcp", tcp, tcp_hint))
    if not steps[-1].ok:
        return steps
    steps.extend(await _engine_steps(resolved, migrations))
    return steps


async def _sqlite_steps(resolved: ResolvedSettings, target: DatabaseTarget, migrations: Migrations) -> list[Step]:
    database = target.url.database
    if database and database != ":memory:" and resolved.settings.should_migrate_on_start:
        path = await asyncio.to_thread(lambda: Path(database).resolve())
        if not await asyncio.to_thread(path.exists):
            # A first run of the embedded default: opening it here would create an empty file.
            detail = f"{path} does not exist yet: `productos serve` creates it and applies the migrations at start"
            folder_ok = await asyncio.to_thread(lambda: path.parent.is_dir() and os.access(path.parent, os.W_OK))
            if folder_ok:
                return [Step("file", True, detail)]
            return [Step("file", False, f"{path.parent} is missing or not writable", hint="create the folder")]
    if database and database != ":memory:":
        folder = await asyncio.to_thread(lambda: Path(database).resolve().parent)
        if not await asyncio.to_thread(lambda: folder.is_dir() and os.access(folder, os.W_OK)):
            return [
                Step(
                    "file",
                    False,
                    f"{folder} is missing or not writable",
                    hint="create the folder or fix its permissions",
                )
            ]
    return await _engine_steps(resolved, migrations)


async def _engine_steps(resolved: ResolvedSettings, migrations: Migrations) -> list[Step]:
    settings = resolved.settings
    steps: list[Step] = []
    async with AsyncExitStack() as stack:
        # The engine the service would use: with the secret's rotating login or RDS IAM tokens when configured.
        try:
            engine = await stack.enter_async_context(open_engine(settings, aws=resolved.aws, secret=resolved.secret))
        except Exception as exc:
            return [
                Step(
                    "login",
                    False,
                    _describe(exc),
                    hint="the login (secret or IAM token) could not be prepared",
                )
            ]
        conn_holder: list[Any] = []

        async def login() -> str:
            conn = await asyncio.wait_for(engine.connect(), settings.db_connect_timeout + 1)
            conn_holder.append(conn)
            if engine.dialect.name == "postgresql":
                row = (await conn.execute(text("SELECT current_user, current_setting('server_version')"))).one()
                return f"logged in as {row[0]}, PostgreSQL {row[1]}"
            return "opened the SQLite database"

        steps.append(await _timed("login", login, _login_hint))
        if not steps[-1].ok:
            return steps
        conn = conn_holder[0]

        async def query() -> str:
            await conn.execute(text("SELECT 1"))
            return "SELECT 1"

        steps.append(
            await _timed(
                "query", query, lambda exc: pooler_hint(exc) or "the database accepted the login but not a query"
            )
        )
        if engine.dialect.name == "postgresql":
            steps.append(await _timed("limits", lambda: _limits(engine, settings), _limits_hint))
            steps.append(await _timed("budget", lambda: check_budget(settings, conn, aws=resolved.aws), budget_hint))

        async def schema() -> str:
            from alembic.migration import MigrationContext
            from alembic.script import ScriptDirectory

            config = alembic_config(migrations.script_location, migrations.version_table)
            head = ScriptDirectory.from_config(config).get_current_head()
            options = {"version_table": migrations.version_table}
            current = await conn.run_sync(lambda c: MigrationContext.configure(c, opts=options).get_current_revision())
            if current != head and settings.is_sqlite and settings.should_migrate_on_start:
                return f"schema at {current or 'nothing'}: `productos serve` migrates it to {head} at start"
            if current != head:
                raise RuntimeError(f"schema at {current or 'nothing'}, newest is {head}")
            return f"migrations at head ({head})"

        steps.append(await _timed("schema", schema, lambda _: "run `productos migrate`"))
        await conn.close()
    return steps


async def _limits(engine: AsyncEngine, settings: Settings) -> str:
    """The session limits where a unit of work's statements run: in a transaction of a new connection."""
    expected = SessionLimits.from_settings(settings).server_settings()
    async with transactional(engine).connect() as conn, conn.begin():
        rows = await conn.execute(
            text("SELECT name, setting FROM pg_settings WHERE name = ANY(:names)"), {"names": list(expected)}
        )
        actual = {str(name): str(value) for name, value in rows}
    wrong = [
        f"{name} is {actual.get(name)} ms, not {value} ms"
        for name, value in expected.items()
        if actual.get(name) != value
    ]
    if wrong:
        raise SessionLimitsNotInEffect("; ".join(wrong))
    how = "set per transaction (DB_POOLER=transaction)" if behind_pooler(engine) else "set at login"
    return ", ".join(f"{name} {value} ms" for name, value in expected.items()) + f": {how}"


class SessionLimitsNotInEffect(Exception):
    """The session limits a unit of work would run under are not the settings'."""


def _limits_hint(exc: BaseException) -> str:
    if isinstance(exc, SessionLimitsNotInEffect):
        return (
            "the session limits sent at login are not in effect: a pooler in the way drops them (PgBouncer's "
            "ignore_startup_parameters)? set DB_POOLER=transaction for URLs that lead to a transaction-mode pooler"
        )
    return pooler_hint(exc) or "the database accepted the login but not a transaction"


async def _replica_step(resolved: ResolvedSettings) -> Step:
    """``DATABASE_READ_URL``: a login to the read replica, and its state as the service's samples would see it."""
    settings = resolved.settings
    async with AsyncExitStack() as stack:
        try:
            engine = await stack.enter_async_context(
                open_engine(settings, aws=resolved.aws, secret=resolved.secret, url=settings.database_read_url)
            )
        except Exception as exc:
            return Step(
                "replica", False, _describe(exc), hint="the replica's login (secret or IAM token) could not be prepared"
            )

        async def sample() -> str:
            async with asyncio.timeout(settings.db_connect_timeout + 1), engine.connect() as conn:
                in_recovery, lag = (await conn.execute(text(LAG_QUERY))).one()
            state, reason = classify(in_recovery=in_recovery, lag=lag, max_lag=settings.db_read_max_lag)
            where = f"{engine.url.host or 'localhost'}:{engine.url.port or 5432}"
            if not in_recovery:
                return f"{where} is not in recovery (promoted?): it serves reads, writes go to DATABASE_URL"
            if state == LAGGING:
                return f"{where} {state}: {reason}; reads go to DATABASE_URL until it catches up"
            return f"{where} {state}: a standby {lag:.1f} s behind (DB_READ_MAX_LAG {settings.db_read_max_lag:g} s)"

        return await _timed("replica", sample, _replica_hint)


def _replica_hint(exc: BaseException) -> str:
    pooler = pooler_hint(exc)
    if pooler is not None:
        return pooler
    if isinstance(exc, OSError | TimeoutError) or "connect" in _describe(exc).lower():
        return (
            "the read replica does not answer: check DATABASE_READ_URL's host and port, and that its security group "
            "allows this instance; meanwhile the service reads from DATABASE_URL"
        )
    return _login_hint(exc).replace("DATABASE_URL", "DATABASE_READ_URL")


def _remote_step(resolved: ResolvedSettings, settings_ms: float) -> Step | None:
    remote = sorted({source.split(":", 1)[0] for source in resolved.sources.values() if ":" in source})
    if not (resolved.settings.ssm_path or resolved.settings.secret_id):
        return None
    where = ", ".join(remote) or "nothing"
    return Step("aws", True, f"settings read from {where}", settings_ms)


async def run_check(migrations: Migrations, *, as_json: bool = False, out: TextIO) -> int:
    """Run every check, print the report to ``out`` and return the exit status."""
    started = time.perf_counter()
    async with AsyncExitStack() as stack:
        try:
            # The AWS clients and cached secret stay open for the database steps, as in the service.
            resolved = await stack.enter_async_context(open_settings())
        except ConfigurationError as exc:
            report = {"verdict": "invalid configuration", "error": str(exc)}
            out.write(json.dumps(report) + "\n" if as_json else f"configuration: FAILED\n  {exc}\n")
            return 3  # the CLI's configuration-error exit code
        settings_ms = round((time.perf_counter() - started) * 1000, 1)
        steps = [step for step in [_remote_step(resolved, settings_ms)] if step is not None]
        try:
            target = parse_database_url(resolved.settings.database_url.get_secret_value())
        except ConfigurationError as exc:
            steps.append(Step("url", False, str(exc), hint="fix DATABASE_URL"))
        else:
            steps.extend(await _database_steps(resolved, target, migrations))
            if resolved.settings.database_read_url is not None:
                steps.append(await _replica_step(resolved))
    return _report(settings_rows(resolved), steps, settings_ms, as_json=as_json, out=out)


def _report(rows: list[dict[str, str]], steps: list[Step], settings_ms: float, *, as_json: bool, out: TextIO) -> int:
    ok = all(step.ok for step in steps)
    if as_json:
        report = {
            "verdict": "ok" if ok else "failed",
            "settings_ms": settings_ms,
            "settings": rows,
            "checks": [asdict(step) for step in steps],
        }
        out.write(json.dumps(report, indent=2) + "\n")
        return 0 if ok else 1
    width = max(len(row["name"]) for row in rows)
    out.write(f"settings (resolved in {settings_ms} ms)\n")
    for row in rows:
        out.write(f"  {row['name']:<{width}}  {row['value']}  [{row['source']}]\n")
    out.write("checks\n")
    for step in steps:
        timing = f"  {step.ms} ms" if step.ms is not None else ""
        out.write(f"  {'ok  ' if step.ok else 'FAIL'}  {step.name:<6}  {step.detail}{timing}\n")
        if step.hint:
            out.write(f"        hint: {step.hint}\n")
    out.write("verdict: OK\n" if ok else "verdict: FAILED\n")
    return 0 if ok else 1
