"""Database credentials from AWS Secrets Manager (as the original system kept them).

The secret is either RDS-shaped JSON ({"username", "password", "host", "port", "dbname"}) or {"url": ...}.
It is fetched at run time and never logged or put in metadata. boto3 honours AWS_ENDPOINT_URL(_SECRETS_MANAGER).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import boto3

from totesys_platform.settings import SettingsError, validate_postgres_url


def database_url_from_secret(secret_id: str, region: str | None, setting_name: str) -> str:
    client = boto3.client("secretsmanager", region_name=region)
    try:
        payload = client.get_secret_value(SecretId=secret_id)["SecretString"]
    except client.exceptions.ResourceNotFoundException:
        raise SettingsError(f"{setting_name}: secret {secret_id!r} does not exist in AWS Secrets Manager") from None
    try:
        secret = json.loads(payload)
    except json.JSONDecodeError:
        raise SettingsError(f"{setting_name}: secret {secret_id!r} is not JSON") from None
    if "url" in secret:
        return validate_postgres_url(setting_name, secret["url"])
    missing = [k for k in ("username", "password", "host", "dbname") if k not in secret]
    if missing:
        raise SettingsError(f"{setting_name}: secret {secret_id!r} lacks {', '.join(missing)}")
    return (
        f"postgresql://{quote(secret['username'], safe='')}:{quote(secret['password'], safe='')}"
        f"@{secret['host']}:{secret.get('port', 5432)}/{secret['dbname']}"
    )
