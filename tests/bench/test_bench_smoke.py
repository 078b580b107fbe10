"""The benchmark harness's pieces, cheaply: contenders start and agree with productos, wrk output parses,
the report renders. Never a timing assertion: the machine is shared and noisy."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import report, seed
from bench.harness import Server, contenders, get_scenario, parse_wrk, post_scenario, run_wrk, variant

ROWS = 30


def _normalized(body: Any) -> Any:
    """Datetimes as instants: pydantic writes UTC as ``Z``, ``isoformat()`` as ``+00:00``."""
    if isinstance(body, list):
        return [_normalized(item) for item in body]
    return {
        key: datetime.fromisoformat(value) if key in ("created_at", "updated_at") else value
        for key, value in body.items()
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def database_url(workdir: Path) -> Iterator[str]:
    with seed.scratch_database(workdir, ROWS, "bench_test") as url:
        yield url


@pytest.fixture(scope="module")
def servers(workdir: Path, database_url: str) -> Iterator[dict[str, Server]]:
    specs = contenders()
    keys = "abcd" + ("e" if importlib.util.find_spec("psycopg2") else "")
    started: dict[str, Server] = {}
    try:
        for key in keys:
            server = Server(specs[key], database_url, workdir)
            server.start()
            started[key] = server
        yield started
    finally:
        for server in started.values():
            server.stop()


pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_asyncpg_contenders_answer_exactly_what_productos_answers(servers: dict[str, Server]) -> None:
    for path in ("/productos/7", "/productos?limit=5", "/productos?after=10&limit=3", "/productos/10"):
        bodies = {key: httpx.get(servers[key].base_url + path, timeout=10).json() for key in "abc"}
        assert bodies["b"] == bodies["a"], path
        assert bodies["c"] == bodies["a"], path


def test_orm_contenders_answer_the_same_rows(servers: dict[str, Server]) -> None:
    expected = httpx.get(servers["a"].base_url + "/productos/7", timeout=10).json()
    first_five = httpx.get(servers["a"].base_url + "/productos?limit=5", timeout=10).json()
    for key in "de":
        if key not in servers:
            continue  # psycopg2 is in the bench extra, not in the test one
        base = servers[key].base_url
        assert _normalized(httpx.get(base + "/productos/7", timeout=10).json()) == _normalized(expected)
        listing = servers[key].contender.small[1].first_path
        assert _normalized(httpx.get(base + listing, timeout=10).json()[:5]) == _normalized(first_five)


def test_every_contender_creates_with_the_same_shape(servers: dict[str, Server]) -> None:
    shapes = {}
    for key, server in servers.items():
        path = server.contender.small[2].first_path
        response = httpx.post(server.base_url + path, json={"nombre": "Ratón", "precio": 12.5, "stock": 2}, timeout=10)
        assert response.status_code == 201, (key, response.text)
        body = response.json()
        assert (body["nombre"], body["precio"], body["stock"], body["descripcion"]) == (
            "Ratón",
            12.5,
            2,
            None,
        )
        shapes[key] = sorted(body)
    assert all(shape == shapes["a"] for shape in shapes.values()), shapes


def test_workers_report_their_peak_memory(servers: dict[str, Server]) -> None:
    for server in servers.values():
        peaks = server.peak_rss_kib()
        assert len(peaks) == 2 and all(kib > 0 for kib in peaks.values()), (server.contender.name, peaks)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_wrk_drives_a_contender_and_its_output_parses(servers: dict[str, Server]) -> None:
    base = servers["b"].base_url
    for scenario in (get_scenario("get_id", "/productos/{n}", 1, ROWS), post_scenario("/productos")):
        result = run_wrk(base, scenario, connections=2, duration=1)
        assert result.requests >= 1 and result.errors == 0, result
        assert result.p99_ms is not None and result.p50_ms is not None


def test_parse_wrk_finds_the_report_line() -> None:
    line = (
        'BENCH_JSON {"duration_us":1000000,"requests":5,"bytes":10,'
        '"errors":{"connect":0,"read":0,"write":0,"status":1,"timeout":0},'
        '"latency_us":{"mean":1.0,"max":9,"p50":2,"p90":3,"p99":4,"p999":5}}'
    )
    assert parse_wrk("Running 1s test\n" + line + "\n")["errors"]["status"] == 1
    with pytest.raises(ValueError):
        parse_wrk("Running 1s test\n")


def _synthetic_result(tmp_path: Path) -> dict[str, Any]:
    runs = []
    for key, rps in zip("abcde", (900.0, 1200.0, 1000.0, 400.0, 100.0), strict=True):
        for scenario in ("get_id", "first_page_1m", "deep_page_1m"):
            for conc in (8, 64):
                for round_no in (1, 2):
                    runs.append({
                        "round": round_no, "contender": key, "scenario": scenario, "connections": conc,
                        "rps": rps * round_no, "p50_ms": 1.0, "p99_ms": 2.0 * conc / 8, "errors": 0,
                        "requests": 10, "note": "",
                    })  # fmt: skip
    summary = report.summarize(runs)
    ratio_rows = report.ratios(summary, [8, 64])
    return {
        "meta": {
            "date": "2026-01-01", "stem": "2026-01-01", "quick": False, "command": "python -m bench.run",
            "rounds": 2, "duration_s": 5, "warmup_s": 1, "connections": [8, 64], "order": list("abcde"),
            "postgres": "15", "contenders": {k: {"name": k * 3} for k in "abcde"},
            "machine": {"nproc": 2, "cpu_model": "cpu", "memory_gib": 1, "kernel": "6", "python": "3.11",
                        "fastapi": "x", "sqlalchemy": "x", "uvicorn": "x", "wrk": "wrk"},
        },
        "summary": summary, "ratios": ratio_rows, "goals": report.goals(summary, ratio_rows, [8, 64]),
        "rss": [{"contender": "a", "session": "small", "peak_rss_kib": {"1": 2048}}], "all_rows": [],
    }  # fmt: skip


def test_report_computes_medians_ratios_and_goals(tmp_path: Path) -> None:
    result = _synthetic_result(tmp_path)
    assert result["summary"]["a"]["get_id"]["8"]["rps"] == 1350.0  # median of 900 and 1800
    row = next(r for r in result["ratios"] if r["scenario"] == "get_id" and r["connections"] == 8)
    assert (row["a/b"], row["a/c"], row["a/e"], row["p99 a/c"]) == (0.75, 0.9, 9.0, 1.0)
    assert {g["goal"]: g["met"] for g in result["goals"]}[">= 0.9x (c)'s req/s on every endpoint"] is True
    section = report.markdown(result)
    assert "| GET /productos/{id} | c8 | 0.75 | 0.90 | 2.25 | 9.00 | 1.00 |" in section
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\nend\n")
    report.write_readme(readme, section)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith(f"{report.README_END}\nend\n")


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib is in the bench extra")
def test_report_draws_the_chart(tmp_path: Path) -> None:
    report.chart(_synthetic_result(tmp_path), tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_variants_derive_from_productos() -> None:
    base = contenders({"LOG_LEVEL": "info"})["a"]
    pool = variant(base, "pool30:DB_POOL_SIZE=30,DB_MAX_OVERFLOW=0")
    assert (pool.key, pool.app, pool.gunicorn_args) == ("pool30", base.app, base.gunicorn_args)
    assert pool.env == {**base.env, "DB_POOL_SIZE": "30", "DB_MAX_OVERFLOW": "0"}
    other = variant(base, "core:APP=bench.contenders.productos_variants:sqlalchemy_core,LOG_LEVEL=warning")
    assert other.app == "bench.contenders.productos_variants:sqlalchemy_core" and other.env["LOG_LEVEL"] == "warning"
    with pytest.raises(ValueError):
        variant(base, "bad:NOEQUALS")
