"""Turn the raw runs of ``bench.run`` into medians, ratios, goal checks, a chart and the README's results."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.harness import SCENARIO_TITLES, SCENARIOS

README_START = "<!-- bench:results:start -->"
README_END = "<!-- bench:results:end -->"
BASELINES = ("b", "c", "d", "e", "f")
#: productos must be well ahead of (f), FastAPI + asyncpg with the observability users assemble from the
#: ecosystem: at least this ratio of req/s on every endpoint and concurrency.
WELL_AHEAD_OF_F = 1.1
#: Services on productos other than the products API, compared with it (a) and with (c).
SERVICES = ("p",)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``summary[contender][scenario][connections]``: medians over rounds, ranges, total errors."""
    grouped: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        grouped[(run["contender"], run["scenario"], run["connections"])].append(run)
    summary: dict[str, dict[str, dict[str, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for (contender, scenario, connections), group in grouped.items():
        rps = [r["rps"] for r in group]
        p50 = [r["p50_ms"] for r in group if r["p50_ms"] is not None]
        p99 = [r["p99_ms"] for r in group if r["p99_ms"] is not None]
        opened = [r["db_connections_opened"] for r in group if r.get("db_connections_opened") is not None]
        cpu = [r["worker_cpu_ms_per_request"] for r in group if r.get("worker_cpu_ms_per_request") is not None]
        summary[contender][scenario][str(connections)] = {
            "rps": round(statistics.median(rps), 1),
            "rps_min": min(rps),
            "rps_max": max(rps),
            # Runs in which no request completed have no latency: they show in rps (0) and in the JSON.
            "p50_ms": round(statistics.median(p50), 2) if p50 else None,
            "p99_ms": round(statistics.median(p99), 2) if p99 else None,
            "p99_max_ms": max(p99) if p99 else None,
            "errors": sum(r["errors"] for r in group),
            "restarts": sum(1 for r in group if r.get("restarted_before")),
            "db_connections_opened": statistics.median(opened) if opened else None,
            "worker_cpu_ms_per_request": round(statistics.median(cpu), 3) if cpu else None,
            "requests": sum(r["requests"] for r in group),
            "runs": len(group),
            "note": group[0].get("note", ""),
        }
    return {k: {s: dict(c) for s, c in v.items()} for k, v in summary.items()}


def ratios(summary: dict[str, Any], connections: list[int]) -> list[dict[str, Any]]:
    """productos (a) over each baseline, req/s by req/s, per scenario and concurrency; and p99 over (c)'s."""
    rows = []
    mine = summary.get("a", {})
    for scenario in SCENARIOS:
        for conc in map(str, connections):
            a = mine.get(scenario, {}).get(conc)
            if a is None:
                continue
            row: dict[str, Any] = {"scenario": scenario, "connections": int(conc)}
            for other in BASELINES:
                o = summary.get(other, {}).get(scenario, {}).get(conc)
                row[f"a/{other}"] = round(a["rps"] / o["rps"], 2) if o and o["rps"] else None
            c = summary.get("c", {}).get(scenario, {}).get(conc)
            row["p99 a/c"] = round(a["p99_ms"] / c["p99_ms"], 2) if c and c["p99_ms"] and a["p99_ms"] else None
            rows.append(row)
    return rows


def goals(summary: dict[str, Any], ratio_rows: list[dict[str, Any]], connections: list[int]) -> list[dict[str, Any]]:
    """The issue's goals for productos, each with the figure that decides it."""
    checks: list[dict[str, Any]] = []
    worst = min((r for r in ratio_rows if r["a/c"] is not None), key=lambda r: r["a/c"], default=None)
    if worst is not None:
        checks.append({
            "goal": ">= 0.9x (c)'s req/s on every endpoint",
            "met": worst["a/c"] >= 0.9,
            "figure": f"lowest a/c = {worst['a/c']} "
            f"({SCENARIO_TITLES[worst['scenario']]}, c{worst['connections']})",
        })  # fmt: skip
    top = max(connections)
    p99_rows = [r for r in ratio_rows if r["connections"] == top and r["p99 a/c"] is not None]
    if p99_rows:
        w = max(p99_rows, key=lambda r: r["p99 a/c"])
        checks.append({
            "goal": f"p99 at c{top} within 1.5x of (c)'s",
            "met": w["p99 a/c"] <= 1.5,
            "figure": f"highest p99 a/c at c{top} = {w['p99 a/c']} ({SCENARIO_TITLES[w['scenario']]})",
        })  # fmt: skip
    f_rows = [r for r in ratio_rows if r.get("a/f") is not None]
    if f_rows:
        low = min(f_rows, key=lambda r: r["a/f"])
        high = max(f_rows, key=lambda r: r["a/f"])
        checks.append({
            "goal": f"well ahead of (f), FastAPI+asyncpg with the ecosystem's observability: "
            f"a/f >= {WELL_AHEAD_OF_F} on every endpoint",
            "met": low["a/f"] >= WELL_AHEAD_OF_F,
            "figure": f"a/f from {low['a/f']} ({SCENARIO_TITLES[low['scenario']]}, c{low['connections']}) "
            f"to {high['a/f']} ({SCENARIO_TITLES[high['scenario']]}, c{high['connections']})",
        })  # fmt: skip
    mine = summary.get("a", {})
    errors = sum(c["errors"] for s in mine.values() for c in s.values())
    checks.append({"goal": "no errors", "met": errors == 0, "figure": f"{errors} errors over all runs"})
    for conc in map(str, connections):
        first = mine.get("first_page_1m", {}).get(conc)
        deep = mine.get("deep_page_1m", {}).get(conc)
        if first and deep and deep["rps"]:
            cost = round(first["rps"] / deep["rps"], 2)
            checks.append({
                "goal": f"deep page within 1.2x of the first page's cost (c{conc})",
                "met": cost <= 1.2,
                "figure": f"first/deep req/s = {first['rps']}/{deep['rps']} = {cost}x",
            })  # fmt: skip
    for service in SERVICES:
        theirs = summary.get(service, {})
        for scenario in ("get_id", "post"):
            for conc in map(str, connections):
                s_row = theirs.get(scenario, {}).get(conc)
                a_row = mine.get(scenario, {}).get(conc)
                if not (s_row and a_row and a_row["rps"]):
                    continue
                ratio = round(s_row["rps"] / a_row["rps"], 2)
                checks.append({
                    "goal": f"({service}) >= 0.9x productos (a) on {SCENARIO_TITLES[scenario]} at c{conc}",
                    "met": ratio >= 0.9,
                    "figure": f"{service}/a = {s_row['rps']}/{a_row['rps']} = {ratio}",
                })  # fmt: skip
    return checks


def _fmt_rps(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def markdown(result: dict[str, Any]) -> str:
    """The README's results section for one run."""
    meta = result["meta"]
    summary = result["summary"]
    names = {k: v["name"] for k, v in meta["contenders"].items()}
    connections = meta["connections"]
    m = meta["machine"]
    lines = [
        f"### Run of {meta['date']}{' (quick smoke run)' if meta['quick'] else ''}",
        "",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"shared with other work while it ran. PostgreSQL {meta['postgres']} on the same host. "
        f"Python {m['python']}, FastAPI {m['fastapi']}, SQLAlchemy {m['sqlalchemy']}, "
        f"uvicorn {m['uvicorn']}, {m['wrk']}.",
        f"- {meta['rounds']} rounds, contenders alternated in each ({' '.join(meta['order'])}); "
        f"each figure is the median over rounds (req/s range in the JSON). wrk -t2, "
        f"{meta['duration_s']:g} s per measurement after a {meta['warmup_s']:g} s warm-up, "
        f"at {' and '.join(f'c{c}' for c in connections)}."
        + (f" Every contender's pool per worker: {meta['pool']} (size + overflow)." if meta.get("pool") else ""),
        f"- Command: `{meta['command']}`; raw results `bench/results/{meta['stem']}.json`, "
        f"chart `bench/results/{meta['stem']}.png`.",
        "",
        f"![req/s and p99 per contender](results/{meta['stem']}.png)",
        "",
        "#### Ratios: productos (a) over each contender (req/s over req/s; > 1 means productos is faster)",
        "",
        "| endpoint | conc | a/b raw ASGI | a/c FastAPI+asyncpg | a/d FastAPI+ORM | a/e original "
        "| a/f FastAPI+asyncpg+observability | p99 a/c |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["ratios"]:
        keys = ("a/b", "a/c", "a/d", "a/e", "a/f", "p99 a/c")
        cells = [("—" if row.get(k) is None else f"{row[k]:.2f}") for k in keys]
        lines.append(f"| {SCENARIO_TITLES[row['scenario']]} | c{row['connections']} | " + " | ".join(cells) + " |")
    pooled = summary.get("g", {})
    if pooled and summary.get("a"):
        lines += [
            "",
            "#### Through PgBouncer: productos (g) over productos straight to PostgreSQL (a)",
            "",
            "(g) is (a) with `DB_POOLER=transaction` behind PgBouncer (transaction pooling, 20 server connections): "
            "every unit of work in BEGIN...COMMIT and no prepared statement kept, so a one-statement read or write "
            "takes four round trips instead of one, each through PgBouncer.",
            "",
            "| endpoint | conc | req/s g/a | p99 g/a |",
            "|---|---|---|---|",
        ]
        for scenario in SCENARIOS:
            for conc in map(str, connections):
                a, g = summary["a"].get(scenario, {}).get(conc), pooled.get(scenario, {}).get(conc)
                if not a or not g:
                    continue
                rps = f"{g['rps'] / a['rps']:.2f}" if a["rps"] else "—"
                p99 = f"{g['p99_ms'] / a['p99_ms']:.2f}" if a["p99_ms"] and g["p99_ms"] else "—"
                lines.append(f"| {SCENARIO_TITLES[scenario]} | c{conc} | {rps} | {p99} |")
    lines += ["", "#### Goals (issue 6)", "", "| goal | met | figure |", "|---|---|---|"]
    for check in result["goals"]:
        lines.append(f"| {check['goal']} | {'yes' if check['met'] else '**no**'} | {check['figure']} |")
    lines += [
        "",
        "#### Every figure: req/s, p50 and p99 latency (ms), errors (non-2xx/3xx + socket errors)",
        "",
        "New DB connections: sessions PostgreSQL opened for the contender during one run (median over",
        "rounds): pool growth plus churn; a pool that keeps its connections opens each one once.",
        "CPU/req: the gunicorn workers' user+system CPU time per completed request, c8 / c64 (ms; median",
        "over rounds): what a request costs, much less sensitive than req/s to other work on the machine.",
        "",
        "| endpoint | contender | "
        + " | ".join(f"c{c} req/s | c{c} p50 | c{c} p99" for c in connections)
        + " | errors | new DB connections | CPU/req ms |",
        "|---|---|" + "---|---|---|" * len(connections) + "---|---|---|",
    ]
    for scenario in SCENARIOS:
        for key in meta["order"]:
            cells = summary.get(key, {}).get(scenario)
            if not cells:
                continue
            row = []
            errors = restarts = 0
            for c in map(str, connections):
                cell = cells.get(c)
                if cell is None:
                    row.append("— | — | —")
                    continue
                errors += cell["errors"]
                restarts += cell.get("restarts", 0)
                row.append(f"{_fmt_rps(cell['rps'])} | {_fmt_ms(cell['p50_ms'])} | {_fmt_ms(cell['p99_ms'])}")
            note = next((cell["note"] for cell in cells.values() if cell.get("note")), "")
            name = f"{key} {names[key]}" + (f" ({note})" if note else "")
            flagged = f"{errors:,}" + (f" ({restarts} restarts: stalled before)" if restarts else "")
            opened = " / ".join(
                "—"
                if cells.get(c, {}).get("db_connections_opened") is None
                else f"{cells[c]['db_connections_opened']:g}"
                for c in map(str, connections)
            )
            cpu = " / ".join(
                "—"
                if cells.get(c, {}).get("worker_cpu_ms_per_request") is None
                else f"{cells[c]['worker_cpu_ms_per_request']:.2f}"
                for c in map(str, connections)
            )
            lines.append(
                f"| {SCENARIO_TITLES[scenario]} | {name} | " + " | ".join(row) + f" | {flagged} | {opened} | {cpu} |"
            )
    for one in result.get("all_rows", []):
        outcome = (
            f"HTTP {one['status']}, {one.get('bytes', 0) / 1e6:,.0f} MB in {one['seconds']:.1f} s"
            if one.get("status")
            else f"failed after {one['seconds']:.1f} s: {one.get('error')}"
        )
        peak = max(one["peak_rss_kib_sampled"].values(), default=0) / 1024
        lines += [
            "",
            f"(e) has no pagination: its natural equivalent of the deep page is `GET {one['path']}` on the "
            f"million-row table, every row in one response. Measured once (round 1), not with wrk, since "
            f"each request takes seconds: {outcome}; the serving worker peaked at {peak:,.0f} MiB resident.",
        ]
    lines += [
        "",
        "#### Peak resident memory per worker (VmHWM, MiB; max over rounds)",
        "",
        "| contender | after the 1,000-row endpoints | after the 1M-row endpoints |",
        "|---|---|---|",
    ]
    for key in meta["order"]:
        cells = []
        for session in ("small", "deep"):
            values = [
                kib for r in result["rss"] if r["contender"] == key and r["session"] == session
                for kib in r["peak_rss_kib"].values()
            ]  # fmt: skip
            cells.append(f"{max(values) / 1024:,.0f}" if values else "—")
        lines.append(f"| {key} {names[key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_readme(readme: Path, section: str) -> None:
    text = readme.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    readme.write_text(text[:start] + "\n" + section + text[end:])


_SHORT = {
    "get_id": "GET by id",
    "list_50": "list 50",
    "post": "POST",
    "first_page_1m": "1M: first page",
    "deep_page_1m": "1M: deep page",
}


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta, summary = result["meta"], result["summary"]
    order = meta["order"]
    groups = [(s, str(c)) for s in SCENARIOS for c in meta["connections"] if any(
        summary.get(k, {}).get(s, {}).get(str(c)) for k in order)]  # fmt: skip
    labels = [f"{_SHORT[s]}\nc{c}" for s, c in groups]
    fig, axes = plt.subplots(2, 1, figsize=(max(10, 1.3 * len(groups)), 9), sharex=True)
    width = 0.8 / len(order)
    for i, key in enumerate(order):
        xs = [g + (i - (len(order) - 1) / 2) * width for g in range(len(groups))]
        rps = [summary.get(key, {}).get(s, {}).get(c, {}).get("rps", 0) for s, c in groups]
        p99 = [summary.get(key, {}).get(s, {}).get(c, {}).get("p99_ms") or 0 for s, c in groups]
        name = f"({key}) {meta['contenders'][key]['name']}"
        axes[0].bar(xs, rps, width, label=name)
        axes[1].bar(xs, p99, width, label=name)
    axes[0].set_ylabel("req/s (median over rounds)")
    axes[0].set_title(
        f"productos benchmark {meta['date']}: {meta['machine']['nproc']} CPUs, gunicorn 2 workers, wrk -t2"
    )
    axes[0].legend(fontsize=8, ncols=len(order))
    axes[1].set_ylabel("p99 latency, ms (log)")
    axes[1].set_yscale("log")
    axes[1].set_xticks(range(len(groups)), labels, fontsize=7)
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report results/<date>.json [--readme]``: redraw the chart (and README section)."""
    import argparse
    import json

    from bench.harness import BENCH_DIR

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("json", type=Path)
    parser.add_argument("--readme", action="store_true", help="also rewrite bench/README.md's results section")
    args = parser.parse_args(argv)
    result = json.loads(args.json.read_text())
    chart(result, args.json.with_suffix(".png"))
    if args.readme:
        write_readme(BENCH_DIR / "README.md", markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
