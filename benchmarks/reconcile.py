"""What a reconciliation costs: with nothing to find, and with a few hundred differences, at each scale.

    .venv/bin/python -m benchmarks.reconcile                      # scales 1 and 100, 10 of each kind
    .venv/bin/python -m benchmarks.reconcile --scales 10 --changes 300

Per scale: a generated source on the embedded PostgreSQL, the raw stage backfilled into a local lake, then
(1) a reconciliation of an exact lake (the first one also builds the state of each key's newest version),
(2) a second one with nothing new, (3) one after `--changes` planted differences of each kind (see PLANTED).
Recorded: seconds, source queries, source rows read row by row (the only rows that cross the wire besides
one aggregate row per segment), what was found; and the source's own full scan computing the same hash
aggregate ungrouped, the least any comparison of whole tables costs the source.
Results: benchmarks/results/<date>-reconcile-<commit>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

import dagster as dg
import psycopg

from benchmarks.run import BIN, REPO, fresh_database, log, platform_env, run_child, write_results
from totesys_platform.catalog import SOURCE_TABLES
from totesys_platform.definitions import build_assets, build_resources
from totesys_platform.raw.reconcile import reconcile_source
from totesys_platform.resources.embedded import start_embedded_server
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.postgres import PostgresResource
from totesys_platform.settings import load_settings


def reconcile_once(settings, label: str) -> dict:
    started = time.perf_counter()
    result = reconcile_source(
        PostgresResource(url=settings.source_url),
        LakeZone(url=settings.ingestion_url, zone_name="ingestion"),
        LakeZone(url=settings.processed_url, zone_name="processed"),
        list(SOURCE_TABLES),
        run_id=f"bench-{label}",
        lookback=dt.timedelta(seconds=settings.lookback_seconds),
        log=log,
    )
    seconds = time.perf_counter() - started
    measured = {
        "case": label,
        "seconds": round(seconds, 2),
        "found": result.found,
        "source_queries": sum(t.source_queries for t in result.tables),
        "source_rows_read": sum(t.rows_read for t in result.tables),
        "by_table": {t.table: t.counts for t in result.tables if t.found},
    }
    log(f"{label}: {measured}")
    return measured


# `changes` planted differences of each kind: quiet fact and dimension updates, hard deletes (a sales order's
# delete also sets its transaction's sales_order_id to NULL, a quiet update the schema makes), back-dated rows.
PLANTED = (
    "UPDATE sales_order SET units_sold = units_sold + 1 WHERE sales_order_id IN"
    " (SELECT sales_order_id FROM sales_order ORDER BY random() LIMIT %(n)s)",
    "UPDATE counterparty SET delivery_contact = 'Corrected Contact' WHERE counterparty_id IN"
    " (SELECT counterparty_id FROM counterparty ORDER BY random() LIMIT %(n)s)",
    "DELETE FROM payment WHERE payment_id IN (SELECT payment_id FROM payment ORDER BY random() LIMIT %(n)s)",
    "DELETE FROM sales_order WHERE sales_order_id IN (SELECT sales_order_id FROM sales_order ORDER BY random()"
    " LIMIT %(n)s)",
    "INSERT INTO design (created_at, design_name, file_location, file_name, last_updated)"
    " SELECT '2020-01-01', 'Backdated', '/late', 'late-' || g || '.json', '2020-01-01' FROM generate_series(1, %(n)s) g",
)


def change_source(url: str, changes: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in PLANTED:
            conn.execute(statement, {"n": changes})


def full_scan_seconds(url: str) -> float:
    """The reference: the source's own full scan of every table computing the same hash aggregate, ungrouped."""
    from totesys_platform.raw.extract import row_hash_sql

    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        for table in SOURCE_TABLES:
            conn.execute(
                "SELECT count(*), sum(('x' || substr(h, 1, 7))::bit(28)::int),"  # noqa: S608 - catalog identifiers
                " sum(('x' || substr(h, 8, 7))::bit(28)::int)"
                f' FROM (SELECT {row_hash_sql(table)} AS h FROM "{table.name}") s'
            ).fetchone()
    return round(time.perf_counter() - started, 2)


def bench_scale(admin_url: str, scale: float, changes: int) -> dict:
    home = REPO / ".totesys-bench" / f"reconcile-{scale:g}"
    source_url = fresh_database(admin_url, f"reconcile_source_{scale:g}".replace(".", "_"))
    warehouse_url = fresh_database(admin_url, f"reconcile_warehouse_{scale:g}".replace(".", "_"))
    env = platform_env(home, home / "lake", source_url, warehouse_url)
    run_child(
        [str(BIN / "totesys"), "source", "generate", "--scale", str(scale), "--seed", "42"], {**os.environ, **env}
    )
    settings = load_settings(env)
    with psycopg.connect(source_url) as conn:
        rows = sum(conn.execute(f'SELECT count(*) FROM "{t.name}"').fetchone()[0] for t in SOURCE_TABLES)  # noqa: S608
    started = time.perf_counter()
    dg.materialize(
        build_assets(settings),
        resources=build_resources(settings),
        selection="group:raw",
        instance=dg.DagsterInstance.ephemeral(),
    )
    log(f"scale {scale:g}: {rows:,} source rows, raw backfill {time.perf_counter() - started:.1f}s")
    cases = [reconcile_once(settings, "first (builds the state)"), reconcile_once(settings, "nothing new")]
    change_source(source_url, changes)
    cases.append(reconcile_once(settings, f"{changes} planted of each kind"))
    for case in cases:
        case["rows_read_share"] = round(case["source_rows_read"] / rows, 5)
    return {"scale": scale, "source_rows": rows, "full_scan_seconds": full_scan_seconds(source_url), "cases": cases}


def markdown(document: dict) -> str:
    lines = [
        "# Reconciliation: segment checksums, bisected to the differences",
        "",
        f"{document['date']}; `{document['command']}`; 2 cores, embedded PostgreSQL; the raw stage backfilled first.",
        "",
        "| scale | source rows | case | seconds | source's own full hash scan (s) | source queries |"
        " rows read row by row (share) | found |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in document["scales"]:
        for case in result["cases"]:
            lines.append(
                f"| {result['scale']:g} | {result['source_rows']:,} | {case['case']} | {case['seconds']} "
                f"| {result['full_scan_seconds']} | {case['source_queries']} "
                f"| {case['source_rows_read']:,} ({case['rows_read_share']:.3%}) | {case['found']} {case['by_table'] or ''} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1,100")
    parser.add_argument("--changes", type=int, default=10, help="planted differences of each kind")
    args = parser.parse_args(argv)
    admin_url = start_embedded_server(REPO / ".totesys-bench" / "pgdata")
    scales = [bench_scale(admin_url, float(s), args.changes) for s in args.scales.split(",")]
    document = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.reconcile " + " ".join(argv if argv is not None else sys.argv[1:]),
        "scales": scales,
    }
    write_results("reconcile", "", document, markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
