"""A run's progress as a person reads it on a terminal: one line per stage as it finishes (assets, rows,
seconds), a summary at the end, and on failure the failed step and its error in full.

It follows the run through the Dagster instance's event log while the run executes in another process
(the contract command, `dagster asset materialize`), so the run itself is the same as anywhere else; the
run's own event log goes to a file (and to the UI, as always)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

STAGES = ("raw", "processed", "warehouse", "reports")
FOLLOWED = {
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_SKIPPED,
    dg.DagsterEventType.STEP_UP_FOR_RETRY,
    dg.DagsterEventType.ASSET_MATERIALIZATION,
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
}
ENDED = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_SKIPPED}
RUN_ENDED = {dg.DagsterEventType.RUN_SUCCESS: "SUCCESS", dg.DagsterEventType.RUN_FAILURE: "FAILURE"}


def step_stages(defs: dg.Definitions) -> dict[str, str]:
    """Step key -> stage (the first part of its assets' keys), for every asset and check step."""
    stages: dict[str, str] = {}
    for assets_def in [*defs.assets, *defs.asset_checks]:
        keys = [*getattr(assets_def, "keys", []), *(k.asset_key for k in getattr(assets_def, "check_keys", []))]
        if keys:
            stages[assets_def.node_def.name] = keys[0].path[0]
    return stages


@dataclass
class StageTally:
    steps: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    assets: int = 0
    rows: int = 0
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)
    reported: bool = False

    def line(self, stage: str) -> str:
        if not self.ended:
            return f"{stage:<10} not run"
        if self.failed:
            return f"{stage:<10} FAILED at {', '.join(self.failed)} after {self.seconds:.1f} s"
        partly = f" ({len(self.ended)} of {len(self.steps)} steps ended)" if self.steps - self.ended else ""
        return f"{stage:<10} {self.assets:>3} assets {self.rows:>12,} rows written {self.seconds:>8.1f} s{partly}"


@dataclass
class RunTally:
    """What a run has done so far, stage by stage, fed its events in order."""

    stage_of: dict[str, str]
    stages: dict[str, StageTally] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said at once: a step retried
    status: str | None = None  # SUCCESS or FAILURE once the run has ended

    def plan(self, step_keys: Iterable[str]) -> None:
        for key in step_keys:
            self.stages.setdefault(self.stage_of.get(key, "other"), StageTally()).steps.add(key)

    def _stage(self, step_key: str | None) -> StageTally:
        return self.stages.setdefault(self.stage_of.get(step_key or "", "other"), StageTally())

    def add(self, event: dg.EventLogEntry) -> None:
        dagster_event = event.dagster_event
        kind, step = dagster_event.event_type, dagster_event.step_key
        if kind == dg.DagsterEventType.STEP_START:
            self.started[step] = event.timestamp
        elif kind in ENDED:
            stage = self._stage(step)
            stage.ended.add(step)
            stage.seconds += event.timestamp - self.started.get(step, event.timestamp)
            if kind == dg.DagsterEventType.STEP_FAILURE:
                stage.failed.append(step)
                self.failures.append((step, error_text(dagster_event.event_specific_data.error)))
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            stage = self._stage(step)
            stage.assets += 1
            stage.rows += rows_written(dagster_event.event_specific_data.materialization.metadata)
        elif kind == dg.DagsterEventType.STEP_UP_FOR_RETRY:
            error = dagster_event.event_specific_data.error
            self.notes.append(f"{step} failed and will be retried: {root_cause(error)}")
        elif kind in RUN_ENDED:
            self.status = RUN_ENDED[kind]

    def finished_lines(self) -> list[str]:
        """Lines of the stages that finished since the last call, in the pipeline's order (and any retries)."""
        lines, self.notes = self.notes, []
        for name in (*STAGES, *sorted(set(self.stages) - set(STAGES))):
            stage = self.stages.get(name)
            if not stage or not stage.steps or stage.reported:
                continue
            if not (stage.steps <= stage.ended or self.status):
                break  # a later stage's checks may end first: it waits for this one, in the pipeline's order
            stage.reported = True
            lines.append(stage.line(name))
        return lines

    def summary(self, run_id: str, seconds: float, log_path: Path) -> str:
        assets = sum(s.assets for s in self.stages.values())
        rows = sum(s.rows for s in self.stages.values())
        if self.status == "SUCCESS":
            return (
                f"run {run_id[:8]} succeeded in {seconds:.1f} s: {assets} assets, {rows:,} rows written; "
                f"event log: {log_path}"
            )
        lines = [f"run {run_id[:8]} FAILED after {seconds:.1f} s; event log: {log_path}"]
        for step, error in self.failures:
            lines += [f"failed step {step}:", error]
        return "\n".join(lines)


def rows_written(metadata) -> int:
    """The rows a materialisation wrote (`rows_written`; `dagster/row_count` is the table's size), else the
    row count (a report: the rows it shows)."""
    for key in ("rows_written", "dagster/row_count"):
        if key in metadata:
            return int(metadata[key].value)
    return 0


def root_cause(error) -> str:
    """The first line of the innermost error (Dagster wraps the asset's own error)."""
    if error is None:
        return "an error"
    while error.cause is not None:
        error = error.cause
    return (error.message.strip().splitlines() or ["an error"])[0]


def error_text(error) -> str:
    parts = []
    while error is not None:
        parts.append(error.message.strip())
        error = error.cause
    return "\n".join(parts)


def find_run(instance: dg.DagsterInstance, after: float) -> dg.DagsterRun | None:
    """The run the contract command started: the newest one created since it was launched by no sensor
    or schedule."""
    for record in instance.get_run_records(limit=5):
        tags = record.dagster_run.tags
        if record.create_timestamp.timestamp() >= after and not (
            "dagster/sensor_name" in tags or "dagster/schedule_name" in tags
        ):
            return record.dagster_run
    return None


def copy_output(process: subprocess.Popen, log_file, echo: Callable[[str], None] | None) -> threading.Thread:
    """Copy the command's output to the log file (and the terminal with --verbose) as it comes."""

    def pump():
        for line in process.stdout:
            log_file.write(line)
            log_file.flush()
            if echo:
                echo(line.rstrip("\n"))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def watch(
    instance: dg.DagsterInstance,
    stage_of: dict[str, str],
    say: Callable[[str], None],
    started: float,
    ended: Callable[[], bool],
    interval: float = 0.5,
) -> tuple[dg.DagsterRun | None, RunTally]:
    """Say each stage of the run started since `started` as it finishes, until `ended()`."""
    run, tally, cursor = None, RunTally(stage_of), None
    while True:
        last_look = ended()
        run = run or find_run(instance, started)
        if run is not None:
            if not tally.stages:
                tally.plan(planned_steps(instance, run))
            cursor = read_events(instance, run.run_id, cursor, tally)
            for line in tally.finished_lines():
                say(line)
        if last_look:
            return run, tally
        time.sleep(interval)


def follow(
    command: list[str],
    env: dict[str, str],
    instance: dg.DagsterInstance,
    stage_of: dict[str, str],
    log_path: Path,
    say: Callable[[str], None],
    verbose: bool = False,
) -> int:
    """Run the command, its output to log_path, and say how far its run is; returns its exit code."""
    started = time.time()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        pump = copy_output(process, log_file, print if verbose else None)
        run, tally = watch(instance, stage_of, say, started, lambda: process.poll() is not None)
        pump.join(timeout=10)
    if run is None:
        say(f"the command failed before starting a run (exit {process.returncode}); its output, from {log_path}:")
        say(log_path.read_text()[-4000:])
        return process.returncode or 1
    say(tally.summary(run.run_id, time.time() - started, log_path))
    return process.returncode


def planned_steps(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    snapshot = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return list(snapshot.step_keys_to_execute or [step.key for step in snapshot.steps])


def read_events(instance: dg.DagsterInstance, run_id: str, cursor: str | None, tally: RunTally) -> str | None:
    while True:
        page = instance.get_records_for_run(run_id, cursor=cursor, of_type=FOLLOWED, limit=500)
        for record in page.records:
            tally.add(record.event_log_entry)
        cursor = page.cursor
        if not page.has_more:
            return cursor
