"""PgBouncer in front of a PostgreSQL server, for tests that must hold behind a transaction-mode pooler.

``PgBouncer(server_url)`` writes a configuration (``pool_mode = transaction``; every other setting is PgBouncer's
default unless given), starts the ``pgbouncer`` binary (Debian's package: ``apt-get install pgbouncer``) in the
foreground on a free port of 127.0.0.1, and stops it on exit::

    with PgBouncer("postgresql://postgres@127.0.0.1:5432/test") as bouncer:
        url = bouncer.url("mydb")  # postgresql://postgres@127.0.0.1:<port>/mydb
        settings = settings_from_values({"database_url": url, "db_pooler": "transaction"})

Every database name is forwarded to the same server (``* = host=... port=...``). PgBouncer refuses to run as
root: under root it switches to the ``postgres`` user (``user = postgres``), which then owns its directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from sqlalchemy.engine import make_url

__all__ = ["PgBouncer"]

_BINARIES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """``pgbouncer <config>`` in transaction pooling mode, in front of the server of ``server_url``.

    Args:
        server_url: the PostgreSQL server (its host and port; its user and password go to the auth file).
        pool_size: ``default_pool_size``: server connections per database and user.
        auth_type: how clients log in to PgBouncer (``trust``, ``scram-sha-256``...).
        users: the auth file's users and passwords (default: the server URL's user).
        settings: more ``[pgbouncer]`` settings (``auth_query``, ``server_login_retry``...), as they are written.
        database_options: more options of the ``*`` database line (``auth_user=...``).

    ``with PgBouncer(...) as bouncer`` starts it and waits until it listens; at the end it is stopped and its
    directory removed. ``bouncer.url(database)`` is a URL to log in through it.
    """

    def __init__(
        self,
        server_url: str,
        *,
        pool_size: int = 4,
        auth_type: str = "trust",
        users: Mapping[str, str] | None = None,
        settings: Mapping[str, str | int] | None = None,
        database_options: Mapping[str, str | int] | None = None,
    ) -> None:
        binary = shutil.which("pgbouncer") or next((b for b in _BINARIES if Path(b).exists()), None)
        if binary is None:
            raise RuntimeError("pgbouncer is not installed: apt-get install -y pgbouncer (.ci/run does)")
        self.binary = binary
        server = make_url(server_url)
        self.server_user = server.username or "postgres"
        self.users = dict(users) if users is not None else {self.server_user: server.password or ""}
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="productos-pgbouncer-"))
        self.config_path = self.directory / "pgbouncer.ini"
        self.log_path = self.directory / "pgbouncer.log"
        database = {"host": server.host or "127.0.0.1", "port": server.port or 5432, **(database_options or {})}
        options = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": "",
            "pool_mode": "transaction",
            "auth_type": auth_type,
            "auth_file": self.directory / "userlist.txt",
            "default_pool_size": pool_size,
            **({"user": "postgres"} if os.geteuid() == 0 else {}),
            **(settings or {}),
        }
        lines = [
            "[databases]",
            "* = " + " ".join(f"{key}={value}" for key, value in database.items()),
            "[pgbouncer]",
            *(f"{key} = {value}" for key, value in options.items()),
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.write_users(self.users)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (self.directory, *self.directory.iterdir()):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str, user: str | None = None, password: str | None = None) -> str:
        """A URL that logs in to ``database`` through PgBouncer (as the server URL's user by default)."""
        user = user or self.server_user
        login = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        return f"postgresql://{login}@127.0.0.1:{self.port}/{database}"

    def write_users(self, users: Mapping[str, str]) -> None:
        """Rewrite the auth file (``reload()`` makes a running PgBouncer read it)."""
        path = self.directory / "userlist.txt"
        path.write_text("".join(f"{_quoted(user)} {_quoted(secret)}\n" for user, secret in users.items()))
        path.chmod(0o600)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def start(self, timeout: float = 10) -> None:
        """Start it and return once it accepts TCP connections; RuntimeError with its output if it does not."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - the installed binary, on the configuration written here
                [self.binary, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"pgbouncer did not start:\n{self.output()}") from None
                time.sleep(0.05)

    def reload(self) -> None:
        """SIGHUP: PgBouncer reads its configuration and auth file again."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """SIGTERM (PgBouncer's immediate shutdown); SIGKILL if it has not exited 10 s later."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()

    def output(self) -> str:
        """What PgBouncer has logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
