"""The command line's stage lines, fed events as a run emits them (no Dagster instance)."""

from types import SimpleNamespace

import dagster as dg

from totesys_platform.run_progress import RunTally


def event(kind: dg.DagsterEventType, step: str, at: float) -> SimpleNamespace:
    return SimpleNamespace(timestamp=at, dagster_event=SimpleNamespace(event_type=kind, step_key=step))


def test_a_stage_is_said_only_after_the_stages_before_it_even_when_it_ends_first():
    tally = RunTally({"load": "warehouse", "check": "warehouse", "summary": "reports"})
    tally.plan(["load", "check", "summary"])
    tally.add(event(dg.DagsterEventType.STEP_START, "load", 0.0))
    tally.add(event(dg.DagsterEventType.STEP_SUCCESS, "load", 1.0))
    tally.add(event(dg.DagsterEventType.STEP_START, "summary", 1.0))
    tally.add(event(dg.DagsterEventType.STEP_SUCCESS, "summary", 1.5))
    assert tally.finished_lines() == []  # reports ended, but the warehouse's check has not
    tally.add(event(dg.DagsterEventType.STEP_START, "check", 1.5))
    tally.add(event(dg.DagsterEventType.STEP_SUCCESS, "check", 2.0))
    lines = tally.finished_lines()
    assert [line.split()[0] for line in lines] == ["warehouse", "reports"]
    assert "1.5 s" in lines[0] and tally.finished_lines() == []


def test_a_failed_step_is_named_with_its_error_and_the_run_end_says_the_stages_not_run():
    tally = RunTally({"ingest": "raw", "build": "processed"})
    tally.plan(["ingest", "build"])
    tally.add(event(dg.DagsterEventType.STEP_START, "ingest", 0.0))
    error = SimpleNamespace(message="could not connect\n", cause=SimpleNamespace(message="refused", cause=None))
    failure = event(dg.DagsterEventType.STEP_FAILURE, "ingest", 2.0)
    failure.dagster_event.event_specific_data = SimpleNamespace(error=error)
    tally.add(failure)
    assert tally.finished_lines() == ["raw        FAILED at ingest after 2.0 s"]
    assert tally.failures == [("ingest", "could not connect\nrefused")]
    tally.add(event(dg.DagsterEventType.RUN_FAILURE, None, 2.1))
    assert tally.finished_lines() == ["processed  not run"]
