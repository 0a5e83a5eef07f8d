"""The same code paths with both zones on s3:// buckets of a moto server spoken to over HTTP."""

import boto3
import pytest

from totesys_platform.catalog import WAREHOUSE_TABLES
from totesys_platform.resources.lake import LakeZone, ZoneUnavailableError
from totesys_platform_tests.conftest import failure_text, make_settings, run_graph
from totesys_platform_tests.test_pipeline import assert_warehouse_matches_source, warehouse_rows


@pytest.mark.slow
def test_pipeline_on_s3_matches_the_local_run(moto_endpoint, sample_source, new_database, tmp_path):
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    for bucket in ("tote-ingestion", "tote-processed"):
        s3.create_bucket(Bucket=bucket)
    settings = make_settings(
        tmp_path,
        sample_source,
        new_database("wh_s3"),
        TOTESYS_INGESTION_URL="s3://tote-ingestion/zone",
        TOTESYS_PROCESSED_URL="s3://tote-processed",
    )
    assert run_graph(settings).success
    assert_warehouse_matches_source(settings)
    local = make_settings(tmp_path / "local", sample_source, new_database("wh_local"))
    assert run_graph(local).success
    for table in WAREHOUSE_TABLES:
        assert warehouse_rows(settings, table.name) == warehouse_rows(local, table.name), table.name
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="tote-ingestion", Prefix="zone/sales_order/")["Contents"]]
    assert len(keys) == 1 and keys[0].endswith(".parquet")
    # A quiet second run writes nothing new.
    assert run_graph(settings).success
    assert [
        o["Key"] for o in s3.list_objects_v2(Bucket="tote-ingestion", Prefix="zone/sales_order/")["Contents"]
    ] == keys
    zone = LakeZone(url="s3://tote-ingestion/zone")
    with pytest.raises(FileExistsError):
        zone.write(keys[0].removeprefix("zone/"), [zone.read(zone.list_keys("currency"))])


def test_a_missing_bucket_fails_with_a_clear_message(moto_endpoint, sample_source, new_database, tmp_path):
    settings = make_settings(
        tmp_path, sample_source, new_database("wh"), TOTESYS_INGESTION_URL="s3://no-such-bucket/zone"
    )
    with pytest.raises(ZoneUnavailableError, match="bucket 'no-such-bucket' does not exist"):
        LakeZone(url=settings.ingestion_url, zone_name="ingestion").check_reachable()
    result = run_graph(settings, "group:raw", raise_on_error=False)
    assert not result.success and "no-such-bucket" in failure_text(result)
