import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from totesys_platform.catalog import SOURCE_TABLES, WAREHOUSE_TABLES
from totesys_platform.definitions import build_definitions
from totesys_platform.reports.specs import REPORTS
from totesys_platform.settings import load_settings
from totesys_platform_tests.conftest import REPO, free_port, stop_process_group

BIN = Path(sys.executable).parent


@pytest.mark.unit
def test_definitions_load_with_the_expected_groups_and_lineage(tmp_path):
    defs = build_definitions(load_settings({"TOTESYS_HOME": str(tmp_path)}))
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {f"raw/{t.name}" for t in SOURCE_TABLES} | {f"processed/{t.name}" for t in WAREHOUSE_TABLES} | {
        f"warehouse/{t.name}" for t in WAREHOUSE_TABLES
    } | {f"reports/{r.name}" for r in REPORTS} | {"reports/dashboard", "warehouse/source_deletions"}
    groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == {"raw", "processed", "warehouse", "reports"}
    dashboard_parents = graph.get(dg.AssetKey(["reports", "dashboard"])).parent_keys
    assert {k.to_user_string() for k in dashboard_parents} == {f"reports/{r.name}" for r in REPORTS}
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey(["warehouse", "fact_sales_order"])).parent_keys}
    assert parents >= {"processed/fact_sales_order", "warehouse/dim_staff", "warehouse/dim_date"}
    assert {k.to_user_string() for k in graph.get(dg.AssetKey(["processed", "dim_staff"])).parent_keys} == {
        "raw/staff",
        "raw/department",
    }
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, key


def validate(tmp_path, **env: str) -> subprocess.CompletedProcess:
    """`dagster definitions validate -m totesys_platform` with the given settings."""
    return subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-m", "totesys_platform"],
        env={**os.environ, "TOTESYS_HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.mark.unit
def test_dagster_definitions_validate_passes(tmp_path):
    done = validate(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.unit
def test_a_bad_setting_stops_the_code_location_naming_the_variable(tmp_path):
    done = validate(tmp_path, TOTESYS_SOURCE_URL="postgresql://u:hunter2@host:99999/x")
    assert done.returncode != 0
    assert "TOTESYS_SOURCE_URL" in done.stderr + done.stdout and "hunter2" not in done.stderr + done.stdout


def test_dg_checks_and_lists_the_definitions_from_the_project_root(tmp_path):
    env = {**os.environ, "TOTESYS_HOME": str(tmp_path), "PATH": f"{BIN}:{os.environ['PATH']}"}
    check = subprocess.run([str(BIN / "dg"), "check", "defs"], env=env, cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0 and "All definitions loaded successfully" in check.stdout + check.stderr
    listed = subprocess.run(
        [str(BIN / "dg"), "list", "defs", "--json"], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    defs = json.loads(listed.stdout)
    assert len(defs["assets"]) == 11 + 18 + 18 + 1 + len(REPORTS) + 1
    assert {s["name"] for s in defs["sensors"]} >= {"totesys_change_sensor"}


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize(
    "command", [["dagster-webserver", "-w", "workspace.yaml"], ["dg", "dev"]], ids=["webserver", "dg-dev"]
)
def test_webserver_serves_the_asset_graph_over_graphql(tmp_path, command):
    port = free_port()
    env = {**os.environ, "TOTESYS_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    server = subprocess.Popen(
        [str(BIN / command[0]), *command[1:], "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env={**env, "PATH": f"{BIN}:{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, stopped whole
    )
    try:
        deadline = time.monotonic() + 120
        nodes = None
        while time.monotonic() < deadline:
            try:
                nodes = graphql(port, "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }")["data"][
                    "assetNodes"
                ]
                if nodes:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert nodes, "the webserver did not serve the asset graph"
        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert len(by_key) == 11 + 18 + 18 + 1 + len(REPORTS) + 1
        assert {"/".join(d["path"]) for d in by_key["processed/fact_payment"]["dependencyKeys"]} >= {"raw/payment"}
        assert {"/".join(d["path"]) for d in by_key["warehouse/fact_payment"]["dependencyKeys"]} >= {
            "processed/fact_payment"
        }
        assert by_key["warehouse/dim_date"]["groupName"] == "warehouse"
    finally:
        stop_process_group(server)
    assert server.returncode is not None
