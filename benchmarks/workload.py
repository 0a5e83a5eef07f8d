"""One measured run of the asset graph (with its checks) in this process, as the platform runs it.

Run by benchmarks/run.py in a child process so that its peak RSS is the run's own. Prints one JSON
line: wall seconds, peak RSS, seconds per stage (from Dagster's step events) and rows per stage.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from collections import defaultdict

import dagster as dg
import psutil

from totesys_platform.automation import NIGHTLY_ONLY_CHECKS
from totesys_platform.definitions import build_assets, build_resources
from totesys_platform.settings import load_settings
from totesys_platform.warehouse.checks import build_checks

# Check steps of their own: the full-table rule checks (the reconciliation runs in the warehouse steps).
CHECK_SUFFIXES = ("_meets_the_star_schema_rules",)


def stage_of(step_key: str) -> str:
    if step_key.endswith(CHECK_SUFFIXES):
        return "checks"
    if step_key.startswith("raw_"):
        return "extract"
    return step_key.split("__", 1)[0]  # processed, warehouse, reports


def rows_of(event) -> tuple[str, int]:
    materialization = event.event_specific_data.materialization
    stage = stage_of(event.step_key)
    metadata = materialization.metadata
    value = metadata.get("rows_written", metadata.get("dagster/row_count"))
    return stage, int(value.value) if value is not None else 0


class RssSampler(threading.Thread):
    """Samples this process's RSS every 50 ms, so peaks can be attributed to the steps running then."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.running = True

    def run(self):
        process = psutil.Process()
        while self.running:
            self.samples.append((time.time(), process.memory_info().rss))
            time.sleep(0.05)

    def peak_mb(self, start: float, end: float) -> float:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return round(max(inside, default=0) / 2**20, 1)


def run_with_progress(materialize, instance: dg.DagsterInstance):
    """The run in a thread while this one says each stage as it finishes, on stderr (stdout is the result)."""
    from totesys_platform.definitions import defs
    from totesys_platform.run_progress import step_stages, watch

    outcome: list = []
    runner = threading.Thread(target=lambda: outcome.append(materialize()))
    started = time.time()
    runner.start()
    say = lambda line: print(f"[bench]   {line}", file=sys.stderr, flush=True)  # noqa: E731
    watch(instance, step_stages(defs), say, started, lambda: not runner.is_alive(), interval=1.0)
    runner.join()
    return outcome[0]


def main() -> None:
    settings = load_settings()
    instance = dg.DagsterInstance.ephemeral()
    sampler = RssSampler()
    sampler.start()
    started = time.perf_counter()
    # The checks a sensor run includes (the full-table rule checks are nightly; --nightly adds them).
    nightly = "--nightly" in sys.argv
    checks = [
        c for c in build_checks() if nightly or not any(k.name.endswith(NIGHTLY_ONLY_CHECKS) for k in c.check_keys)
    ]
    result = run_with_progress(
        lambda: dg.materialize(
            [*build_assets(settings), *checks],
            resources=build_resources(settings),
            instance=instance,
            raise_on_error=False,
        ),
        instance,
    )
    wall = time.perf_counter() - started
    sampler.running = False
    starts, seconds, rows, peaks = {}, defaultdict(float), defaultdict(int), defaultdict(float)
    step_peaks: dict[str, float] = {}
    events: dict[str, int] = defaultdict(int)
    steps = 0
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None:
            events["log message"] += 1
            continue
        events[event.event_type_value] += 1
        steps += event.event_type_value == "STEP_START"
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in starts:
            stage = stage_of(event.step_key)
            seconds[stage] += entry.timestamp - starts[event.step_key]
            step_peaks[event.step_key] = sampler.peak_mb(starts[event.step_key], entry.timestamp)
            peaks[stage] = max(peaks[stage], step_peaks[event.step_key])
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            stage, n = rows_of(event)
            rows[stage] += n
    report = {
        "success": result.success,
        "wall_seconds": round(wall, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "stage_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "stage_rows": dict(rows),
        "stage_peak_rss_mb": dict(peaks),
        "step_peak_rss_mb": step_peaks,  # in the order the steps ended
        # Dagster's own cost per run follows its steps and stored events (each is a write to the event log).
        "steps": steps,
        "events": sum(events.values()),
        "events_by_type": dict(sorted(events.items(), key=lambda kv: -kv[1])),
    }
    print("BENCHMARK " + json.dumps(report), flush=True)
    sys.exit(0 if result.success else 1)


if __name__ == "__main__":
    main()
