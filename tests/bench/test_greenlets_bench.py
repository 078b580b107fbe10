"""``bench.greenlets``' measurement runs each call through both bridges on a real pool. Never a timing
assertion: only that every figure was measured."""

from __future__ import annotations

import pytest

from bench.greenlets import measure

pytestmark = pytest.mark.postgres


async def test_every_call_is_measured_through_both_bridges(postgres_url: str) -> None:
    best = await measure(postgres_url, rounds=1, calls=20)
    assert set(best) == {"trivial", "one await", "checkout"}
    for figures in best.values():
        assert set(figures) == {"new greenlet", "reused greenlet"}
        assert all(spent > 0 for spent in figures.values())
