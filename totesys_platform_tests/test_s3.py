"""The same code paths with both zones on s3:// buckets of a moto server spoken to over HTTP."""

import boto3
import pytest

from totesys_platform.catalog import WAREHOUSE_TABLES
from totesys_platform.resources.lake import LakeZone, ZoneUnavailableError
from totesys_platform_tests.conftest import failure_text, make_settings, run_graph
from totesys_platform_tests.test_pipeline import assert_warehouse_matches_source, warehouse_rows


def s3_settings(moto_endpoint, tmp_path, source_url, warehouse_url, ingestion: str, processed: str):
    """Settings with both zones on buckets of moto's server (created here)."""
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    for url in (ingestion, processed):
        s3.create_bucket(Bucket=url.removeprefix("s3://").split("/", 1)[0])
    return s3, make_settings(
        tmp_path, source_url, warehouse_url, TOTESYS_INGESTION_URL=ingestion, TOTESYS_PROCESSED_URL=processed
    )


@pytest.mark.slow
def test_pipeline_on_s3_matches_the_local_run(moto_endpoint, sample_source, new_database, tmp_path):
    s3, settings = s3_settings(
        moto_endpoint, tmp_path, sample_source, new_database("wh_s3"), "s3://tote-ingestion/zone", "s3://tote-processed"
    )
    assert run_graph(settings).success
    assert_warehouse_matches_source(settings)
    local = make_settings(tmp_path / "local", sample_source, new_database("wh_local"))
    assert run_graph(local).success
    for table in WAREHOUSE_TABLES:
        assert warehouse_rows(settings, table.name) == warehouse_rows(local, table.name), table.name

    def objects() -> dict[str, str]:
        listed = s3.list_objects_v2(Bucket="tote-ingestion", Prefix="zone/sales_order/")["Contents"]
        return {o["Key"]: o["ETag"] for o in listed}

    keys = objects()
    assert "zone/sales_order/_delta_log/00000000000000000000.json" in keys
    assert sum(k.endswith(".parquet") for k in keys) >= 1
    # A quiet second run writes nothing new, and changes nothing that is there.
    assert run_graph(settings).success
    assert objects() == keys
    zone = LakeZone(url="s3://tote-ingestion/zone")
    assert zone.version("sales_order") == 0 and zone.row_count("sales_order") == 11175


def test_a_missing_bucket_fails_with_a_clear_message(moto_endpoint, sample_source, new_database, tmp_path):
    settings = make_settings(
        tmp_path, sample_source, new_database("wh"), TOTESYS_INGESTION_URL="s3://no-such-bucket/zone"
    )
    with pytest.raises(ZoneUnavailableError, match="bucket 'no-such-bucket' does not exist"):
        LakeZone(url=settings.ingestion_url, zone_name="ingestion").check_reachable()
    result = run_graph(settings, "group:raw", raise_on_error=False)
    assert not result.success and "no-such-bucket" in failure_text(result)


@pytest.mark.slow
def test_no_ingestion_object_is_ever_rewritten_or_deleted_on_s3(moto_endpoint, sample_source, new_database, tmp_path):
    import psycopg

    from totesys_platform.source.simulator import Simulator

    s3, settings = s3_settings(
        moto_endpoint,
        tmp_path,
        sample_source,
        new_database("wh_etag"),
        "s3://etag-ingestion/zone",
        "s3://etag-processed/zone",
    )

    def objects() -> dict[str, str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="etag-ingestion")
        return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}

    assert run_graph(settings).success
    before = objects()
    for seed in range(6):  # past a checkpoint of the busiest tables (every 5 commits)
        with psycopg.connect(sample_source) as conn:
            Simulator(conn, seed=seed).run(8)
        assert run_graph(settings).success
    after = objects()
    assert before.keys() <= after.keys()  # nothing deleted
    changed = {key for key in before if before[key] != after[key]}
    assert all(key.endswith("/_delta_log/_last_checkpoint") for key in changed), changed
    assert any(key.endswith(".checkpoint.parquet") for key in after)  # the series did pass a checkpoint
