import contextlib
import json
import multiprocessing
import time
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from totesys_platform.automation import totesys_failure_email_sensor
from totesys_platform.cli import LOCAL_INSTANCE_YAML
from totesys_platform.definitions import build_definitions
from totesys_platform.reports.specs import REPORTS
from totesys_platform.resources.alerts import AlertSettings
from totesys_platform.source.simulator import Simulator
from totesys_platform_tests.conftest import check_evaluation, free_port, make_settings, run_graph, wait_for_mail

# 11 raw; 11 processed and 7 histories; the same 18 in the warehouse and source_deletions; reports; dashboard
ALL_ASSETS = 11 + 18 + 18 + 1 + len(REPORTS) + 1


def evaluate(defs: dg.Definitions, instance, cursor=None):
    sensor = defs.get_sensor_def("totesys_change_sensor")
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources={"source_db": defs.resources["source_db"]}
    ) as context:
        return sensor.evaluate_tick(context)


def test_change_sensor_requests_exactly_the_changed_tables_and_downstream(platform):
    defs = build_definitions(platform)
    instance = dg.DagsterInstance.ephemeral()
    first = evaluate(defs, instance)
    assert len(first.run_requests) == 1 and len(first.run_requests[0].asset_selection) == ALL_ASSETS
    quiet = evaluate(defs, instance, first.cursor)
    assert not quiet.run_requests and "no readable catalog table changed" in quiet.skip_message
    with psycopg.connect(platform.source_url) as conn:
        Simulator(conn).payment_paid()
    changed = evaluate(defs, instance, first.cursor)
    (request,) = changed.run_requests
    keys = {k.to_user_string() for k in request.asset_selection}
    assert "raw/payment" in keys and "warehouse/fact_payment" in keys and "processed/dim_date" in keys
    assert not any(k.startswith("raw/") and k != "raw/payment" for k in keys)
    assert "warehouse/dim_staff" not in keys
    assert request.tags["totesys/changed_tables"] == "payment"
    checks = {k.to_user_string() for k in request.asset_check_keys}
    assert "warehouse/fact_payment:fact_payment_reconciles_with_the_ingestion_zone" in checks
    assert "processed/fact_payment:fact_payment_batch_meets_the_star_schema_rules" in checks
    assert not any(c.startswith("warehouse/") and c.endswith("_meets_the_star_schema_rules") for c in checks)  # nightly
    assert not any(c.startswith("raw/staff") for c in checks)
    again = evaluate(defs, instance, first.cursor)
    assert again.run_requests[0].run_key == request.run_key  # the same change: the same run key (deduplicated)


def add_sensor_run(instance, status) -> None:
    """A run the change sensor started, in the given status."""
    instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            run_id=str(uuid.uuid4()),
            status=status,
            tags={"dagster/sensor_name": "totesys_change_sensor"},
        )
    )


def test_change_sensor_does_not_pile_up_runs(platform):
    defs = build_definitions(platform)
    instance = dg.DagsterInstance.ephemeral()
    add_sensor_run(instance, dg.DagsterRunStatus.STARTED)
    result = evaluate(defs, instance)
    assert not result.run_requests and "still in flight" in result.skip_message


@pytest.mark.unit
def test_warehouse_assets_carry_the_30_minute_freshness_policy_and_retries(tmp_path):
    defs = build_definitions(
        make_settings(tmp_path, "postgresql://u@h/s", "postgresql://u@h/w", TOTESYS_MAX_RETRIES="2")
    )
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if key.path[0] == "warehouse":
            policy = node.freshness_policy
            assert policy.fail_window.to_timedelta().total_seconds() == 1800
            assert policy.warn_window.to_timedelta().total_seconds() == 900
    job = defs.resolve_job_def("totesys_pipeline_job")
    check_steps = (
        "_meets_the_star_schema_rules",
        "_reconciles_with_the_ingestion_zone",
        "reconcile_source_with_the_lake",
    )
    asset_steps = [n for n in job.graph.node_defs if not n.name.endswith(check_steps)]
    # One raw multi-asset, 18 processed, 18 warehouse and source_deletions, one reports multi-asset.
    assert len(asset_steps) == 39
    assert all(node.retry_policy and node.retry_policy.max_retries == 2 for node in asset_steps)
    assert {s.name for s in defs.sensors} == {
        "totesys_change_sensor",
        "totesys_failure_email_sensor",
        "totesys_incident_alert_sensor",
    }
    assert defs.get_schedule_def("nightly_reconciliation_schedule").cron_schedule == "0 2 * * *"
    # The source reconciliation runs first, so that the 02:00 run carries what it found to the warehouse.
    reconcile = defs.get_schedule_def("nightly_source_reconciliation_schedule")
    assert reconcile.cron_schedule == "30 1 * * *" and reconcile.job_name == "totesys_reconcile_job"


def failed_run(platform, tmp_path):
    """A run that fails (the source is down) and the failure sensor's context for it."""
    down = make_settings(tmp_path, f"postgresql://tote:hunter2@127.0.0.1:{free_port()}/totesys", platform.warehouse_url)
    instance = dg.DagsterInstance.ephemeral()
    result = run_graph(down, "group:raw", instance=instance, raise_on_error=False)
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="totesys_failure_email_sensor",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()
    return result, context


def test_a_failed_run_sends_an_email_with_the_run_step_and_error(platform, tmp_path, smtp_inbox, monkeypatch):
    port, received = smtp_inbox
    monkeypatch.setenv("TOTESYS_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TOTESYS_SMTP_PORT", str(port))
    monkeypatch.setenv("TOTESYS_SMTP_SECURITY", "none")
    monkeypatch.setenv("TOTESYS_ALERT_TO", "data-team@terrifictotes.com")
    result, context = failed_run(platform, tmp_path)
    totesys_failure_email_sensor(context)
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        time.sleep(0.1)
    (mail,) = received
    body = mail.get_payload(decode=True).decode()
    assert result.run_id[:8] in mail["Subject"] and "raw_totesys_tables" in mail["Subject"]
    assert result.run_id in body and f"/runs/{result.run_id}" in body
    assert "TOTESYS_SOURCE_URL: cannot connect" in body and "hunter2" not in body


@pytest.mark.unit
def test_unconfigured_alerts_are_off_with_a_log_line(caplog, monkeypatch):
    for name in ("TOTESYS_SMTP_HOST", "TOTESYS_ALERT_TO"):
        monkeypatch.delenv(name, raising=False)
    assert AlertSettings.from_env() is None
    with pytest.raises(ValueError, match="TOTESYS_SMTP_SECURITY"):
        AlertSettings.from_env({"TOTESYS_SMTP_HOST": "h", "TOTESYS_ALERT_TO": "a@b", "TOTESYS_SMTP_SECURITY": "tls1"})


def _slow_raw_run(settings, dagster_home: str | None, barrier, results, without_locks: bool) -> None:
    """In a process of its own: one run of the raw step, each table's ingestion slowed down a little.

    Puts (success, rows ingested, first ingestion start, last ingestion end, pool slots) on `results`."""
    import totesys_platform.raw.extract as raw_extract
    from totesys_platform.resources.postgres import PostgresResource

    spans: list[float] = []
    real_ingest = raw_extract.ingest_table

    def slow_ingest(*args, **kwargs):
        spans.append(time.time())
        try:
            return real_ingest(*args, **kwargs)
        finally:
            time.sleep(0.3)  # long enough that two unguarded runs overlap
            spans.append(time.time())

    raw_extract.ingest_table = slow_ingest
    if without_locks:
        PostgresResource.exclusive = lambda self, name, **kwargs: contextlib.nullcontext()
    with dg.DagsterInstance.from_config(dagster_home) if dagster_home else dg.DagsterInstance.ephemeral() as instance:
        barrier.wait(timeout=120)  # both runs start together, however long the imports took
        result = run_graph(settings, "group:raw", instance=instance, raise_on_error=False)
        slots = instance.event_log_storage.get_concurrency_info("totesys_source").slot_count if dagster_home else 0
    rows = sum(m.metadata["rows_written"].value for m in result.asset_materializations_for_node("raw_totesys_tables"))
    results.put((result.success, rows, min(spans), max(spans), slots))


def _two_raw_runs_at_once(settings, dagster_home: Path | None, without_locks: bool = False) -> list[tuple]:
    if dagster_home:
        with dg.DagsterInstance.from_config(str(dagster_home)):
            pass  # create the instance's storage once, before two processes race to
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(2), spawn.Queue()
    args = (settings, str(dagster_home) if dagster_home else None, barrier, results, without_locks)
    workers = [spawn.Process(target=_slow_raw_run, args=args) for _ in range(2)]
    for worker in workers:
        worker.start()
    runs = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert all(success for success, *_ in runs), runs
    return runs


def _disjoint(a, b) -> bool:
    return a[3] <= b[2] or b[3] <= a[2]


@pytest.mark.slow
@pytest.mark.parametrize("instance", ["shipped local instance", "ephemeral instance (no pools)"])
def test_a_second_run_waits_instead_of_ingesting_the_same_tables_at_once(platform, tmp_path, instance):
    dagster_home = None
    if instance == "shipped local instance":
        dagster_home = tmp_path / "dagster_home"
        dagster_home.mkdir()
        (dagster_home / "dagster.yaml").write_text(LOCAL_INSTANCE_YAML.read_text())
    a, b = _two_raw_runs_at_once(platform, dagster_home)
    assert _disjoint(a, b), f"two runs ingested at the same time ({instance})"
    assert sorted([a[1], b[1]])[0] == 0 < sorted([a[1], b[1]])[1]  # the one that waited found nothing new
    if dagster_home:
        assert a[4] == b[4] == 1  # the shipped config limits the pool to one step at a time


@pytest.mark.slow
def test_without_the_pool_and_the_locks_two_runs_do_overlap(platform, tmp_path):
    """The control for the test above: it would catch the guards going missing."""
    a, b = _two_raw_runs_at_once(platform, None, without_locks=True)
    assert not _disjoint(a, b)


def test_a_step_lock_waits_for_its_holder_names_it_and_times_out_clearly(platform):
    from totesys_platform.definitions import database_resource
    from totesys_platform.resources.postgres import StepLockTimeoutError

    db = database_resource(platform, "warehouse")
    said: list[str] = []
    with db.exclusive("totesys_platform test lock", holder="totesys raw run-a", log=said.append):
        with pytest.raises(StepLockTimeoutError, match="another run kept doing the same work for over 1s"):
            with db.exclusive(
                "totesys_platform test lock", holder="totesys raw run-b", log=said.append, wait_seconds=1
            ):
                pytest.fail("a second holder got the lock")
        assert said == ["totesys raw run-b: waiting for totesys raw run-a to finish the same work"]
        with db.exclusive("totesys_platform another lock", holder="totesys other", log=said.append):
            pass  # a different name does not wait
    with db.exclusive("totesys_platform test lock", holder="totesys raw run-c", log=said.append, wait_seconds=1):
        pass  # released when the block ends
    assert len(said) == 1


def test_a_run_reuses_its_connections_clean_and_closes_them_at_the_end(platform):
    from types import SimpleNamespace

    from totesys_platform.definitions import database_resource

    db = database_resource(platform, "warehouse")
    db.setup_for_execution(SimpleNamespace(run_id="r"))  # type: ignore[arg-type]
    said: list[str] = []
    with db.exclusive("totesys_platform reuse test", holder="totesys step one", log=said.append):
        with db.connect() as conn:  # in use meanwhile: a second connection
            other = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    with db.connect() as conn:
        first = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute("SET statement_timeout = '1234ms'")
        conn.execute("SELECT pg_advisory_lock(42)")
    with db.connect(autocommit=True) as conn:
        # The same session, handed back clean: settings reset, the lock and the step's name gone.
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] in (first, other)
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "0"
        assert conn.execute("SHOW application_name").fetchone()[0] != "totesys step one"
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0] == 0
    with pytest.raises(RuntimeError), db.connect() as conn:
        broken = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        raise RuntimeError("the step failed")
    with db.connect() as conn:  # a connection whose block raised is not handed out again
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] != broken
        kept = conn
    db.teardown_after_execution(SimpleNamespace(run_id="r"))  # type: ignore[arg-type]
    assert kept.closed and not db._idle
    with db.connect() as conn:  # outside a run every connection is closed after its block
        pass
    assert conn.closed


def test_a_quiet_source_gets_a_heartbeat_run_so_freshness_stays_true(platform, monkeypatch):
    import totesys_platform.automation.change_sensor as automation

    defs = build_definitions(platform)
    instance = dg.DagsterInstance.ephemeral()
    first = evaluate(defs, instance)
    add_sensor_run(instance, dg.DagsterRunStatus.SUCCESS)
    assert "no readable catalog table changed" in evaluate(defs, instance, first.cursor).skip_message
    later = time.time() + automation.HEARTBEAT.total_seconds() + 1
    monkeypatch.setattr(automation, "time", type("Clock", (), {"time": staticmethod(lambda: later)}))
    (request,) = evaluate(defs, instance, first.cursor).run_requests
    assert request.run_key.startswith("heartbeat-") and len(request.asset_selection) == ALL_ASSETS


def test_a_failed_run_is_published_to_an_sns_topic(platform, tmp_path, moto_endpoint, monkeypatch):
    import boto3

    for name in ("TOTESYS_SMTP_HOST", "TOTESYS_ALERT_TO"):
        monkeypatch.delenv(name, raising=False)
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="totesys-alerts")["TopicArn"]
    queue = sqs.create_queue(QueueName="totesys-alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    monkeypatch.setenv("TOTESYS_ALERT_SNS_TOPIC_ARN", topic)
    result, context = failed_run(platform, tmp_path)
    totesys_failure_email_sensor(context)
    (delivered,) = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=5)["Messages"]
    notification = json.loads(delivered["Body"])
    assert result.run_id[:8] in notification["Subject"]
    assert result.run_id in notification["Message"] and "TOTESYS_SOURCE_URL: cannot connect" in notification["Message"]
    assert "hunter2" not in notification["Message"]


@pytest.mark.slow
def test_a_revoked_grant_is_named_alerted_once_and_its_recovery_too(platform, smtp_inbox, monkeypatch):
    from totesys_platform.automation import INCIDENT_SENSOR
    from totesys_platform_tests.test_pipeline import assert_warehouse_matches_source, warehouse_rows

    port, received = smtp_inbox
    for name, value in {
        "TOTESYS_SMTP_HOST": "127.0.0.1",
        "TOTESYS_SMTP_PORT": str(port),
        "TOTESYS_SMTP_SECURITY": "none",
        "TOTESYS_ALERT_TO": "data-team@terrifictotes.com",
    }.items():
        monkeypatch.setenv(name, value)
    with psycopg.connect(platform.source_url, autocommit=True) as conn:  # a source role that may only SELECT
        conn.execute("DROP ROLE IF EXISTS tote_reader")
        conn.execute("CREATE ROLE tote_reader LOGIN")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO tote_reader")
    reader = type(platform)(
        **{**platform.__dict__, "source_url": platform.source_url.replace("postgres:@", "tote_reader@", 1)}
    )
    defs = build_definitions(reader)
    instance = dg.DagsterInstance.ephemeral()
    sensor = defs.get_sensor_def(INCIDENT_SENSOR)
    cursor = None

    def tick():
        nonlocal cursor
        with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as context:
            sensor.evaluate_tick(context)
            cursor = context.cursor

    assert run_graph(reader, instance=instance).success
    seen = {t: warehouse_rows(reader, t) for t in ("fact_sales_order", "fact_purchase_order", "fact_payment")}
    tick()
    assert received == []
    with psycopg.connect(platform.source_url, autocommit=True) as conn:
        conn.execute("REVOKE SELECT ON payment FROM tote_reader")
        conn.execute("UPDATE payment SET paid = NOT paid, last_updated = localtimestamp WHERE payment_id = 3")
    blocked = run_graph(reader, instance=instance)
    readable = check_evaluation(blocked, "raw/payment", "source_table_is_readable")
    assert not readable.passed and readable.severity == dg.AssetCheckSeverity.ERROR
    assert "'tote_reader' may not read table 'payment'" in readable.description
    assert 'GRANT SELECT ON "payment" TO "tote_reader"' in readable.description
    materialized = {e.asset_key.to_user_string() for e in blocked.get_asset_materialization_events()}
    assert "raw/sales_order" in materialized and "raw/payment" not in materialized  # the others go on
    tick()
    tick()  # the same incident: no second alert
    wait_for_mail(received, 1)
    (alert,) = received
    subject = " ".join(alert["Subject"].split())  # unfolded
    assert subject.startswith("[totesys] ALERT: check source_table_is_readable on raw/payment failed")
    assert "may not read table 'payment'" in subject
    body = alert.get_payload(decode=True).decode()
    assert "GRANT SELECT" in body and "/assets/raw/payment?view=checks" in body
    with psycopg.connect(platform.source_url, autocommit=True) as conn:
        conn.execute("GRANT SELECT ON payment TO tote_reader")
    assert run_graph(reader, instance=instance).success
    tick()
    wait_for_mail(received, 2)
    assert len(received) == 2 and received[1]["Subject"].startswith(
        "[totesys] RESOLVED: check source_table_is_readable"
    )
    assert_warehouse_matches_source(reader, seen)  # the change made meanwhile arrived, exactly once


def test_a_warehouse_table_past_its_freshness_window_is_an_incident_until_it_is_materialised(platform):
    from totesys_platform.automation import open_incidents

    instance = dg.DagsterInstance.ephemeral()
    keys = [dg.AssetKey(["warehouse", "fact_payment"]), dg.AssetKey(["warehouse", "dim_date"])]
    assert open_incidents(instance, [], keys, time.time(), "http://ui") == {}  # never materialised: no lapse
    assert run_graph(platform, instance=instance).success
    assert open_incidents(instance, [], keys, time.time(), "http://ui") == {}
    later = open_incidents(instance, [], keys, time.time() + 31 * 60, "http://ui")  # 31 minutes on, no run
    assert set(later) == {"freshness warehouse/fact_payment", "freshness warehouse/dim_date"}
    assert "last materialised 31 min ago (fail window 30 min)" in later["freshness warehouse/fact_payment"]["what"]
    assert later["freshness warehouse/dim_date"]["link"] == "http://ui/assets/warehouse/dim_date"


def test_a_failure_repeated_at_every_retry_is_e_mailed_once_until_the_job_succeeds(
    platform, tmp_path, smtp_inbox, monkeypatch
):
    port, received = smtp_inbox
    for name, value in {
        "TOTESYS_SMTP_HOST": "127.0.0.1",
        "TOTESYS_SMTP_PORT": str(port),
        "TOTESYS_SMTP_SECURITY": "none",
        "TOTESYS_ALERT_TO": "data-team@terrifictotes.com",
    }.items():
        monkeypatch.setenv(name, value)
    down = make_settings(tmp_path, f"postgresql://tote:hunter2@127.0.0.1:{free_port()}/totesys", platform.warehouse_url)
    instance = dg.DagsterInstance.ephemeral()

    def fail_and_tell(settings) -> str:
        result = run_graph(settings, "group:raw", instance=instance, raise_on_error=False)
        assert not result.success
        context = dg.build_run_status_sensor_context(
            sensor_name="totesys_failure_email_sensor",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        ).for_run_failure()
        totesys_failure_email_sensor(context)
        return result.run_id

    first = fail_and_tell(down)
    fail_and_tell(down)  # the sensor's retry, failing the same way
    fail_and_tell(down)
    wait_for_mail(received, 2, seconds=3)
    assert len(received) == 1 and first[:8] in received[0]["Subject"]
    assert run_graph(platform, "group:raw", instance=instance).success  # the job recovers
    again = fail_and_tell(down)  # a new incident
    wait_for_mail(received, 2)
    assert len(received) == 2 and again[:8] in received[1]["Subject"]
