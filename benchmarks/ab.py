"""Incremental runs of two commits of the platform, alternating on one source: same machine, same changes.

    .venv/bin/python -m benchmarks.ab c3e4245 HEAD --scale 1 --rounds 6 --events 100

This machine's speed drifts by a third within an hour, so "no slower than before" cannot be read off
benchmarks run on different days. Here each commit is checked out in a git worktree and gets its own lake
and warehouse on one embedded PostgreSQL; both backfill the same generated source, then, each round,
the simulator changes the source and both commits' incremental runs (`benchmarks/workload.py` of the
commit itself, in a child process) read the same changes, in alternating order. Results:
benchmarks/results/<date>-ab-<label>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
from pathlib import Path

import psycopg

from benchmarks.run import BIN, REPO, fresh_database, log, measured_run, platform_env, run_child, write_results
from totesys_platform.resources.embedded import start_embedded_server
from totesys_platform.source.simulator import Simulator


def worktree(commit: str, root: Path) -> Path:
    sha = subprocess.run(["git", "rev-parse", "--short", commit], cwd=REPO, capture_output=True, text=True, check=True)
    path = root / f"code-{sha.stdout.strip()}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=REPO, check=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commits", nargs=2)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    root = REPO / ".totesys-bench" / "ab"
    root.mkdir(parents=True, exist_ok=True)
    admin_url = start_embedded_server(REPO / ".totesys-bench" / "pgdata")
    source_url = fresh_database(admin_url, "ab_source")
    codes = [worktree(c, root) for c in args.commits]
    envs = []
    for i in range(len(codes)):
        home = root / f"home-{i}"
        envs.append(platform_env(home, home / "lake", source_url, fresh_database(admin_url, f"ab_warehouse_{i}")))
    run_child(
        [str(BIN / "totesys"), "source", "generate", "--scale", str(args.scale), "--seed", "42"],
        {**os.environ, **envs[0]},
    )
    backfill = {}
    for code, env in zip(codes, envs, strict=True):
        result = measured_run({**os.environ, **env}, code)
        backfill[code.name] = {k: result[k] for k in ("wall_seconds", "peak_rss_mb", "stage_seconds")}
        log(f"{code.name}: backfill {result['wall_seconds']:.1f}s, {result['peak_rss_mb']} MB")
    seconds: dict[str, list[float]] = {code.name: [] for code in codes}
    stages: dict[str, list[dict[str, float]]] = {code.name: [] for code in codes}
    for r in range(args.rounds):
        with psycopg.connect(source_url) as conn:
            Simulator(conn, seed=7_000 + r).run(args.events)
        order = list(zip(codes, envs, strict=True))
        for code, env in order if r % 2 == 0 else order[::-1]:
            result = measured_run({**os.environ, **env}, code)
            assert result["success"], code.name
            seconds[code.name].append(result["wall_seconds"])
            stages[code.name].append(result["stage_seconds"])
            log(f"round {r + 1}: {code.name} {result['wall_seconds']:.2f}s {result['stage_seconds']}")
    means = {name: round(statistics.mean(values), 3) for name, values in seconds.items()}
    stage_means = {
        name: {
            stage: round(statistics.mean(r.get(stage, 0.0) for r in rounds), 3)
            for stage in sorted({s for r in rounds for s in r})
        }
        for name, rounds in stages.items()
    }
    first, second = (c.name for c in codes)
    document = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.ab " + " ".join(argv if argv is not None else sys.argv[1:]),
        "scale": args.scale,
        "events_per_round": args.events,
        "backfill": backfill,
        "seconds": seconds,
        "mean_seconds": means,
        "mean_stage_seconds": stage_means,
        "ratio": round(means[second] / means[first], 3),
    }
    lines = [
        f"# Incremental runs, {first} vs {second}, alternating on one source (scale {args.scale})",
        "",
        f"{document['date']}; `{document['command']}`; {args.events} simulator events before each round; "
        "each commit's own `benchmarks/workload.py` (every asset and the routine checks, in process).",
        "",
        "| commit | seconds per incremental run (each round) | mean |",
        "|---|---|---|",
        *(f"| {name} | {', '.join(f'{s:.2f}' for s in values)} | {means[name]} |" for name, values in seconds.items()),
        "",
        f"{second} / {first}: {document['ratio']}x.",
        "",
        "Mean seconds per stage of an incremental run (from Dagster's step events; the rest of a run is start-up,"
        " planning and the events between steps):",
        "",
        *(f"- {name}: {means_by_stage}" for name, means_by_stage in stage_means.items()),
        "",
        "Backfill (empty lake and warehouse, one after the other, not alternated):",
        "",
        *(
            f"- {name}: {b['wall_seconds']} s, peak RSS {b['peak_rss_mb']} MB, {b['stage_seconds']}"
            for name, b in backfill.items()
        ),
    ]
    write_results("ab", args.label, document, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
