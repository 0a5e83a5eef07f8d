"""The peer: dlt's sql_database source into its postgres destination, on the same source tables.

Runs under a Python that has dlt (`pip install -e '.[bench]'`, or TOTESYS_BENCH_PEER_PYTHON naming
another interpreter). dlt only extracts and loads (no star schema, no checks): it is the floor an
off-the-shelf EL tool sets for moving these tables, not an equivalent of the whole platform.

    python -m benchmarks.peer_dlt full|incremental SOURCE_URL DESTINATION_URL PIPELINES_DIR TABLE,TABLE,...
prints one JSON line: wall seconds, rows loaded, peak RSS. `full` replaces every table; `incremental`
merges the rows whose last_updated passed the cursor kept in PIPELINES_DIR (its first run loads all).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def destination_credentials(url: str) -> dict:
    """dlt's postgres credentials as fields: a unix-socket directory goes in `host`."""
    from psycopg2.extensions import parse_dsn

    parts = parse_dsn(url)
    return {
        "database": parts["dbname"],
        "username": parts.get("user", "postgres"),
        "password": parts.get("password") or "unused",  # dlt requires a value; trust auth ignores it
        "host": "localhost",  # a socket directory cannot sit in a URL's authority: libpq takes it from query
        "port": int(parts.get("port", 5432)),
        "query": {"host": parts["host"]} if parts.get("host", "").startswith("/") else {},
    }


def run(mode: str, source_url: str, destination_url: str, pipelines_dir: str, table_list: str) -> dict:
    tables = table_list.split(",")  # from the catalog, passed in: dlt's Python need not have this package
    import dlt
    from dlt.sources.sql_database import sql_table

    pipeline = dlt.pipeline(
        pipeline_name=f"totesys_peer_{mode}",
        destination=dlt.destinations.postgres(credentials=destination_credentials(destination_url)),
        dataset_name=f"dlt_{mode}",
        pipelines_dir=pipelines_dir,
    )
    resources = []
    for table in tables:
        resource_ = sql_table(
            credentials=sqlalchemy_url(source_url),
            table=table,
            backend="pyarrow",  # dlt's fastest backend that reaches a unix socket (connectorx cannot)
            chunk_size=250_000,
            incremental=dlt.sources.incremental("last_updated") if mode == "incremental" else None,
        )
        resource_.apply_hints(
            primary_key=f"{table}_id", write_disposition="merge" if mode == "incremental" else "replace"
        )
        resources.append(resource_)
    started = time.perf_counter()
    info = pipeline.run(resources)
    seconds = time.perf_counter() - started
    rows = sum(pipeline.last_trace.last_normalize_info.row_counts.get(t, 0) for t in tables)
    return {
        "case": f"dlt {mode}",
        "wall_seconds": round(seconds, 3),
        "rows": rows,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loads": len(info.loads_ids),
    }


if __name__ == "__main__":
    print("BENCHMARK " + json.dumps(run(*sys.argv[1:6])), flush=True)
