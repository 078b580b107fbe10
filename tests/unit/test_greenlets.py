"""``run_in_greenlet``: greenlet_spawn's contract (result, exception, awaits, context, cancellation) in greenlets
that are reused, and the fall-back to greenlet_spawn when SQLAlchemy's ``await_`` would not accept them. The pool's
checkout through it, on PostgreSQL, is what every integration test does."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from greenlet import GreenletExit, getcurrent

try:
    from sqlalchemy.util import await_ as await_only
except ImportError:  # SQLAlchemy 2.0 names it await_only
    from sqlalchemy.util import await_only

from productos.infra.db import greenlets
from productos.infra.db.greenlets import run_in_greenlet

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def idle() -> list[greenlets._Worker]:
    return list(greenlets._idle.workers)


async def test_returns_what_the_function_returns_and_awaits_inside_it() -> None:
    async def double(n: int) -> int:
        await asyncio.sleep(0)
        return 2 * n

    def work(a: int, b: int) -> tuple[int, int, str]:
        return await_only(double(a)), await_only(double(b)), type(getcurrent()).__name__

    assert await run_in_greenlet(work, 3, 4) == (6, 8, "_Worker")


async def test_a_greenlet_is_reused_and_keeps_no_context_while_idle() -> None:
    def current() -> object:
        return getcurrent()

    first = await run_in_greenlet(current)
    assert first in idle()
    assert first.gr_context is None
    assert await run_in_greenlet(current) is first


async def test_raises_what_the_function_raises_and_stays_usable() -> None:
    class Boom(Exception):
        pass

    def fail() -> None:
        await_only(asyncio.sleep(0))
        raise Boom("no")

    with pytest.raises(Boom, match="no"):
        await run_in_greenlet(fail)
    assert await run_in_greenlet(lambda: "after") == "after"


async def test_the_callers_context_is_the_functions_context() -> None:
    def read() -> str:
        await_only(asyncio.sleep(0))
        return request_id.get()

    async def request(name: str) -> str:
        request_id.set(name)
        return await run_in_greenlet(read)

    # Concurrent callers on the same reused greenlets each see their own context.
    assert await asyncio.gather(*(request(f"r{n}") for n in range(20))) == [f"r{n}" for n in range(20)]
    assert request_id.get() == "none"


async def test_a_cancelled_caller_cancels_the_await_inside_and_the_function_sees_it() -> None:
    seen: list[str] = []
    started = asyncio.Event()

    async def wait_forever() -> None:
        started.set()
        await asyncio.Event().wait()

    def work() -> None:
        try:
            await_only(wait_forever())
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            raise

    task = asyncio.ensure_future(run_in_greenlet(work))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled inside"]
    assert await run_in_greenlet(lambda: "still works") == "still works"


async def test_keeps_at_most_keep_idle_greenlets() -> None:
    release = asyncio.Event()

    def hold() -> None:
        await_only(release.wait())

    callers = [asyncio.ensure_future(run_in_greenlet(hold)) for _ in range(greenlets.KEEP_IDLE + 5)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*callers)
    assert len(idle()) == greenlets.KEEP_IDLE


async def test_an_abandoned_call_runs_the_functions_cleanup() -> None:
    ended: list[str] = []

    def work() -> None:
        try:
            await_only(asyncio.Event().wait())
        finally:
            ended.append("finally")

    coroutine = run_in_greenlet(work)
    awaitable = coroutine.send(None)  # suspended in await_, as a task whose loop went away
    del awaitable
    coroutine.close()  # GeneratorExit thrown into the await: work's finally runs
    assert ended == ["finally"]
    assert await run_in_greenlet(lambda: "after") == "after"


async def test_falls_back_to_greenlet_spawn_when_await_would_not_accept_the_greenlet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(greenlets._Worker, "__sqlalchemy_greenlet_provider__", False)
    assert greenlets._probe() is False
    monkeypatch.setattr(greenlets, "_supported", None)

    def where() -> tuple[str, int]:
        return type(getcurrent()).__name__, await_only(asyncio.sleep(0, result=7))

    assert await run_in_greenlet(where) == ("_AsyncIoGreenlet", 7)


def test_the_probe_accepts_sqlalchemys_await() -> None:
    assert greenlets._probe() is True


async def test_a_greenlet_let_go_while_its_function_waits_ends() -> None:
    """As greenlet_spawn's: collected while suspended inside ``fn`` (its task gone), GreenletExit ends it."""
    seen: list[object] = []

    def work() -> None:
        seen.append(getcurrent())
        try:
            await_only(asyncio.Event().wait())
        finally:
            seen.append("finally")

    coroutine = run_in_greenlet(work)
    awaitable = coroutine.send(None)  # suspended in await_
    worker = seen[0]
    assert isinstance(worker, greenlets._Worker)
    worker.throw(GreenletExit)  # what collecting it does
    assert worker.dead
    assert seen[1:] == ["finally"]
    assert worker not in idle()
    del awaitable
    coroutine.close()
