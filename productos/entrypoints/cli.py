"""The ``productos`` command: serve, migrate, check, aws, new.

Exit codes: 0 done, 1 failed (a check, a migration, an AWS request), 2 usage error, 3 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from productos.domain.errors import ConcurrentUpdateError, ConfigurationError, DatabaseUnavailableError
from productos.version import __version__

#: Exit codes, as documented in the README and in ``productos --help``.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIGURATION = 0, 1, 2, 3

_DESCRIPTION = "Run and operate FastAPI services built on the productos library."
_EPILOG = """\
exit codes: 0 done, 1 failed (a check, a migration, an AWS request), 2 usage error, 3 configuration error.
Run `productos COMMAND --help` for a command's options.
"""

#: The products service, named by its entry points, never imported: the CLI serves and migrates any service.
DEFAULT_APP = "productos.main:app"
DEFAULT_MIGRATIONS = "productos.services.productos:migrations"


def _serve(args: argparse.Namespace) -> int:
    overrides = {"APP_HOST": args.host, "APP_PORT": args.port, "WORKERS": args.workers}
    env = {**os.environ, **{k: str(v) for k, v in overrides.items() if v is not None}}
    if args.reload:
        import uvicorn

        from productos.observability.logging import logging_config
        from productos.settings import Settings

        settings = Settings()
        uvicorn.run(
            args.app,
            host=args.host or settings.app_host,
            port=args.port or settings.app_port,
            reload=True,
            log_config=logging_config(settings.log_level, settings.log_format),
            access_log=False,
        )
        return 0
    command = [sys.executable, "-m", "gunicorn", "-c", "python:productos.gunicorn_conf", args.app]
    os.execve(sys.executable, command, env)  # noqa: S606 - replaces this process with gunicorn
    return 0  # pragma: no cover


def _migrate(args: argparse.Namespace) -> int:
    from productos.infra.db.migrate import upgrade_to_head
    from productos.infra.db.roles import ROW_PRIVILEGES, RowRole, RowRoleReport
    from productos.runtime.bootstrap import open_migration_engine
    from productos.runtime.settings_loader import open_settings

    async def run() -> RowRoleReport | None:
        # DATABASE_MIGRATE_URL (the schema owner, straight to PostgreSQL) when set, else DATABASE_URL; either
        # logs in as the service does: the secret's rotating credentials or RDS IAM tokens when configured
        # (PRODUCTOS_MIGRATE_SECRET_ID's login for DATABASE_MIGRATE_URL).
        async with (
            open_settings() as resolved,
            open_migration_engine(
                resolved.settings, aws=resolved.aws, secret=resolved.secret, migrate_secret=resolved.migrate_secret
            ) as engine,
        ):
            return await upgrade_to_head(
                engine,
                script_location=args.script_location,
                version_table=args.version_table,
                row_role=RowRole.from_settings(resolved.settings),
                wait=args.wait,
            )

    from productos.infra.db.uow import translate_db_errors

    async def guarded() -> RowRoleReport | None:
        async with translate_db_errors():
            return await run()

    try:
        report = asyncio.run(guarded())
    except DatabaseUnavailableError as exc:
        from productos.entrypoints.check import pooler_hint

        cause = f" ({exc.reason})" if exc.reason else ""
        hint = pooler_hint(exc) or "`productos check` shows the DNS, TCP and login steps"
        print(f"cannot reach the database{cause}; hint: {hint}", file=sys.stderr)
        return EXIT_FAILED
    except ConcurrentUpdateError as exc:
        print(f"migration not applied: {exc}; nothing was changed, run it again", file=sys.stderr)
        return EXIT_FAILED
    print("database upgraded to head")
    if report is not None:
        done = [
            part for part, happened in (("created", report.created), ("password set", report.password_set)) if happened
        ]
        status = f" ({', '.join(done)})" if done else ""
        print(f"the service's login {report.name!r}{status}: {ROW_PRIVILEGES} on {len(report.tables)} table(s)")
        for warning in report.warnings:
            # What lets that login do more than rows: the migration succeeded, but least privilege did not.
            print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from productos.entrypoints.check import run_check
    from productos.infra.db.migrate import Migrations

    migrations = Migrations(args.script_location, args.version_table)
    return asyncio.run(run_check(migrations, as_json=args.json, out=sys.stdout))


def _migrations_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--script-location",
        default=DEFAULT_MIGRATIONS,
        help="the service's migrations, as package:folder (default: the products service's)",
    )
    parser.add_argument("--version-table", default="alembic_version", help="that service's Alembic version table")


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 <= seconds <= 3600:
        raise argparse.ArgumentTypeError("give 0 to 3600 seconds")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="productos",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"productos {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    serve = commands.add_parser("serve", help="run the service under gunicorn (the tuned configuration)")
    serve.add_argument("--reload", action="store_true", help="development: one uvicorn process, reload on change")
    serve.add_argument("--host", help="bind address (APP_HOST)")
    serve.add_argument("--port", type=int, help="port (APP_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (WORKERS)")
    serve.add_argument("--app", default=DEFAULT_APP, help=f"ASGI app to serve (default {DEFAULT_APP})")
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser(
        "migrate",
        help="upgrade the database to the newest migration, as the schema owner",
        description=(
            "Upgrade the database to the newest migration, as the schema owner (DATABASE_MIGRATE_URL, else "
            "DATABASE_URL). When DATABASE_URL logs in as another user, make that user a role that may only read "
            "and write rows (DB_APP_ROLE=auto)."
        ),
    )
    _migrations_arguments(migrate)
    migrate.add_argument(
        "--wait",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help=(
            "wait up to SECONDS for the database to accept connections (a database still coming up), trying "
            "again with a growing pause; a refused login fails at once (default 0: try once)"
        ),
    )
    migrate.set_defaults(handler=_migrate)

    check = commands.add_parser("check", help="diagnose configuration and database reachability")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    _migrations_arguments(check)
    check.set_defaults(handler=_check)

    from productos.entrypoints.aws_cli import register as register_aws
    from productos.entrypoints.new import register as register_new

    register_aws(commands)
    register_new(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``); its exit code. Usage errors exit 2 (argparse)."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIGURATION
    return code


if __name__ == "__main__":
    raise SystemExit(main())
