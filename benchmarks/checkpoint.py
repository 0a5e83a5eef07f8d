"""What an ingestion table's checkpoint costs after N commits, with file statistics on every column or only on
the columns the platform prunes on (key and cursor: `delta.dataSkippingStatsColumns`).

    .venv/bin/python -m benchmarks.checkpoint                  # 1,000 commits of real-shaped payment rows

An append-only ingestion table gains a data file per commit and is never compacted, so its checkpoint lists
every file with its statistics. Both tables get the same commits (the payment rows of a generated scale-1
source, 20 rows a commit) through the platform's own writer (LakeZone.append); then each table's log is
copied into moto's S3 server and the table is loaded afresh 10 times (as each run does), counting the
requests from the server's log. Results: benchmarks/results/<date>-checkpoint.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from benchmarks.age import MotoServer
from benchmarks.run import log, write_results
from totesys_platform.catalog import SOURCE_TABLES
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.spool import Spool
from totesys_platform.source.generator import generate


def write_history(zone: LakeZone, rows: pl.DataFrame, commits: int, per_commit: int, stats: list[str] | None) -> None:
    for i in range(commits):
        with Spool() as spool:
            spool.add(rows.slice((i * per_commit) % (rows.height - per_commit), per_commit))
            zone.append("payment", spool.reader(), {"watermark": str(i)}, append_only=True, stats_columns=stats)


def measure_loads(moto: MotoServer, local: LakeZone, bucket: str, loads: int = 10) -> list[dict]:
    """Copies the local table into a bucket and loads it afresh `loads` times, counting requests."""
    moto.upload(Path(local.url), bucket)
    uri = f"s3://{bucket}/payment"
    options = {"AWS_ENDPOINT_URL": moto.endpoint, "AWS_ALLOW_HTTP": "true"}
    results = []
    for _ in range(loads):
        start = moto.offset()
        started = time.perf_counter()
        DeltaTable(uri, storage_options=options).get_add_actions(flatten=True)
        seconds = time.perf_counter() - started
        kinds, _ = moto.requests_since(start)
        results.append({"seconds": round(seconds, 4), "requests": sum(kinds.values()), **dict(kinds)})
    return results


def measure(args: argparse.Namespace, home: Path, moto: MotoServer) -> list[dict]:
    table = next(t for t in SOURCE_TABLES if t.name == "payment")
    rows = generate(scale=1, seed=42)["payment"].select(list(table.schema)).cast(dict(table.schema))  # type: ignore[arg-type]
    results = []
    for label, stats in (
        ("statistics on every column", None),
        ("key and cursor only", [table.primary_key, table.cursor]),
    ):
        local = LakeZone(url=str(home / label.replace(" ", "-")))
        write_history(local, rows, args.commits, args.rows, stats)
        checkpoint = max((Path(local.uri("payment")) / "_delta_log").glob("*.checkpoint.parquet"))
        loads = measure_loads(moto, local, f"checkpoint-{len(results)}")
        results.append(
            {
                "statistics": label,
                "commits": args.commits,
                "checkpoint_bytes": checkpoint.stat().st_size,
                "mean_requests_per_load": statistics.mean(r["requests"] for r in loads),
                "mean_seconds_per_load": round(statistics.mean(r["seconds"] for r in loads), 4),
                "loads": loads,
            }
        )
        log(
            f"{label}: checkpoint {checkpoint.stat().st_size:,} bytes, {results[-1]['mean_requests_per_load']} requests a load"
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=20, help="rows per commit")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="totesys-checkpoint-"))
    moto = MotoServer(home, port=5098)
    try:
        results = measure(args, home, moto)
    finally:
        moto.stop()
    document = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.checkpoint " + " ".join(argv if argv is not None else sys.argv[1:]),
        "results": results,
    }
    lines = [
        f"# An ingestion table's checkpoint after {args.commits:,} commits ({args.rows} payment rows each)",
        "",
        f"{document['date']}; `{document['command']}`; 10 fresh loads from moto's S3 server each.",
        "",
        "| file statistics | checkpoint bytes | requests per load | seconds per load |",
        "|---|---|---|---|",
        *(
            f"| {r['statistics']} | {r['checkpoint_bytes']:,} | {r['mean_requests_per_load']} | {r['mean_seconds_per_load']} |"
            for r in results
        ),
    ]
    write_results("checkpoint", "", document, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
