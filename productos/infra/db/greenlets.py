"""SQLAlchemy's sync code run from asyncio in greenlets that are kept and reused: ``run_in_greenlet``.

SQLAlchemy runs its sync pool (and all of its engine) on an async driver by calling it inside a greenlet that
``greenlet_spawn`` makes for each call; the driver's awaits inside (``await_``) switch back to the event loop.
A new greenlet per call costs about 10 µs of CPU here (``bench/README.md``): the greenlet, its first switch, and
a 16 KiB chunk of Python's frame stack that CPython maps for it and unmaps when it dies, an ``mmap`` and a
``munmap`` per request (``strace -c`` on a worker). The pool's checkout runs on every request.

``run_in_greenlet`` runs ``fn`` in a greenlet that returns to a per-thread free list when ``fn`` is done, and is
switched into again for the next call: about 1-2 µs. Its contract with the caller is ``greenlet_spawn``'s:
``fn``'s result or exception, the caller's ``contextvars`` context inside ``fn``, each ``await_`` inside
awaited by the caller, a cancellation of the caller thrown into ``fn`` where it waits.

SQLAlchemy's ``await_`` accepts any greenlet whose class says ``__sqlalchemy_greenlet_provider__`` and whose
parent is the one awaiting: the marker of its own ``greenlet_spawn`` greenlets, not a documented interface. So
the first call in a process checks that ``await_`` hands its awaitable to such a greenlet's parent, without an
event loop; should a SQLAlchemy release stop doing so, every call goes through ``greenlet_spawn`` instead (as
slow as before, never wrong), and a warning says so once.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet
from sqlalchemy.util import greenlet_spawn

try:
    from sqlalchemy.util import await_
except ImportError:  # SQLAlchemy 2.0 names it await_only
    from sqlalchemy.util import await_only as await_

__all__ = ["run_in_greenlet"]

_T = TypeVar("_T")

logger = logging.getLogger(__name__)

#: Idle greenlets kept per thread: enough for the checkouts that run at once in a worker under load; beyond it a
#: greenlet is let go (and collected) when its call ends.
KEEP_IDLE = 16


class _Done:
    """What a worker greenlet switches to its caller with when ``fn`` has returned or raised."""

    __slots__ = ("failed", "value")

    def __init__(self, value: Any, failed: bool) -> None:
        self.value = value
        self.failed = failed


class _Worker(greenlet):
    """A greenlet that runs one function per switch into it, then waits for the next, until let go."""

    __sqlalchemy_greenlet_provider__ = True

    def __init__(self) -> None:
        super().__init__(self._serve)

    def _serve(self, fn: Callable[[], Any]) -> None:
        while True:
            try:
                done = _Done(fn(), False)
            except GreenletExit:
                raise  # let go while suspended inside fn: end, as greenlet_spawn's greenlet would
            except BaseException as exc:  # the caller re-raises it, whatever it is
                done = _Done(exc, True)
            del fn
            parent = self.parent
            assert parent is not None, "run_in_greenlet sets the caller as the parent"
            fn = parent.switch(done)


class _Idle(threading.local):
    def __init__(self) -> None:
        self.workers: list[_Worker] = []


_idle = _Idle()
_supported: bool | None = None


class _Probe:
    """An awaitable ``await_`` should hand to the probing greenlet's parent, never awaited."""

    def __await__(self) -> Any:  # pragma: no cover - never awaited
        raise AssertionError("the probe is never awaited")
        yield


def _probe() -> bool:
    """Whether SQLAlchemy's ``await_`` inside a ``_Worker`` switches to its parent (as in greenlet_spawn's)."""
    probe = _Probe()
    worker = _Worker()
    worker.parent = getcurrent()
    # _serve catches what fn raises (MissingGreenlet, if await_ refuses the worker) and hands it back as a _Done.
    handed = worker.switch(lambda: await_(probe))
    if handed is probe:
        worker.throw(GreenletExit)  # ends the worker where it waits in await_
        return True
    return False


async def run_in_greenlet(fn: Callable[..., _T], *args: Any) -> _T:
    """``await greenlet_spawn(fn, *args)``, in a reused greenlet (see the module's docstring)."""
    global _supported
    if _supported is None:
        _supported = _probe()
        if not _supported:
            logger.warning("this SQLAlchemy's await_ does not accept productos' reused greenlets; using greenlet_spawn")
    if not _supported:
        return await greenlet_spawn(fn, *args)
    workers = _idle.workers
    worker = workers.pop() if workers else _Worker()
    current = getcurrent()
    worker.parent = current
    worker.gr_context = current.gr_context
    result = worker.switch((lambda: fn(*args)) if args else fn)
    while type(result) is not _Done:
        # fn awaits: result is what it passed to await_.
        try:
            sent = await result
        except BaseException:
            result = worker.throw(*sys.exc_info())
        else:
            result = worker.switch(sent)
    # Keep no request's context (its spans, its ids) alive in an idle greenlet.
    worker.gr_context = None
    if len(workers) < KEEP_IDLE:
        workers.append(worker)
    done: _Done = result
    del result
    if done.failed:
        error: BaseException = done.value
        del done  # no reference cycle through the traceback's frames
        raise error
    value: _T = done.value
    return value
