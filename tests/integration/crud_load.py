"""A steady CRUD load of keep-alive HTTP clients, and what each of their requests got, for the database-failure
tests (``test_database_restart``).

Each client has one connection of its own (as each ALB-to-target connection is) and loops over reads and writes
of a product of its own: GET by id, a page of the list, and PUT. Every outcome is kept with its times, so a test
can ask what was answered before, during and after an event. A "reset" is a transport error, or a response that
closes the connection (uvicorn closes it after an error that reaches it): what a client behind the ALB sees as
a 502.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

UNAVAILABLE = '{"detail":"database unavailable"}'


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    method: str
    status: int | None  # None: no response (a transport error)
    detail: str = ""  # the body of a 5xx, or the transport error's name
    closed: bool = False  # the response said ``Connection: close``
    retry_after: str | None = None


@dataclass
class CrudLoad:
    """``clients`` keep-alive clients, each on a product it creates at :meth:`start`, until :meth:`stop`."""

    base_url: str
    clients: int = 16
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as setup:
            ids = []
            for n in range(self.clients):
                created = await setup.post("/productos", json={"nombre": f"carga {n}", "precio": 1})
                assert created.status_code == 201, created.text
                ids.append(created.json()["id"])
        self._tasks = [asyncio.create_task(self._client(producto_id)) for producto_id in ids]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _client(self, producto_id: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits) as client:
            step = 0
            while not self._stop.is_set():
                step += 1
                body = None
                if step % 4 == 0:
                    method, path = "PUT", f"/productos/{producto_id}"
                    body = {"nombre": "carga", "precio": 2, "stock": step}
                elif step % 4 == 1:
                    method, path = "GET", f"/productos?after={max(producto_id - 3, 0)}&limit=3"
                else:
                    method, path = "GET", f"/productos/{producto_id}"
                started = time.monotonic()
                try:
                    response = await client.request(method, path, json=body)
                except httpx.TransportError as exc:
                    self.outcomes.append(Outcome(started, time.monotonic(), method, None, type(exc).__name__))
                    await asyncio.sleep(0.01)
                    continue
                self.outcomes.append(
                    Outcome(
                        started,
                        time.monotonic(),
                        method,
                        response.status_code,
                        response.text if response.status_code >= 500 else "",
                        response.headers.get("connection", "").lower() == "close",
                        response.headers.get("retry-after"),
                    )
                )
                if response.status_code == 503:
                    await asyncio.sleep(0.05)  # Retry-After, shortened: the test wants to see the recovery

    # --- what happened ---------------------------------------------------------------------------------------

    def errors(self) -> list[Outcome]:
        """Every reset and every status other than 200 and 503: what must never happen."""
        return [o for o in self.outcomes if o.status is None or o.closed or o.status not in (200, 503)]

    def bad_503s(self) -> list[Outcome]:
        """503s without Retry-After, or with another body than the contract's."""
        return [o for o in self.outcomes if o.status == 503 and (o.retry_after is None or o.detail != UNAVAILABLE)]

    def last_failure(self) -> float | None:
        """When the last request that did not succeed ended."""
        return max((o.ended for o in self.outcomes if o.status != 200), default=None)

    async def settle(self, moment: float, within: float) -> None:
        """Return once every request started in the last half second after ``moment`` has succeeded, and
        enough have (two per client); or ``within`` seconds after ``moment``, whichever comes first."""
        deadline = moment + within
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            recent = time.monotonic() - 0.5
            if recent < moment:
                continue
            latest = [o for o in self.outcomes if o.started >= recent]
            if self.succeeded_after(moment) >= 2 * self.clients and all(o.status == 200 for o in latest):
                return

    def succeeded_after(self, moment: float) -> int:
        return sum(1 for o in self.outcomes if o.started >= moment and o.status == 200)

    def summary(self) -> str:
        statuses = Counter(o.status if o.status is not None else o.detail for o in self.outcomes)
        return f"{len(self.outcomes)} requests: {dict(statuses)}; errors: {self.errors()[:3]}"
