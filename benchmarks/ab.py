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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commits", nargs=2)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--label", default="")
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> tuple[str, list[Path], list[dict[str, str]]]:
    """One generated source; per commit a worktree, a home and a warehouse database of its own."""
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
    return source_url, codes, envs


def backfill(codes: list[Path], envs: list[dict[str, str]]) -> dict[str, dict]:
    results = {}
    for code, env in zip(codes, envs, strict=True):
        result = measured_run({**os.environ, **env}, code)
        results[code.name] = {k: result[k] for k in ("wall_seconds", "peak_rss_mb", "stage_seconds")}
        log(f"{code.name}: backfill {result['wall_seconds']:.1f}s, {result['peak_rss_mb']} MB")
    return results


def alternate(args: argparse.Namespace, source_url: str, codes: list[Path], envs: list[dict[str, str]]):
    """Each round changes the source, then runs both commits on the same changes, in alternating order."""
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
    return seconds, stages


def mean_stage_seconds(stages: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            stage: round(statistics.mean(r.get(stage, 0.0) for r in rounds), 3)
            for stage in sorted({s for r in rounds for s in r})
        }
        for name, rounds in stages.items()
    }


def markdown(document: dict, first: str, second: str) -> str:
    means = document["mean_seconds"]
    return "\n".join(
        [
            f"# Incremental runs, {first} vs {second}, alternating on one source (scale {document['scale']})",
            "",
            f"{document['date']}; `{document['command']}`; {document['events_per_round']} simulator events before "
            "each round; each commit's own `benchmarks/workload.py` (every asset and the routine checks, in process).",
            "",
            "| commit | seconds per incremental run (each round) | mean |",
            "|---|---|---|",
            *(
                f"| {name} | {', '.join(f'{s:.2f}' for s in values)} | {means[name]} |"
                for name, values in document["seconds"].items()
            ),
            "",
            f"{second} / {first}: {document['ratio']}x.",
            "",
            "Mean seconds per stage of an incremental run (from Dagster's step events; the rest of a run is"
            " start-up, planning and the events between steps):",
            "",
            *(f"- {name}: {by_stage}" for name, by_stage in document["mean_stage_seconds"].items()),
            "",
            "Backfill (empty lake and warehouse, one after the other, not alternated):",
            "",
            *(
                f"- {name}: {b['wall_seconds']} s, peak RSS {b['peak_rss_mb']} MB, {b['stage_seconds']}"
                for name, b in document["backfill"].items()
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source_url, codes, envs = prepare(args)
    backfilled = backfill(codes, envs)
    seconds, stages = alternate(args, source_url, codes, envs)
    means = {name: round(statistics.mean(values), 3) for name, values in seconds.items()}
    first, second = (c.name for c in codes)
    document = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.ab " + " ".join(argv if argv is not None else sys.argv[1:]),
        "scale": args.scale,
        "events_per_round": args.events,
        "backfill": backfilled,
        "seconds": seconds,
        "mean_seconds": means,
        "mean_stage_seconds": mean_stage_seconds(stages),
        "ratio": round(means[second] / means[first], 3),
    }
    write_results("ab", args.label, document, markdown(document, first, second))
    return 0


if __name__ == "__main__":
    sys.exit(main())
