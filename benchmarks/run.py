"""The benchmark: full backfill and incremental runs at several scales, against the physical limit.

    .venv/bin/python -m benchmarks.run                       # scales 1, 10, 100; 100 and 10,000 events
    .venv/bin/python -m benchmarks.run --scales 1,10 --events 100
    .venv/bin/python -m benchmarks.run --peer --scales 10,100,300 --events 100   # the results README's figures

For each scale, on the embedded PostgreSQL (fresh source and warehouse databases, empty lake folders):
1. generate the source (deterministic, --seed);
2. full backfill: every asset and check in one in-process run, in a child process (its peak RSS is the
   run's own), seconds per stage from Dagster's step events;
3. incremental runs after N simulator events, the same way;
4. the physical limit on the same tables, in the same run: COPY ... TO STDOUT (FORMAT binary) of every
   source table, and COPY ... FROM (binary) of every warehouse table's rows into a copy of it with its
   indexes;
5. optionally (--peer) dlt's sql_database -> postgres on the same source (see benchmarks/peer_dlt.py).
Results: printed, and written as Markdown and JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

from totesys_platform.catalog import SOURCE_TABLES, WAREHOUSE_TABLES
from totesys_platform.resources.embedded import start_embedded_server
from totesys_platform.source import LOAD_ORDER

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = REPO / "benchmarks" / "results"
STAGES = ("extract", "processed", "warehouse", "checks", "reports")


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def measured_commit() -> str:
    """The short hash of the commit measured, `-dirty` when the work tree has uncommitted changes."""
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return (commit or "unknown") + ("-dirty" if dirty.stdout.strip() else "")


def write_results(kind: str, label: str, document: dict, text: str) -> Path:
    """benchmarks/results/<date>-<kind>-<commit>[-<label>].json and .md (named by what was measured, never
    by the work that led to it); prints the Markdown."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{dt.date.today().isoformat()}-{kind}-{measured_commit()}{'-' + label if label else ''}"
    stem.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n")
    stem.with_suffix(".md").write_text(text if text.endswith("\n") else text + "\n")
    print(text)
    log(f"results written to {stem}.md and .json")
    return stem


def fresh_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin_url.replace("/postgres?", f"/{name}?", 1)


def platform_env(home: Path, lake: Path, source_url: str, warehouse_url: str, fresh: bool = True) -> dict[str, str]:
    """The platform's settings for a benchmark run: its databases and a local lake (fresh: emptied), no retries."""
    if fresh:
        shutil.rmtree(lake, ignore_errors=True)
    return {
        "TOTESYS_HOME": str(home),
        "TOTESYS_SOURCE_URL": source_url,
        "TOTESYS_WAREHOUSE_URL": warehouse_url,
        "TOTESYS_INGESTION_URL": str(lake / "ingestion"),
        "TOTESYS_PROCESSED_URL": str(lake / "processed"),
        "TOTESYS_REPORTS_URL": str(lake / "reports"),
        "TOTESYS_MAX_RETRIES": "0",
    }


def run_child(args: list[str], env: dict[str, str], cwd: Path = REPO) -> tuple[float, str]:
    """Run a child to its end; returns (seconds, its stdout). Its stderr is read as it comes: its own progress
    lines ([bench] ...) go to the terminal, the rest (Dagster's event log) only into an error's message."""
    started = time.perf_counter()
    child = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    errors: list[str] = []

    def relay() -> None:
        for line in child.stderr:
            if line.startswith("[bench]"):
                print(line, end="", flush=True)
            errors.append(line)
            del errors[:-200]

    relaying = threading.Thread(target=relay, daemon=True)
    relaying.start()
    out = child.stdout.read()
    child.wait()
    relaying.join(timeout=10)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out[-3000:]}\n{''.join(errors)[-3000:]}")
    return seconds, out


def peer_run(mode: str, source_url: str, destination_url: str, pipelines_dir: Path, env: dict[str, str]) -> dict:
    """dlt on the same source, in its own process (its Python: TOTESYS_BENCH_PEER_PYTHON or this one)."""
    python = os.environ.get("TOTESYS_BENCH_PEER_PYTHON") or str(BIN / "python")
    _, out = run_child(
        [
            python,
            "-m",
            "benchmarks.peer_dlt",
            mode,
            source_url,
            destination_url,
            str(pipelines_dir),
            ",".join(LOAD_ORDER),
        ],
        {**env, "PYTHONPATH": str(REPO), "RUNTIME__LOG_LEVEL": "WARNING"},
    )
    line = next(line for line in out.splitlines() if line.startswith("BENCHMARK "))
    return json.loads(line.removeprefix("BENCHMARK "))


def measured_run(env: dict[str, str], code: Path = REPO) -> dict:
    """The whole graph with its checks, in a child process; `code`: the checkout whose platform (and
    benchmarks/workload.py) runs, this one by default."""
    if code != REPO:
        env = {**env, "PYTHONPATH": str(code)}
    _, out = run_child([str(BIN / "python"), "-m", "benchmarks.workload"], env, cwd=code)
    line = next(line for line in out.splitlines() if line.startswith("BENCHMARK "))
    return json.loads(line.removeprefix("BENCHMARK "))


def copy_out_limit(url: str) -> dict:
    """COPY every source table TO STDOUT in binary: the floor for reading the source."""
    rows = size = 0
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        for table in LOAD_ORDER:
            with conn.cursor().copy(sql.SQL("COPY {} TO STDOUT (FORMAT binary)").format(sql.Identifier(table))) as copy:
                for block in copy:
                    size += len(block)
            rows += conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
    return {"seconds": round(time.perf_counter() - started, 3), "rows": rows, "mb": round(size / 2**20, 1)}


def copy_in_limit(url: str, schema: str = "public") -> dict:
    """COPY every warehouse table's rows (binary) into an indexed copy of it: the floor for loading."""
    total_seconds = 0.0
    rows = 0
    with psycopg.connect(url) as conn:
        for table in WAREHOUSE_TABLES:
            source = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table.name))
            buffer = io.BytesIO()
            with conn.cursor().copy(sql.SQL("COPY {} TO STDOUT (FORMAT binary)").format(source)) as copy:
                for block in copy:
                    buffer.write(block)
            target = sql.Identifier(f"bench_copy_{table.name}")
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
            conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING INDEXES)").format(target, source)
            )
            conn.commit()
            started = time.perf_counter()
            with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(target)) as copy:
                copy.write(buffer.getbuffer())
            conn.commit()
            total_seconds += time.perf_counter() - started
            rows += conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]
            conn.execute(sql.SQL("DROP TABLE {}").format(target))
            conn.commit()
    return {"seconds": round(total_seconds, 3), "rows": rows}


def index_source_cursors(source_url: str) -> None:
    """What the source owners could add (totesys has none): an index on each table's cursor column, so
    `WHERE last_updated > $since` and the sensor's `max(last_updated)` stop scanning whole tables."""
    with psycopg.connect(source_url, autocommit=True) as conn:
        for table in SOURCE_TABLES:
            conn.execute(
                sql.SQL("CREATE INDEX ON {} ({})").format(sql.Identifier(table.name), sql.Identifier(table.cursor))
            )
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table.name)))


def bench_scale(
    scale: float, events: list[int], home: Path, admin_url: str, seed: int, peer: bool, source_index: bool = False
) -> list[dict]:
    tag = f"s{str(scale).replace('.', '_')}"
    source_url = fresh_database(admin_url, f"bench_source_{tag}")
    warehouse_url = fresh_database(admin_url, f"bench_warehouse_{tag}")
    env = {**os.environ, **platform_env(home, home / f"lake-{tag}", source_url, warehouse_url)}
    totesys = str(BIN / "totesys")
    run_child([totesys, "source", "create", "--replace"], env)
    generate_seconds, _ = run_child([totesys, "source", "generate", "--scale", str(scale), "--seed", str(seed)], env)
    if source_index:
        index_source_cursors(source_url)
    limit_out = copy_out_limit(source_url)
    log(f"scale {scale}: {limit_out['rows']:,} source rows generated in {generate_seconds:.1f}s")
    results = []
    backfill = measured_run(env)
    limit_in = copy_in_limit(warehouse_url)
    limit = limit_out["seconds"] + limit_in["seconds"]
    results.append(
        {
            "scale": scale,
            "case": "full backfill",
            "source_rows": limit_out["rows"],
            **backfill,
            "limit_copy_out_seconds": limit_out["seconds"],
            "limit_copy_in_seconds": limit_in["seconds"],
            "limit_seconds": round(limit, 3),
            "vs_limit": round(backfill["wall_seconds"] / limit, 2) if limit else None,
        }
    )
    log(
        f"scale {scale}: full backfill {backfill['wall_seconds']:.1f}s (limit {limit:.1f}s), RSS {backfill['peak_rss_mb']} MB"
    )
    peer_url = fresh_database(admin_url, f"bench_dlt_{tag}") if peer else ""
    peer_dir = home / f"dlt-{tag}"
    if peer:
        shutil.rmtree(peer_dir, ignore_errors=True)
        for mode in ("full", "incremental"):  # the incremental pipeline's first run loads everything
            result = peer_run(mode, source_url, peer_url, peer_dir, env)
            results.append({"scale": scale, **result, "case": f"dlt {mode} (first run)"})
            log(f"scale {scale}: {result['case']} {result['wall_seconds']:.1f}s")
    for n in events:
        sim_seconds, _ = run_child([totesys, "source", "simulate", "--events", str(n), "--seed", str(seed + n)], env)
        incremental = measured_run(env)
        results.append(
            {
                "scale": scale,
                "case": f"incremental after {n:,} events",
                "simulate_seconds": round(sim_seconds, 1),
                **incremental,
            }
        )
        log(f"scale {scale}: incremental after {n} events {incremental['wall_seconds']:.1f}s")
        if peer:
            result = peer_run("incremental", source_url, peer_url, peer_dir, env)
            results.append({"scale": scale, **result, "case": f"dlt incremental (merge) after {n:,} events"})
            log(f"scale {scale}: {result['case']} {result['wall_seconds']:.1f}s")
    return results


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"# Benchmark {meta['date']}",
        "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`. Embedded PostgreSQL 16 (pgserver, unix socket).",
        "Every run is the whole asset graph with its checks, in process (the platform's executor), in a child",
        "process whose peak RSS is reported. Stage seconds come from Dagster's step events; `limit` is",
        "COPY TO STDOUT (binary) of every source table + COPY FROM (binary) of every warehouse table's rows into",
        "an indexed copy, measured in the same run on the same tables.",
        "",
        "| scale | case | source rows | wall s | "
        + " | ".join(f"{s} s" for s in STAGES)
        + " | warehouse rows written | peak RSS MB | limit s | ours / limit |",
        "|---|---|---|---|" + "---|" * len(STAGES) + "---|---|---|---|",
    ]
    for r in results:
        stages = " | ".join(f"{r.get('stage_seconds', {}).get(s, 0):.2f}" for s in STAGES)
        lines.append(
            f"| {r['scale']} | {r['case']} | {r.get('source_rows', '')} | {r['wall_seconds']:.2f} | {stages} | "
            f"{r.get('stage_rows', {}).get('warehouse', r.get('rows', ''))} | {r.get('peak_rss_mb', '')} | "
            f"{r.get('limit_seconds', '')} | {r.get('vs_limit') or ''} |"
        )
    lines += peak_lines(results)
    lines += [
        "",
        "## Ratios",
        "",
        "| scale | case | ours s | reference | reference s | ours / reference |",
        "|---|---|---|---|---|---|",
    ]
    for ratio in ratios(results):
        lines.append(
            f"| {ratio['scale']} | {ratio['case']} | {ratio['ours']:.2f} | {ratio['reference']} | "
            f"{ratio['reference_seconds']:.2f} | {ratio['ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def peak_lines(results: list[dict]) -> list[str]:
    """Peak RSS by stage (the process's RSS sampled while the stage's steps ran), and the step with the
    highest, for our runs."""
    lines = [
        "",
        "## Peak RSS by stage (MB)",
        "",
        "| scale | case | " + " | ".join(STAGES) + " | highest step |",
        "|---|---|" + "---|" * len(STAGES) + "---|",
    ]
    for r in results:
        if "stage_peak_rss_mb" not in r:
            continue
        stages = " | ".join(str(r["stage_peak_rss_mb"].get(s, "")) for s in STAGES)
        steps = r.get("step_peak_rss_mb") or {}
        top = max(steps, key=steps.get, default="")
        lines.append(f"| {r['scale']} | {r['case']} | {stages} | {top} {steps.get(top, '')} |")
    backfills = sorted((r["scale"], r["peak_rss_mb"]) for r in results if r["case"] == "full backfill")
    if len(backfills) > 1:
        (small, low), (large, high) = backfills[0], backfills[-1]
        lines += ["", f"Backfill peak RSS, scale {large} / scale {small}: {high} / {low} MB = {high / low:.2f}x."]
    return lines


def ratios(results: list[dict]) -> list[dict]:
    """ours / physical limit, ours / dlt, and incremental cost across scales."""
    found = []
    by = {(r["scale"], r["case"]): r for r in results}
    scales = sorted({r["scale"] for r in results})
    for scale in scales:
        ours = by.get((scale, "full backfill"))
        if ours is None:
            continue
        found.append(
            {
                "scale": scale,
                "case": "full backfill",
                "ours": ours["wall_seconds"],
                "reference": "COPY out + in limit",
                "reference_seconds": ours["limit_seconds"],
                "ratio": ours["wall_seconds"] / ours["limit_seconds"],
            }
        )
        peer = by.get((scale, "dlt full (first run)"))
        if peer:
            found.append(
                {
                    "scale": scale,
                    "case": "full backfill",
                    "ours": ours["wall_seconds"],
                    "reference": "dlt full",
                    "reference_seconds": peer["wall_seconds"],
                    "ratio": ours["wall_seconds"] / peer["wall_seconds"],
                }
            )
        for r in results:
            if r["scale"] == scale and r["case"].startswith("incremental after"):
                n = r["case"].removeprefix("incremental after ")
                peer = by.get((scale, f"dlt incremental (merge) after {n}"))
                if peer:
                    found.append(
                        {
                            "scale": scale,
                            "case": r["case"],
                            "ours": r["wall_seconds"],
                            "reference": "dlt merge",
                            "reference_seconds": peer["wall_seconds"],
                            "ratio": r["wall_seconds"] / peer["wall_seconds"],
                        }
                    )
                smallest = by.get((scales[0], r["case"]))
                if smallest and scale != scales[0]:
                    found.append(
                        {
                            "scale": scale,
                            "case": r["case"],
                            "ours": r["wall_seconds"],
                            "reference": f"same at scale {scales[0]}",
                            "reference_seconds": smallest["wall_seconds"],
                            "ratio": r["wall_seconds"] / smallest["wall_seconds"],
                        }
                    )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1,10,100")
    parser.add_argument("--events", default="100,10000")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--home", default=str(REPO / ".totesys-bench"))
    parser.add_argument("--peer", action="store_true", help="also run dlt (pip install -e '.[bench]')")
    parser.add_argument("--label", default="", help="suffix of the results file names")
    parser.add_argument(
        "--source-index", action="store_true", help="index each source table's last_updated (totesys has none)"
    )
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    admin_url = start_embedded_server(home / "pgdata")
    events = [int(e) for e in args.events.split(",") if e]
    results = []
    for scale in (float(s) for s in args.scales.split(",")):
        results.extend(
            bench_scale(
                int(scale) if scale.is_integer() else scale,
                events,
                home,
                admin_url,
                args.seed,
                args.peer,
                args.source_index,
            )
        )
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    document = {"meta": meta, "results": results, "ratios": ratios(results)}
    write_results("benchmark", args.label, document, markdown(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
