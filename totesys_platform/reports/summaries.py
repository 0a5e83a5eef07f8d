"""The summaries in the warehouse: summary tables kept up to date from the new fact rows only, and one SQL
view per report over them (usable from any BI tool), in a reports schema beside the warehouse schema.
No Dagster here; reports/assets.py wraps it.
"""

from __future__ import annotations

import hashlib
import re

import polars as pl
import psycopg
from psycopg import sql

from totesys_platform.catalog import WAREHOUSE_TABLES_BY_NAME, WarehouseTable
from totesys_platform.reports.specs import REPORTS, SUMMARIES, Report, Summary, reports_schema
from totesys_platform.warehouse.deletions import ensure_table as ensure_deletions_table
from totesys_platform.warehouse.load import lock_table_writes

# Tables an earlier release kept in the reports schema (a copy of each fact's current versions, as big as
# the facts): dropped when the schema is brought up to date.
LEGACY_TABLES = ("current_sales_order", "current_purchase_order", "current_payment")
REPORTS_LOCK = "{} reports refresh"  # advisory lock of one warehouse schema's reports (DDL and refresh)


def layout_fingerprint(warehouse_schema: str) -> str:
    """What the reports schema's DDL is made from; stored as the schema's comment, so a run whose schema is up
    to date costs one catalog query, and a release that changes a summary or a view rebuilds them."""
    text = repr((warehouse_schema, SUMMARIES, tuple((r.name, r.query) for r in REPORTS)))
    return "totesys_platform reports " + hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_report_views(conn: psycopg.Connection, warehouse_schema: str) -> str:
    """Create the summary tables and one view per report, unless the schema is already up to date; returns
    the reports schema. Changed definitions (a new release) drop the summaries: the next refresh rebuilds them."""
    name, fingerprint = reports_schema(warehouse_schema), layout_fingerprint(warehouse_schema)
    fingerprint_query = "SELECT obj_description(to_regnamespace(%s), 'pg_namespace')"
    if conn.execute(fingerprint_query, (name,)).fetchone()[0] == fingerprint:
        return name
    w, r = sql.Identifier(warehouse_schema), sql.Identifier(name)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (REPORTS_LOCK.format(warehouse_schema),))
        if conn.execute(fingerprint_query, (name,)).fetchone()[0] == fingerprint:
            return name  # another run brought it up to date while this one waited
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(r))
        for report in REPORTS:  # views first: they read the summaries
            conn.execute(sql.SQL("DROP VIEW IF EXISTS {}.{}").format(r, sql.Identifier(report.name)))
        for table in (*LEGACY_TABLES, *(s.name for s in SUMMARIES)):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(r, sql.Identifier(table)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.refresh_state (fact text PRIMARY KEY, last_record_id bigint NOT NULL)"
            ).format(r)
        )
        conn.execute(sql.SQL("DELETE FROM {}.refresh_state").format(r))  # every summary starts again
        for summary in SUMMARIES:
            groups = sql.SQL(", ").join(
                sql.SQL("{} AS {}").format(_expression(e, w), sql.Identifier(n)) for n, e in summary.groups
            )
            measures = sql.SQL(", ").join(
                sql.SQL("sum({}) AS {}").format(sql.SQL(e), sql.Identifier(n)) for n, e in summary.measures
            )
            conn.execute(
                sql.SQL("CREATE TABLE {r}.{s} AS SELECT {g}, {m} FROM {w}.{f} {j} GROUP BY {k} WITH NO DATA").format(
                    r=r,
                    s=sql.Identifier(summary.name),
                    g=groups,
                    m=measures,
                    w=w,
                    f=sql.Identifier(summary.fact),
                    j=_expression(summary.join, w),
                    k=sql.SQL(", ").join(sql.SQL(str(i + 1)) for i in range(len(summary.groups))),
                )
            )
            conn.execute(
                sql.SQL("ALTER TABLE {}.{} ADD PRIMARY KEY ({})").format(
                    r, sql.Identifier(summary.name), sql.SQL(", ").join(sql.Identifier(n) for n, _ in summary.groups)
                )
            )
        for report in REPORTS:
            conn.execute(
                sql.SQL("CREATE VIEW {}.{} AS {}").format(
                    r, sql.Identifier(report.name), sql.SQL(report.query).format(w=w, r=r)
                )
            )
        # COMMENT takes no bound parameter; the fingerprint is this code's own hex digest.
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(r, sql.Literal(fingerprint)))
    return name


def refresh_summaries(conn: psycopg.Connection, warehouse_schema: str) -> dict[str, int]:
    """Bring the summaries up to date with the fact rows added since the last refresh: the changed keys' new
    current versions are added, the versions they replace (looked up by key in the fact) subtracted. The
    work grows with the new fact rows, not with the facts. Returns, per fact, the keys whose current version
    changed."""
    w, r = sql.Identifier(warehouse_schema), sql.Identifier(reports_schema(warehouse_schema))
    changed = {}
    ensure_deletions_table(conn, warehouse_schema)  # the summaries leave out what it lists
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (REPORTS_LOCK.format(warehouse_schema),))
        # The summaries advance by the facts' record ids: wait for any load of them still in flight in another
        # run, or rows it commits later with lower ids would be skipped for good (always in this order).
        facts = sorted({s.fact for s in SUMMARIES})
        for fact in facts:
            lock_table_writes(conn, warehouse_schema, fact)
        for fact in facts:
            table = WAREHOUSE_TABLES_BY_NAME[fact]
            summaries = [s for s in SUMMARIES if s.fact == fact]
            row = conn.execute(
                sql.SQL("SELECT last_record_id FROM {}.refresh_state WHERE fact = %s").format(r), (fact,)
            ).fetchone()
            since = row[0] if row else 0
            newest = conn.execute(
                sql.SQL("SELECT max({}) FROM {}.{}").format(
                    sql.Identifier(table.surrogate_key), w, sql.Identifier(fact)
                )
            ).fetchone()[0]
            if newest is None or newest < since:  # the facts were emptied or rebuilt: start again
                since = 0
            if newest is None or newest <= since:
                changed[fact] = 0
                if since == 0:
                    _truncate(conn, r, [s.name for s in summaries])
                continue
            if since == 0:
                changed[fact] = _rebuild(conn, w, r, table, newest, summaries)
            else:
                changed[fact] = _apply_changes(conn, w, r, table, since, newest, summaries)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.refresh_state VALUES (%s, %s) ON CONFLICT (fact) DO UPDATE SET last_record_id = %s"
                ).format(r),
                (fact, newest, newest),
            )
    return changed


def _truncate(conn: psycopg.Connection, r: sql.Identifier, names: list[str]) -> None:
    conn.execute(
        sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.SQL("{}.{}").format(r, sql.Identifier(n)) for n in names))
    )


def _used_columns(table: WarehouseTable, summaries: list[Summary]) -> list[str]:
    """The fact's columns a version is identified by, and those the summaries' expressions read."""
    expressions = " ".join(e for s in summaries for _, e in (*s.groups, *s.measures, ("join", s.join)))
    used = {c.name for c in table.columns if re.search(rf"\b{re.escape(c.name)}\b", expressions)}
    return [c.name for c in table.columns if c.name in {*table.version_key, *used}]


def _newest_versions(w, table: WarehouseTable, columns: list[str]) -> sql.Composed:
    """The newest version of each key among the fact rows with record ids in (%s, %s], but for the keys
    deleted at the source (%s: the fact's source table; see warehouse/deletions.py): they count as gone."""
    return sql.SQL(
        "SELECT DISTINCT ON ({k}) {n} FROM {w}.{f} WHERE {rid} > %s AND {rid} <= %s AND {k} NOT IN"
        " (SELECT source_id FROM {w}.source_deletions WHERE table_name = %s)"
        " ORDER BY {k}, last_updated_date DESC, last_updated_time DESC"
    ).format(
        k=sql.Identifier(table.key),
        n=sql.SQL(", ").join(map(sql.Identifier, columns)),
        w=w,
        f=sql.Identifier(table.name),
        rid=sql.Identifier(table.surrogate_key),
    )


def _expression(text: str, w: sql.Identifier) -> sql.Composed:
    """A summary's SQL expression, with the warehouse schema in place of {w}."""
    return sql.SQL(text).format(w=w)


def _summary_insert(w, r, summary: Summary, rows: sql.Composable, *, signed: bool) -> sql.Composed:
    """Sum the summary's measures over `rows` by its groups into its table. Signed: `rows` carry `_sign`
    (+1 a new current version, -1 the version it replaces) and the sums are added to those already there."""
    group_names = sql.SQL(", ").join(sql.Identifier(n) for n, _ in summary.groups)
    measure_names = [sql.Identifier(n) for n, _ in summary.measures]
    measure = "sum(_sign * ({}))" if signed else "sum({})"
    query = sql.SQL("INSERT INTO {r}.{s} AS t ({gn}, {mn}) SELECT {g}, {m} FROM {rows} {j} GROUP BY {gi}").format(
        r=r,
        s=sql.Identifier(summary.name),
        gn=group_names,
        mn=sql.SQL(", ").join(measure_names),
        g=sql.SQL(", ").join(_expression(e, w) for _, e in summary.groups),
        m=sql.SQL(", ").join(sql.SQL(measure).format(sql.SQL(e)) for _, e in summary.measures),
        rows=rows,
        j=_expression(summary.join, w),
        gi=sql.SQL(", ").join(sql.SQL(str(i + 1)) for i in range(len(summary.groups))),
    )
    if signed:
        query += sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
            group_names, sql.SQL(", ").join(sql.SQL("{0} = t.{0} + EXCLUDED.{0}").format(n) for n in measure_names)
        )
    return query


def _rebuild(conn, w, r, table: WarehouseTable, newest: int, summaries: list[Summary]) -> int:
    """From nothing (first refresh, or the facts were rebuilt): one statement finds the current versions once
    and fills every summary of the fact from them (nothing else is written)."""
    _truncate(conn, r, [s.name for s in summaries])
    fills = sql.SQL(", ").join(
        sql.SQL("{} AS ({})").format(
            sql.Identifier(f"fill_{s.name}"), _summary_insert(w, r, s, sql.SQL("current_versions"), signed=False)
        )
        for s in summaries
    )
    return conn.execute(
        sql.SQL("WITH current_versions AS ({}), {} SELECT count(*) FROM current_versions").format(
            _newest_versions(w, table, _used_columns(table, summaries)), fills
        ),
        (0, newest, table.source.name),
    ).fetchone()[0]


def _apply_changes(conn, w, r, table: WarehouseTable, since: int, newest: int, summaries: list[Summary]) -> int:
    columns = _used_columns(table, summaries)
    k, fact, rid = sql.Identifier(table.key), sql.Identifier(table.name), sql.Identifier(table.surrogate_key)
    # The newest version of each key among the new fact rows ...
    conn.execute(
        sql.SQL("CREATE TEMP TABLE delta_new ON COMMIT DROP AS ") + _newest_versions(w, table, columns),
        (since, newest, table.source.name),
    )
    # ... and the one current at the last refresh: the newest of the key's rows before it (by the fact's
    # version index, a few rows per key).
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE delta_old ON COMMIT DROP AS SELECT o.* FROM delta_new x CROSS JOIN LATERAL"
            " (SELECT {n} FROM {w}.{f} f WHERE f.{k} = x.{k} AND f.{rid} <= %s"
            " ORDER BY f.last_updated_date DESC, f.last_updated_time DESC LIMIT 1) o"
        ).format(
            n=sql.SQL(", ").join(sql.SQL("f.{}").format(sql.Identifier(c)) for c in columns), w=w, f=fact, k=k, rid=rid
        ),
        (since,),
    )
    version = sql.SQL("({0}.last_updated_date, {0}.last_updated_time)")
    # A new row older than the current version (a late arrival) changes nothing; neither side counts.
    conn.execute(
        sql.SQL("DELETE FROM delta_new x USING delta_old o WHERE o.{k} = x.{k} AND {x} < {o}").format(
            k=k, x=version.format(sql.SQL("x")), o=version.format(sql.SQL("o"))
        )
    )
    conn.execute(
        sql.SQL("DELETE FROM delta_old o WHERE NOT EXISTS (SELECT 1 FROM delta_new x WHERE x.{k} = o.{k})").format(k=k)
    )
    signed_rows = sql.SQL("(SELECT 1 AS _sign, * FROM delta_new UNION ALL SELECT -1, * FROM delta_old) d")
    for summary in summaries:
        conn.execute(_summary_insert(w, r, summary, signed_rows, signed=True))
        conn.execute(
            sql.SQL("DELETE FROM {}.{} WHERE {} = 0").format(
                r, sql.Identifier(summary.name), sql.Identifier(summary.measures[0][0])
            )
        )
    count = conn.execute("SELECT count(*) FROM delta_new").fetchone()[0]
    conn.execute("DROP TABLE delta_new, delta_old")
    return count


def read_report(conn: psycopg.Connection, warehouse_schema: str, report: Report) -> pl.DataFrame:
    query = sql.SQL("SELECT * FROM {}.{} ORDER BY {}").format(
        sql.Identifier(reports_schema(warehouse_schema)), sql.Identifier(report.name), sql.SQL(report.order_by)
    )
    with conn.cursor() as cursor:
        cursor.execute(query)
        names = [d.name for d in cursor.description]
        rows = cursor.fetchall()
    frame = pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)
    # numeric sums arrive as Decimal; floats are what charts and Markdown want.
    return frame.with_columns(pl.col(pl.Decimal).cast(pl.Float64))
