"""Each rule's SQL implementation agrees with its Polars one on the same cases (one shared database)."""

import polars as pl
import psycopg
import pytest
from psycopg import sql

from totesys_platform_tests.conftest import create_database
from totesys_platform_tests.unit.test_rules import CASES, KEYS


@pytest.fixture(scope="module")
def rules_db(pg_admin_url):
    url = create_database(pg_admin_url, "rules")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA s")
        conn.execute("CREATE TABLE s.dim (id integer PRIMARY KEY)")
        conn.execute("INSERT INTO s.dim SELECT unnest(%s::int[])", (KEYS["dim"].to_list(),))
        yield conn


@pytest.mark.parametrize(("rule", "values", "breaks"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_sql_and_polars_find_the_same_offending_rows(rules_db, rule, values, breaks):
    pg_type = "text" if any(isinstance(v, str) for v in values) else "integer"
    conn, name = rules_db, f"t_{rule.name}"
    target = sql.SQL("s.{}").format(sql.Identifier(name))
    conn.execute(sql.SQL("CREATE TABLE {} (ord integer, x {})").format(target, sql.SQL(pg_type)))
    with conn.cursor() as cur:
        cur.executemany(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(target), list(enumerate(values)))
    polars_count = int(pl.DataFrame({"x": values}).select(rule.offending(KEYS).fill_null(False).sum()).item())
    assert conn.execute(rule.offending_sql(target, "s")).fetchone()[0] == polars_count == sum(breaks)
    if rule.row_level:
        predicate = rule.offending_predicate(sql.Identifier("f"), "s")
        rows = conn.execute(sql.SQL("SELECT coalesce({}, false) FROM {} f ORDER BY ord").format(predicate, target))
        assert [r[0] for r in rows] == breaks
