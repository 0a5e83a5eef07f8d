from setuptools import find_packages, setup

# One Dagster release set that resolves together (dagster 1.13.N <-> libraries 0.29.N); see README.
DAGSTER = "1.13.27"
DAGSTER_LIBS = "0.29.27"

setup(
    name="totesys_platform",
    version="0.1.0",
    description="Terrific Totes data platform: totesys -> ingestion zone -> star schema -> warehouse, on Dagster.",
    packages=find_packages(exclude=["totesys_platform_tests"]),
    package_data={"totesys_platform": ["local_dagster.yaml"], "totesys_platform.source": ["schema.sql"]},
    python_requires=">=3.11,<3.13",
    install_requires=[
        f"dagster=={DAGSTER}",
        f"dagster-webserver=={DAGSTER}",
        f"dagster-dg-cli=={DAGSTER}",  # `dg dev`, `dg check defs`, `dg list defs` ([tool.dg] in pyproject.toml)
        f"dagster-aws=={DAGSTER_LIBS}",
        f"dagster-postgres=={DAGSTER_LIBS}",
        "polars==1.44.2",
        "plotly==7.1.0",  # dashboard charts; self-contained HTML with plotly.js inlined
        "pyarrow==26.0.1",
        # Delta Lake (delta-rs): the table format of both lake zones, local or on S3, no Spark, no server.
        "deltalake==1.6.6",
        "numpy==2.4.6",
        "psycopg[binary]==3.3.9",
        # ADBC reads Postgres straight into Arrow via binary COPY, also over unix sockets (connectorx can't).
        "adbc-driver-postgresql==1.13.0",
        "adbc-driver-manager==1.13.0",
        # Embedded PostgreSQL 16 binaries in a wheel: no system packages needed.
        "pgserver==0.1.4",
        "psutil==7.2.2",
        "fsspec==2026.9.0",
        "s3fs==2026.9.0",
        # s3fs's aiobotocore pins botocore; pinning both boto packages keeps `pip check` clean.
        "boto3==1.43.117",
        "botocore==1.43.117",
    ],
    extras_require={
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "moto[server]==5.2.5", "ruff==0.17.6", "aiosmtpd==1.4.6"],
        # The benchmark's peer (benchmarks/peer_dlt.py): python -m benchmarks.run --peer
        "bench": ["dlt[postgres,sql-database,parquet]==1.31.0"],
        # The AWS deployment as a CDK app (deploy/): the CDK library (runs on Node.js) and cfn-lint.
        # checkov, the security scan, pins boto3==1.35.49, which the Dagster stack's s3fs/aiobotocore
        # cannot use (botocore 1.43), so it lives in a virtual environment of its own, `.venv-checkov`,
        # made by scripts/bootstrap (as pipx would): `pip install checkov==3.3.30` there.
        "deploy": ["aws-cdk-lib==2.275.0", "constructs==10.8.1", "cfn-lint==1.58.0"],
    },
    entry_points={"console_scripts": ["totesys=totesys_platform.cli:main"]},
)
