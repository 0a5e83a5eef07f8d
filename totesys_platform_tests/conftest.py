"""Shared fixtures: a real PostgreSQL (pgserver, started here), a moto S3 server over HTTP, the totesys
source, and a helper that runs the asset graph in process.

The source is the real public sample from ../shared/totesys-sample (read at test time, never copied;
TOTESYS_SAMPLE_DIR to read it elsewhere). On a clone without it, every test that needs a populated
source runs on the generator's source of the same shape (scale 1, seed 42, the same row counts) and
asserts the same behaviours; only the tests of the sample files themselves skip, saying why. The
pytest header names the source the run used."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from totesys_platform.definitions import build_assets, build_resources
from totesys_platform.settings import Settings, load_settings
from totesys_platform.source import create_schema
from totesys_platform.source.sample import load_sample

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(os.environ.get("TOTESYS_SAMPLE_DIR") or REPO.parent / "shared" / "totesys-sample")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SAMPLE_PRESENT = (SAMPLE_DIR / "oltp_2024-11-14").is_dir()
GENERATED = {"scale": 1, "seed": 42}


def pytest_collection_modifyitems(items) -> None:
    """Tests under unit/ are the fast layer, marked `unit` (`scripts/test -m unit`); the longest run first."""
    unit = Path(__file__).parent / "unit"
    for item in items:
        if unit in Path(item.fspath).parents:
            item.add_marker(pytest.mark.unit)
    # The longest first: under xdist the tests that wait on live dagster processes overlap the rest.
    items.sort(key=lambda item: 0 if item.get_closest_marker("e2e") else 1 if item.get_closest_marker("slow") else 2)


def pytest_report_header(config) -> str:
    if SAMPLE_PRESENT:
        return f"totesys source: the real public sample at {SAMPLE_DIR}"
    return (
        f"totesys source: GENERATED (scale {GENERATED['scale']}, seed {GENERATED['seed']}); the real sample is "
        f"not at {SAMPLE_DIR} (set TOTESYS_SAMPLE_DIR), so the tests of the sample files themselves skip"
    )


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not SAMPLE_PRESENT:
        pytest.skip(f"tests the real sample files, which are not at {SAMPLE_DIR} (set TOTESYS_SAMPLE_DIR)")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def generated_tables():
    from totesys_platform.source.generator import generate

    return generate(GENERATED["scale"], GENERATED["seed"])


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A real PostgreSQL 16 server for the whole session (short path: unix socket length limit)."""
    from totesys_platform.resources.embedded import start_embedded_server, stop_embedded_server

    root = Path(tempfile.mkdtemp(prefix="tt-", dir="/tmp"))
    url = start_embedded_server(root / "pg")
    yield url
    stop_embedded_server(root / "pg")
    shutil.rmtree(root, ignore_errors=True)


def create_database(admin_url: str, prefix: str = "db", template: str = "template1") -> str:
    """A new database on the session server (a copy of `template`); returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return admin_url.replace("/postgres?", f"/{name}?", 1)


@pytest.fixture
def new_database(pg_admin_url: str):
    """Factory: a fresh, empty database on the session server; returns its URL."""

    def create(prefix: str = "db") -> str:
        return create_database(pg_admin_url, prefix)

    return create


def fill_source(url: str, request) -> None:
    """Create the totesys schema at `url` and load the real public sample (or, without it, the generated source)."""
    from totesys_platform.source import LOAD_ORDER, copy_frame, reset_sequences

    with psycopg.connect(url) as conn:
        create_schema(conn)
        if SAMPLE_PRESENT:
            load_sample(conn, SAMPLE_DIR)
        else:
            tables = request.getfixturevalue("generated_tables")
            for name in LOAD_ORDER:
                copy_frame(conn, name, tables[name])
            reset_sequences(conn)


@pytest.fixture(scope="session")
def source_template(pg_admin_url: str, request) -> str:
    """The name of a database loaded with the source once per session; each test's source is a copy of it
    (CREATE DATABASE ... TEMPLATE copies files: much faster than loading the sample again)."""
    url = create_database(pg_admin_url, "totesys_template")
    fill_source(url, request)
    return psycopg.conninfo.conninfo_to_dict(url)["dbname"]


@pytest.fixture
def sample_source(pg_admin_url: str, source_template: str) -> str:
    """A totesys database of its own holding the real public sample (or, without it, the generated source)."""
    return create_database(pg_admin_url, "totesys", template=source_template)


def make_settings(tmp_path: Path, source_url: str, warehouse_url: str, **env: str) -> Settings:
    return load_settings(
        {
            "TOTESYS_HOME": str(tmp_path / "home"),
            "TOTESYS_SOURCE_URL": source_url,
            "TOTESYS_WAREHOUSE_URL": warehouse_url,
            "TOTESYS_INGESTION_URL": str(tmp_path / "lake" / "ingestion"),
            "TOTESYS_PROCESSED_URL": str(tmp_path / "lake" / "processed"),
            "TOTESYS_MAX_RETRIES": "0",  # failure tests fail at once; retries are tested on their own
            **env,
        }
    )


@pytest.fixture
def platform(tmp_path: Path, sample_source: str, new_database):
    """Settings for a platform reading the real sample into a fresh warehouse and tmp lake."""
    return make_settings(tmp_path, sample_source, new_database("warehouse"))


def run_graph(settings: Settings, selection: str | list | None = None, instance=None, raise_on_error: bool = True):
    """Materialise the asset graph in process (the same executor the platform uses)."""
    return dg.materialize(
        build_assets(settings),
        resources=build_resources(settings),
        selection=selection,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3/Secrets Manager/SNS server in its own process on a free loopback port, spoken to over HTTP.

    Its own process, like a real S3: delta-rs holds the GIL while it waits for some S3 answers, so a
    server thread inside the test process would never get to answer them."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    recording = Path(tempfile.mkdtemp(prefix="moto-")) / "recording.jsonl"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # moto's request recorder (off until a test starts it: /moto-api/recorder/start-recording)
        env={**os.environ, "MOTO_RECORDER_FILEPATH": str(recording)},
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)  # noqa: S310 - loopback test server
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto's server did not start") from None
            time.sleep(0.2)
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    yield endpoint
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
    shutil.rmtree(recording.parent, ignore_errors=True)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def stop_process_group(process) -> None:
    """Stop a server started with start_new_session=True the way that always works: SIGTERM to its whole
    process group, a grace period, then SIGKILL to the group. Never raises: a slow shutdown on a busy
    machine must not turn a passing behaviour red."""
    import signal
    import subprocess

    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived their parent
    except ProcessLookupError:
        pass


def lake_table(zone_url: str, name: str):
    """A processed or raw Delta table of a test's lake, as the IO managers hand it to assets."""
    from totesys_platform.resources.io_managers import LakeTable
    from totesys_platform.resources.lake import LakeZone

    return LakeTable(LakeZone(url=zone_url), name)


def append_rows(table, frame) -> None:
    """Commit extra rows to a lake table (tests that need a repeated or broken row in a zone)."""
    from totesys_platform.resources.spool import Spool

    with Spool() as spool:
        spool.add(frame)
        table.zone.append(table.name, spool.reader(), {}, append_only=False)


def failure_text(result) -> str:
    """Every message in the first step failure's error chain (Dagster wraps the asset's own error)."""
    event = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error, parts = event.event_specific_data.error, []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "\n".join(parts)


def check_evaluation(result, asset: str, check: str):
    """The one evaluation of `check` on `asset` in a run's result."""
    (evaluation,) = [
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == asset and e.check_name == check
    ]
    return evaluation


@pytest.fixture
def smtp_inbox():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received = []

    class Inbox(Message):
        def handle_message(self, message):
            received.append(message)

    port = free_port()
    controller = Controller(Inbox(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, received
    controller.stop()


def wait_for_mail(received: list, count: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # and nothing more arrives
