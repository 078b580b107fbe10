"""``RecordingPublisher``: the metrics-publisher fake for unit tests. Keeps what it gets; fails on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from productos.domain.metrics_ports import DEFAULT_NAMESPACE, MetricDatum, PublishError


class RecordingPublisher:
    """Records every ``publish`` call; ``fail(n)`` makes the next ``n`` calls fail (accepting ``sent`` datums
    each first), ``block()`` makes calls hang until ``unblock()`` (an unreachable endpoint), and
    ``hold_answers()`` makes calls that were accepted wait for their answer until ``release_answers()`` (a slow
    response: the datums are stored, the caller does not know yet).

    Args:
        namespace: reported as the publisher's namespace.
        max_per_call: at most this many datums per call, as an API limit would cut them (``None``: all).
    """

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, *, max_per_call: int | None = None) -> None:
        self._namespace = namespace
        self.max_per_call = max_per_call
        self.calls: list[list[MetricDatum]] = []
        self.attempts = 0
        self._failures: list[int] = []
        self._open = asyncio.Event()
        self._open.set()
        self._answers = asyncio.Event()
        self._answers.set()
        #: Calls accepted whose answers were held.
        self.held = 0

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def datums(self) -> list[MetricDatum]:
        """Every datum accepted, in order."""
        return [datum for call in self.calls for datum in call]

    def named(self, name: str) -> list[MetricDatum]:
        return [datum for datum in self.datums if datum.name == name]

    def fail(self, times: int = 1, *, sent: int = 0) -> None:
        self._failures.extend([sent] * times)

    def block(self) -> None:
        self._open.clear()

    def unblock(self) -> None:
        self._open.set()

    def hold_answers(self) -> None:
        self._answers.clear()

    def release_answers(self) -> None:
        self._answers.set()

    async def publish(self, data: Sequence[MetricDatum]) -> None:
        items = list(data)
        step = self.max_per_call or max(1, len(items))
        sent = 0
        for start in range(0, len(items), step):
            self.attempts += 1
            await self._open.wait()
            if self._failures:
                accepted = min(self._failures.pop(0), len(items) - start)
                if accepted:
                    self.calls.append(items[start : start + accepted])
                raise PublishError("recorded failure", sent=sent + accepted)
            self.calls.append(items[start : start + step])
            sent += len(items[start : start + step])
            if not self._answers.is_set():
                self.held += 1
                await self._answers.wait()
