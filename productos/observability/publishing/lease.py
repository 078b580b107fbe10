"""One publisher per instance: an exclusive ``flock`` on a file shared by the gunicorn workers.

Under gunicorn every worker runs a ``PublishingLoop``; the one that holds an ``fcntl`` lock on a file in the
Prometheus multiprocess directory publishes, the others retry the lock every few seconds and take over when
the holder dies (the kernel releases a dead process' locks).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "productos-publisher.lock"


class FileLease:
    """An exclusive, non-blocking ``flock`` on ``path``: one holder, freed by the kernel if it dies."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lease."""
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lease if no other process holds it, without waiting; ``True`` if this process holds it."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        """Give up the lease, if held."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
