"""A PostgreSQL cluster of the test's own, which it may restart: the shared server must never be.

``pg_createcluster`` on a free port (trust authentication, no fsync), started and restarted with
``pg_ctlcluster``, dropped at the end; clusters left over by interrupted runs (their pytest process gone) are
dropped first. It needs root (or the postgres user) and Debian's ``postgresql-common`` tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import asyncpg

from tests.integration.tcp_proxy import free_port

PREFIX = "productos_rs_"
_CTL = ("pg_ctlcluster", "--skip-systemctl-redirect")


@dataclass(frozen=True)
class ThrowawayCluster:
    version: str
    name: str
    port: int

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def ctl(self, action: str, *options: str) -> None:
        subprocess.run([*_CTL, *options, self.version, self.name, action], capture_output=True, check=True, timeout=60)

    async def actl(self, action: str, *options: str) -> None:
        """``pg_ctlcluster`` without blocking the event loop (the load keeps running meanwhile)."""
        process = await asyncio.create_subprocess_exec(
            *_CTL, *options, self.version, self.name, action,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        assert process.returncode == 0, output.decode(errors="replace")

    async def wait_accepting(self, database: str, within: float = 30) -> float:
        """Poll until a login succeeds; the monotonic time it did."""
        deadline = time.monotonic() + within
        while True:
            try:
                conn = await asyncpg.connect(self.url(database), timeout=1)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.01)
                continue
            accepted = time.monotonic()
            await conn.close()
            return accepted

    async def next_start(self, database: str, within: float = 30) -> float:
        """Wait until a login fails (the server is going down), then until one succeeds again: the monotonic
        time PostgreSQL accepted connections again. Start it before the restart; ``pg_ctlcluster restart``
        itself returns a second or more after that."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                conn = await asyncpg.connect(self.url(database), timeout=1)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                return await self.wait_accepting(database, within)
            await conn.close()
            await asyncio.sleep(0.005)
        raise TimeoutError("the server did not go down")

    async def admin(self, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(self.url(database), timeout=5)


def _clusters() -> list[tuple[str, str]]:
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True).stdout
    return [(parts[0], parts[1]) for line in out.splitlines() if len(parts := line.split()) >= 2]


def drop_cluster(version: str, name: str) -> None:
    """Stop and drop a cluster, if it exists."""
    subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True, check=False, timeout=60)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a cluster's creator: its clusters are dropped once it is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def throwaway_cluster(*, prefix: str = PREFIX, options: Sequence[str] = ()) -> Iterator[ThrowawayCluster]:
    """A started cluster named ``<prefix><pid>``; ``options`` (``"max_connections=20"``) override the defaults."""
    if shutil.which("pg_createcluster") is None or os.geteuid() != 0:
        raise RuntimeError("a throwaway PostgreSQL cluster needs root and pg_createcluster (postgresql-common)")
    clusters = _clusters()
    for version, name in clusters:
        match = re.fullmatch(rf"{prefix}(\d+)", name)
        if match and not process_alive(int(match.group(1))):
            drop_cluster(version, name)
    version = max((row[0] for row in clusters), key=float, default=None) or sorted(os.listdir("/etc/postgresql"))[-1]
    name = f"{prefix}{os.getpid()}"
    drop_cluster(version, name)
    port = free_port()
    settings = {"fsync": "off", "max_connections": "60", "shared_buffers": "16MB"}
    for option in options:
        key, _, value = option.partition("=")
        settings[key] = value
    try:
        subprocess.run(
            ["pg_createcluster", version, name, "-p", str(port), "--start-conf=manual",
             *(arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")),
             "--", "--auth-local=trust", "--auth-host=trust", "--no-sync"],
            capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        cluster = ThrowawayCluster(version, name, port)
        cluster.ctl("start")
        yield cluster
    finally:
        drop_cluster(version, name)
