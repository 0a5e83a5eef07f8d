"""The lake-age benchmark: does an incremental run cost the same after 10 and after 1,000 prior runs?

    .venv/bin/python -m benchmarks.age                          # ages 10 and 1000, 10 measured runs each
    .venv/bin/python -m benchmarks.age --ages 10,100 --measure 5
    .venv/bin/python -m benchmarks.age --compare .totesys-bench/age10 .totesys-bench/age   # kept histories,
                                                                  # measured runs alternating between them

1. A scale-1 source on the embedded PostgreSQL; the history is written by real pipeline runs (every asset
   and the routine checks, in process), each after a few simulator events, on a local lake (fast).
2. At each age the lake is copied as it is into a fresh bucket of moto's S3 server (a separate process,
   every request logged) and the warehouse database is cloned; then `--measure` runs, each after the same
   number of events, go against S3. S3 requests per run (from the server's log, by kind) and seconds are
   recorded. `--measure` of at least the Delta checkpoint interval covers one whole sawtooth.
3. The local history then goes on to the next age, unchanged by the measured runs.
Results: benchmarks/results/<date>-age.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import dagster as dg
import psycopg
from psycopg import sql

from benchmarks.run import BIN, REPO, fresh_database, log, platform_env, run_child, write_results
from totesys_platform.automation import NIGHTLY_ONLY_CHECKS
from totesys_platform.definitions import build_assets, build_resources
from totesys_platform.resources.delta_settings import CHECKPOINT_INTERVAL
from totesys_platform.resources.embedded import start_embedded_server
from totesys_platform.settings import load_settings
from totesys_platform.source.simulator import Simulator
from totesys_platform.warehouse.checks import build_checks

# The server colours some log lines (ANSI codes after the quote: 206 partial reads, 404s): count them too.
REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)*(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP')


def routine_checks():
    return [c for c in build_checks() if not any(k.name.endswith(NIGHTLY_ONLY_CHECKS) for k in c.check_keys)]


def run_once(env: dict[str, str]) -> float:
    """One run of every asset and the routine checks, in process (its resources load every Delta table
    afresh, as a production run process does)."""
    settings = load_settings(env)
    started = time.perf_counter()
    result = dg.materialize(
        [*build_assets(settings), *routine_checks()],
        resources=build_resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    return time.perf_counter() - started


class MotoServer:
    """moto's S3 in its own process; its access log counts the requests."""

    def __init__(self, home: Path, port: int = 5099, *, indexed_list: bool = False) -> None:
        self.log_path = home / "moto-requests.log"
        self.endpoint = f"http://127.0.0.1:{port}"
        self.handle = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        flags = ["--indexed-list"] if indexed_list else []  # see benchmarks/s3_server.py
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.s3_server", *flags, "-H", "127.0.0.1", "-p", str(port)],
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        time.sleep(3)
        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        os.environ["AWS_ENDPOINT_URL"] = self.endpoint
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint)

    def requests_since(self, offset: int) -> tuple[Counter, int]:
        with open(self.log_path) as handle:
            handle.seek(offset)
            text = handle.read()
            end = handle.tell()
        kinds: Counter = Counter()
        for method, path in REQUEST.findall(text):
            kinds["LIST" if method == "GET" and "list-type=2" in path else method] += 1
        return kinds, end

    def offset(self) -> int:
        self.handle.flush()
        return os.path.getsize(self.log_path)

    def upload(self, folder: Path, bucket: str) -> int:
        self.s3.create_bucket(Bucket=bucket)
        count = 0
        for path in folder.rglob("*"):
            if path.is_file():
                self.s3.upload_file(str(path), bucket, str(path.relative_to(folder)))
                count += 1
        return count

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.handle.close()


def simulate(source_url: str, seed: int, events: int) -> None:
    with psycopg.connect(source_url) as conn:
        Simulator(conn, seed=seed).run(events)


@dataclass
class Lake:
    """One history's lake as the measured runs see it: copied into its own bucket, its warehouse cloned."""

    age: int
    source_url: str
    env: dict[str, str]
    objects: int
    runs: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "age": self.age,
            "lake_objects": self.objects,
            "runs": self.runs,
            "mean_requests": round(statistics.mean(r["requests"] for r in self.runs), 1),
            "mean_seconds": round(statistics.mean(r["seconds"] for r in self.runs), 3),
            "max_requests": max(r["requests"] for r in self.runs),
            "min_requests": min(r["requests"] for r in self.runs),
        }


def measure_run(lake: Lake, moto: MotoServer, i: int, events: int) -> None:
    simulate(lake.source_url, 10_000_000 + lake.age * 100 + i, events)
    start = moto.offset()
    seconds = run_once(lake.env)
    kinds, _ = moto.requests_since(start)
    lake.runs.append({"seconds": round(seconds, 3), "requests": sum(kinds.values()), **dict(kinds)})
    log(f"age {lake.age}: measured run {i + 1}: {lake.runs[-1]}")


class History:
    """A history of real pipeline runs on a local lake, kept in `home` (history.json) so it can go on later."""

    def __init__(self, home: Path, admin_url: str, lookback: int, resume: bool) -> None:
        self.home, self.admin_url = home, admin_url
        self.warehouse_db = f"{home.name}_warehouse"
        self.lake, self.kept = home / "lake", home / "history.json"
        source_db = f"{home.name}_source"
        if resume and self.kept.exists():
            self.seconds = json.loads(self.kept.read_text())["seconds"]
            self.source_url = admin_url.replace("/postgres?", f"/{source_db}?", 1)
            warehouse_url = admin_url.replace("/postgres?", f"/{self.warehouse_db}?", 1)
            self.env = platform_env(home, self.lake, self.source_url, warehouse_url, fresh=False)
            log(f"resuming the history in {home} after {len(self.seconds)} runs")
        else:
            self.seconds = []
            self.source_url = fresh_database(admin_url, source_db)
            self.env = platform_env(home, self.lake, self.source_url, fresh_database(admin_url, self.warehouse_db))
            run_child(
                [str(BIN / "totesys"), "source", "generate", "--scale", "1", "--seed", "42"], {**os.environ, **self.env}
            )
        self.env["TOTESYS_LOOKBACK_SECONDS"] = str(lookback)

    @property
    def runs(self) -> int:
        return len(self.seconds)

    def run_until(self, age: int, events: int) -> None:
        """Runs (each after `events` simulator events) until the history has `age` runs."""
        while self.runs < age:
            if self.runs:
                simulate(self.source_url, self.runs, events)
            self.seconds.append(round(run_once(self.env), 3))
            self.kept.write_text(json.dumps({"runs": self.runs, "seconds": self.seconds}))
            if self.runs % 50 == 0:
                log(f"history: {self.runs} runs, last {self.seconds[-1]:.2f}s")

    def copy_to_s3(self, moto: MotoServer) -> Lake:
        """The lake as it is, in a bucket of its own, with a clone of its warehouse to load into."""
        bucket = f"age-{self.runs}"
        files = moto.upload(self.lake, bucket)
        clone = f"{self.warehouse_db}_age{self.runs}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(clone)))
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(clone), sql.Identifier(self.warehouse_db)
                )
            )
        env = {
            **self.env,
            "TOTESYS_WAREHOUSE_URL": self.admin_url.replace("/postgres?", f"/{clone}?", 1),
            "TOTESYS_INGESTION_URL": f"s3://{bucket}/ingestion",
            "TOTESYS_PROCESSED_URL": f"s3://{bucket}/processed",
            "TOTESYS_REPORTS_URL": f"s3://{bucket}/reports",
        }
        return Lake(self.runs, self.source_url, env, files)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ages", default="10,1000")
    parser.add_argument("--measure", type=int, default=2 * CHECKPOINT_INTERVAL)
    parser.add_argument("--events", type=int, default=5, help="simulator events before each run")
    parser.add_argument("--home", default=str(REPO / ".totesys-bench" / "age"))
    parser.add_argument("--label", default="", help="suffix of the result files' names")
    parser.add_argument(
        "--lookback",
        type=int,
        default=10,
        help="TOTESYS_LOOKBACK_SECONDS: in production 900 s at a 300 s cadence re-reads the last 3 runs' files; "
        "the benchmark's runs are 3-13 s apart, so 10 s re-reads about as many (900 s would re-read hundreds)",
    )
    parser.add_argument(
        "--indexed-list",
        action="store_true",
        help="moto answers LIST from a prefix index, as S3 does, instead of walking the whole bucket "
        "(benchmarks/s3_server.py): seconds then measure the platform, not the emulator's listing",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="HOME",
        help="histories kept by earlier runs (--home of each): each catches up one run, then their measured "
        "runs alternate, one lake after the other, on one S3 server",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the history kept in --home (history.json) instead of anew"
    )
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, histories: list[History], moto: MotoServer) -> list[dict]:
    """The measured runs: of each kept history alternating (--compare), or of one history at each age."""
    if args.compare:
        # Each history catches up with its source (one run), then the measured runs alternate between
        # the lakes, so that a change in the machine's speed during the measurement falls on all alike.
        lakes = []
        for history in histories:
            history.run_until(history.runs + 1, args.events)
            lakes.append(history.copy_to_s3(moto))
        for i in range(args.measure):
            for lake in lakes:
                measure_run(lake, moto, i, args.events)
        return sorted((lake.summary() for lake in lakes), key=lambda a: a["age"])
    measured = []
    history = histories[0]
    for age in sorted(int(a) for a in args.ages.split(",")):
        history.run_until(age, args.events)
        lake = history.copy_to_s3(moto)
        for i in range(args.measure):
            measure_run(lake, moto, i, args.events)
        measured.append(lake.summary())
    return measured


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    homes = [Path(h).resolve() for h in (args.compare or [args.home])]
    for home in homes:
        home.mkdir(parents=True, exist_ok=True)
    admin_url = start_embedded_server(homes[0].parent / "pgdata")
    histories = [History(home, admin_url, args.lookback, args.resume or bool(args.compare)) for home in homes]
    moto = MotoServer(homes[0], indexed_list=args.indexed_list)
    try:
        measured = measure(args, histories, moto)
    finally:
        moto.stop()
    history_seconds = histories[0].seconds if not args.compare else {str(h.home.name): h.seconds for h in histories}
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "command": "python -m benchmarks.age " + " ".join(argv if argv is not None else sys.argv[1:]),
        "checkpoint_interval": CHECKPOINT_INTERVAL,
        "events_per_run": args.events,
        "lookback_seconds": args.lookback,
        "s3_listing": "prefix index (as S3)" if args.indexed_list else "moto's bucket walk",
    }
    document = {"meta": meta, "ages": measured, "local_history_seconds": history_seconds}
    write_results("age", args.label, document, markdown(document))
    return 0


def markdown(document: dict) -> str:
    meta, ages = document["meta"], document["ages"]
    listing = meta.get("s3_listing", "moto's bucket walk")
    lines = [
        "# Lake age: an incremental run on S3 after N prior runs",
        "",
        f"{meta['date']}, {meta['machine']}; `{meta['command']}`; {meta['events_per_run']} simulator events "
        f"before each run; Delta checkpoint every {meta['checkpoint_interval']} commits; S3 LIST: {listing}.",
        "",
        "| prior runs | objects in the lake | S3 requests per run (mean, min-max) | seconds per run (mean) |",
        "|---|---|---|---|",
    ]
    for a in ages:
        lines.append(
            f"| {a['age']} | {a['lake_objects']:,} | {a['mean_requests']} ({a['min_requests']}-{a['max_requests']})"
            f" | {a['mean_seconds']} |"
        )
    if len(ages) >= 2:
        first, last = ages[0], ages[-1]
        lines += [
            "",
            f"Ratio {last['age']} vs {first['age']} prior runs: requests "
            f"{last['mean_requests'] / first['mean_requests']:.3f}x, seconds "
            f"{last['mean_seconds'] / first['mean_seconds']:.3f}x.",
        ]
    lines += ["", "Requests by kind, per measured run:", ""]
    for a in ages:
        lines.append(f"- after {a['age']} runs: " + "; ".join(json.dumps(r) for r in a["runs"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
