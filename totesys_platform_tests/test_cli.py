"""The `totesys` command as a person uses it: one line per stage, the event log in a file, errors in full; and
the demo's install set (runtime only, no test or deployment tools)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from totesys_platform.catalog import SOURCE_TABLES
from totesys_platform_tests.conftest import REPO, free_port, make_settings

BIN = Path(sys.executable).parent


def totesys(settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "TOTESYS_HOME": str(settings.home),
        "TOTESYS_SOURCE_URL": settings.source_url,
        "TOTESYS_WAREHOUSE_URL": settings.warehouse_url,
        "TOTESYS_INGESTION_URL": settings.ingestion_url,
        "TOTESYS_PROCESSED_URL": settings.processed_url,
        "TOTESYS_MAX_RETRIES": "0",
    }
    return subprocess.run([str(BIN / "totesys"), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


def source_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return sum(conn.execute(f'SELECT count(*) FROM "{t.name}"').fetchone()[0] for t in SOURCE_TABLES)


@pytest.mark.slow
def test_materialize_says_each_stage_in_order_and_keeps_the_event_log_in_a_file(platform, tmp_path):
    done = totesys(platform, tmp_path, "materialize")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    stages = [re.match(r"\[totesys\] (\w+) +(\d+) assets +([\d,]+) rows written", line) for line in lines]
    stages = [m.groups() for m in stages if m]
    assert [s[0] for s in stages] == ["raw", "processed", "warehouse", "reports"]
    assert stages[0][1] == "11" and int(stages[0][2].replace(",", "")) == source_rows(platform.source_url)
    # processed: the spec's tables and the 7 histories; the warehouse: the same and source_deletions
    assert stages[1][1] == "18" and stages[2][1] == "19"
    assert "succeeded" in lines[-1] and "STEP_OUTPUT" not in done.stdout + done.stderr  # no event log on screen
    log_path = Path(re.search(r"event log: (\S+)", lines[-1]).group(1))
    assert log_path.is_file() and "STEP_SUCCESS" in log_path.read_text()
    verbose = totesys(platform, tmp_path, "materialize", "--verbose")  # nothing new: the event log on screen too
    assert verbose.returncode == 0 and "STEP_SUCCESS" in verbose.stdout
    assert re.search(r"\[totesys\] raw +11 assets +0 rows written", verbose.stdout)


@pytest.mark.slow
def test_a_failing_materialize_prints_the_failed_step_and_its_error(platform, tmp_path):
    down = make_settings(tmp_path, f"postgresql://tote:hunter2@127.0.0.1:{free_port()}/totesys", platform.warehouse_url)
    done = totesys(down, tmp_path, "materialize")
    assert done.returncode != 0
    assert "[totesys] raw        FAILED at raw_totesys_tables" in done.stdout
    assert "[totesys] warehouse  not run" in done.stdout
    assert "failed step raw_totesys_tables:" in done.stdout and "TOTESYS_SOURCE_URL: cannot connect" in done.stdout
    assert "hunter2" not in done.stdout + done.stderr


@pytest.mark.slow
def test_the_demo_installs_the_runtime_only(tmp_path):
    """scripts/demo's install set, resolved by pip from the same bootstrap profile (nothing installed)."""

    def install_set(*profile: str) -> set[str]:
        report = tmp_path / f"report-{'-'.join(profile) or 'runtime'}.json"
        env = {**os.environ, "BOOTSTRAP_REPORT": str(report), "PYTHON": sys.executable}
        subprocess.run(["bash", "scripts/bootstrap", *profile], cwd=REPO, env=env, check=True, timeout=600)
        return {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}

    runtime, test = install_set(), install_set("test")
    assert {"dagster", "dagster-webserver", "polars", "deltalake"} <= runtime
    assert not {"aws-cdk-lib", "cfn-lint", "pytest", "moto", "ruff"} & runtime
    assert {"aws-cdk-lib", "pytest", "moto"} <= test
    assert "scripts/bootstrap\n" in (REPO / "scripts" / "demo").read_text()  # the demo asks for the runtime profile
