import json

import boto3
import pytest

from totesys_platform.resources.postgres import PostgresResource
from totesys_platform.settings import SettingsError


def test_database_url_comes_from_secrets_manager(moto_endpoint, sample_source):
    client = boto3.client("secretsmanager", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_secret(Name="totesys/source", SecretString=json.dumps({"url": sample_source}))
    db = PostgresResource(secret_id="totesys/source", setting_name="TOTESYS_SOURCE_SECRET_ID")
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM currency").fetchone()[0] == 3
    assert "totesys/source" in db.describe()
    client.create_secret(
        Name="rds",
        SecretString=json.dumps(
            {"username": "tote", "password": "p@ss/word", "host": "db.internal", "port": 5432, "dbname": "totesys"}
        ),
    )
    url = PostgresResource(secret_id="rds").resolved_url()
    assert url == "postgresql://tote:p%40ss%2Fword@db.internal:5432/totesys"


def test_a_missing_secret_fails_naming_it(moto_endpoint):
    with pytest.raises(SettingsError, match="secret 'nope' does not exist"):
        PostgresResource(secret_id="nope", setting_name="TOTESYS_WAREHOUSE_SECRET_ID").resolved_url()
