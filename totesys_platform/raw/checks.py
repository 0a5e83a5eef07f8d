"""The raw assets' checks: those evaluated inside the extraction step where the data is in hand, and the
reconciliation of the source with the lake, run by its own job (nightly, or on demand)."""

import datetime as dt
from email.message import EmailMessage

import dagster as dg

from totesys_platform.catalog import SOURCE_TABLES, SourceTable
from totesys_platform.raw.extract import IngestResult
from totesys_platform.raw.reconcile import KINDS, Reconciliation, TableFindings, reconcile_source
from totesys_platform.resources.alerts import notify, webserver_url
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.postgres import PostgresResource


def raw_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", table])


SCHEMA_CHECK = "columns_match_the_catalog"
KEYS_CHECK = "keys_are_not_null"
READABLE_CHECK = "source_table_is_readable"
CLOCK_CHECK = "rows_are_not_stamped_ahead_of_the_source_clock"


def raw_check_specs(table: SourceTable) -> list[dg.AssetCheckSpec]:
    key = raw_key(table.name)
    return [
        dg.AssetCheckSpec(
            READABLE_CHECK,
            asset=key,
            description="The source role may read the table and its Delta table in the ingestion zone is readable.",
        ),
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset=key,
            description="Schema drift: the source table's columns against the catalog (missing or retyped: "
            "error; new: warning, kept as text).",
        ),
        dg.AssetCheckSpec(
            KEYS_CHECK, asset=key, description=f"Every ingested row has its {table.primary_key} and {table.cursor}."
        ),
        dg.AssetCheckSpec(
            CLOCK_CHECK,
            asset=key,
            description=f"Warns about rows whose {table.cursor} is later than the source database's clock "
            "(ingested, but a sign of a skewed application clock).",
        ),
    ]


def schema_check_result(table: SourceTable, missing, extra, retyped) -> dg.AssetCheckResult:
    problems = [
        *(f"missing column {c} (nothing ingested until it is back)" for c in missing),
        *(f"retyped column {c}" for c in retyped),
        *(f"new column {c} (kept as text)" for c in extra),
    ]
    return dg.AssetCheckResult(
        asset_key=raw_key(table.name),
        check_name=SCHEMA_CHECK,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR if missing or retyped else dg.AssetCheckSeverity.WARN,
        description=f"source table {table.name}: " + "; ".join(problems) if problems else "columns match the catalog",
        metadata={
            "missing_columns": ", ".join(missing),
            "retyped_columns": ", ".join(retyped),
            "new_columns": ", ".join(extra),
        },
    )


def readable_check_result(table: SourceTable, problem: str | None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=raw_key(table.name),
        check_name=READABLE_CHECK,
        passed=problem is None,
        description=problem or f"{table.name} is readable at the source and in the ingestion zone",
    )


def keys_check_result(table: SourceTable, result: IngestResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=raw_key(table.name),
        check_name=KEYS_CHECK,
        passed=result.null_keys == 0,
        description=f"{result.null_keys} rows of the new batch lack a key"
        if result.null_keys
        else "every new row has its key and cursor",
        metadata={"rows_with_null_keys": result.null_keys},
    )


def clock_check_result(table: SourceTable, result: IngestResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=raw_key(table.name),
        check_name=CLOCK_CHECK,
        passed=result.rows_ahead == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{result.rows_ahead} new rows stamped up to {result.max_seconds_ahead:.0f} s ahead of the source clock "
            f"({result.source_now}); ingested, and the watermark stays at the source clock so later changes are "
            "not hidden"
        )
        if result.rows_ahead
        else "no row is stamped ahead of the source clock",
        metadata={"rows_ahead": result.rows_ahead, "max_seconds_ahead": round(result.max_seconds_ahead, 3)},
    )


# --- the reconciliation (see raw/reconcile.py) -------------------------------------------------------

RECONCILE_CHECK = "source_matches_the_lake"
RECONCILE_JOB = "totesys_reconcile_job"
SAMPLE = 10


def findings_result(findings: TableFindings) -> dg.AssetCheckResult:
    counts = findings.counts
    said = [f"{n} {kind.replace('_', ' ')}(s), e.g. {findings.keys[kind][:SAMPLE]}" for kind, n in counts.items() if n]
    return dg.AssetCheckResult(
        asset_key=raw_key(findings.table),
        check_name=RECONCILE_CHECK,
        passed=not findings.found,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{findings.table}: found what the cursor missed and recorded it: " + "; ".join(said)
            if said
            else f"{findings.table}: the lake's newest versions match the source"
        ),
        metadata={
            **{kind: counts[kind] for kind in KINDS},
            **{f"{kind}_sample": ", ".join(map(str, findings.keys[kind][:SAMPLE])) for kind in KINDS},
            "pending_for_the_next_run": findings.pending,
            "hashes_recorded": findings.baselined,
            "source_queries": findings.source_queries,
            "source_rows_read": findings.rows_read,
        },
    )


def error_result(table: str, error: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=raw_key(table),
        check_name=RECONCILE_CHECK,
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{table}: could not be reconciled: {error}",
    )


def reconciliation_email(result: Reconciliation) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"[totesys] ALERT: reconciliation found {result.found} change(s) the cursor missed"
    body = [result.summary(), "", "Recorded in the ingestion zone; the next runs carry them to the warehouse."]
    body.append(f"Open it: {webserver_url()}/runs/{result.run_id}")
    message.set_content("\n".join(body))
    return message


def build_reconciliation_check(lookback_seconds: int) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                RECONCILE_CHECK,
                asset=raw_key(t.name),
                # In a run that includes it (its job, the nightly run, `dagster asset materialize --select '*'`),
                # the stages downstream wait for what it recorded: the same run carries it to the warehouse.
                blocking=True,
                description="Nightly reconciliation: rows deleted at the source, changed without a new "
                "last_updated, or stamped too far back for the cursor, found by segment checksums and recorded.",
            )
            for t in SOURCE_TABLES
        ],
        name="reconcile_source_with_the_lake",
        pool="totesys_source",
        description="Compare every source table with the ingestion zone's newest versions and record differences.",
    )
    def reconcile_source_with_the_lake(
        context: dg.AssetCheckExecutionContext,
        source_db: PostgresResource,
        ingestion_zone: LakeZone,
        processed_zone: LakeZone,
    ):
        result = reconcile_source(
            source_db,
            ingestion_zone,
            processed_zone,
            list(SOURCE_TABLES),
            run_id=context.run.run_id,
            lookback=dt.timedelta(seconds=lookback_seconds),
            log=context.log.warning,
        )
        context.log.info(result.summary())
        if result.found or result.errors:
            notify(reconciliation_email(result))
        for findings in result.tables:
            yield findings_result(findings)
        for table, error in result.errors.items():
            yield error_result(table, error)

    return reconcile_source_with_the_lake
