import os
import subprocess
import sys
from pathlib import Path

import pytest

from totesys_platform.resources.postgres import DatabaseUnavailableError, PostgresResource
from totesys_platform.settings import SettingsError, load_settings, redact_url


@pytest.mark.unit
def test_unset_means_embedded_and_local_zones(tmp_path: Path):
    settings = load_settings({"TOTESYS_HOME": str(tmp_path)})
    assert settings.source_url is None and settings.warehouse_url is None
    assert settings.ingestion_url == str(tmp_path / "lake" / "ingestion")
    assert settings.processed_url == str(tmp_path / "lake" / "processed")
    assert settings.warehouse_schema == "public"
    assert settings.describe()["source"].startswith("embedded")


@pytest.mark.unit
def test_s3_zones_and_schema_are_accepted(tmp_path: Path):
    settings = load_settings(
        {
            "TOTESYS_HOME": str(tmp_path),
            "TOTESYS_INGESTION_URL": "s3://tote-ingestion/zone/",
            "TOTESYS_PROCESSED_URL": "s3://tote-processed",
            "TOTESYS_WAREHOUSE_SCHEMA": "project_team_7",
        }
    )
    assert settings.ingestion_url == "s3://tote-ingestion/zone"
    assert settings.warehouse_schema == "project_team_7"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TOTESYS_SOURCE_URL", "nonsense", "must be a PostgreSQL URL"),
        ("TOTESYS_WAREHOUSE_URL", "mysql://u:hunter2@h/db", "must be a PostgreSQL URL"),
        ("TOTESYS_SOURCE_URL", "postgresql://u:hunter2@db.example:5432/", "names no database"),
        ("TOTESYS_SOURCE_URL", "postgresql://u:hunter2@db.example:notaport/x", "not a valid URL"),
        ("TOTESYS_WAREHOUSE_SCHEMA", "public; DROP TABLE x", "lower-case SQL identifier"),
        ("TOTESYS_INGESTION_URL", "s3://No_Such", "not a valid S3 bucket name"),
        ("TOTESYS_PROCESSED_URL", "gs://bucket/x", "only local paths and s3://"),
        ("TOTESYS_LOOKBACK_SECONDS", "ten", "whole number"),
    ],
)
@pytest.mark.unit
def test_bad_settings_name_the_variable_and_hide_the_password(variable, value, expected):
    with pytest.raises(SettingsError) as err:
        load_settings({variable: value})
    message = str(err.value)
    assert variable in message and expected in message
    assert "hunter2" not in message


@pytest.mark.unit
def test_redact_url_hides_only_the_password():
    assert redact_url("postgresql://user:s3cret@host:5432/db") == "postgresql://user:***@host:5432/db"
    assert redact_url("postgresql://user@host/db") == "postgresql://user@host/db"


@pytest.mark.unit
def test_unreachable_database_fails_fast_naming_the_setting():
    port = __import__("totesys_platform_tests.conftest", fromlist=["free_port"]).free_port()
    db = PostgresResource(url=f"postgresql://tote:hunter2@127.0.0.1:{port}/totesys", setting_name="TOTESYS_SOURCE_URL")
    with pytest.raises(DatabaseUnavailableError) as err, db.connect():
        pass
    assert "TOTESYS_SOURCE_URL" in str(err.value)
    assert "hunter2" not in str(err.value) and "***" in str(err.value)


@pytest.mark.unit
def test_a_url_from_the_environment_resolves_outside_a_run_and_shows_as_its_name(monkeypatch, tmp_path):
    from totesys_platform.definitions import build_resources, database_resource

    url = "postgresql://tote:hunter2@127.0.0.1:5432/totesys"
    monkeypatch.setenv("TOTESYS_SOURCE_URL", url)
    settings = load_settings({"TOTESYS_HOME": str(tmp_path), "TOTESYS_SOURCE_URL": url})
    assert database_resource(settings, "source").resolved_url() == url
    assert "hunter2" not in repr(build_resources(settings)["source_db"].url)


@pytest.mark.unit
def test_a_zone_url_that_cannot_be_a_folder_is_named_at_start_up(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SettingsError, match=r"TOTESYS_PROCESSED_URL=.*cannot be a folder: .*a-file is a file"):
        load_settings({"TOTESYS_HOME": str(tmp_path), "TOTESYS_PROCESSED_URL": str(blocker / "processed")})


POLARS_ALLOCATOR_AT_FIRST_IMPORT = """
import builtins, os, sys
seen = []
real_import = builtins.__import__
def watching(name, *args, **kwargs):
    if name.split(".")[0] == "polars" and "polars" not in sys.modules and not seen:
        seen.append(os.environ.get("_RJEM_MALLOC_CONF"))
    return real_import(name, *args, **kwargs)
builtins.__import__ = watching
import totesys_platform
print(seen[0] if seen else "polars never imported")
"""


@pytest.mark.parametrize("deployed", [None, "dirty_decay_ms:0,muzzy_decay_ms:0"])
@pytest.mark.unit
def test_polars_allocator_returns_freed_memory_promptly_unless_the_deployment_says_otherwise(deployed):
    """Polars' jemalloc reads its settings once, as Polars is first loaded: the platform's must be there by then."""
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    if deployed:
        env["_RJEM_MALLOC_CONF"] = deployed
    done = subprocess.run(
        [sys.executable, "-c", POLARS_ALLOCATOR_AT_FIRST_IMPORT], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == (deployed or "background_thread:true,dirty_decay_ms:100,muzzy_decay_ms:0")
