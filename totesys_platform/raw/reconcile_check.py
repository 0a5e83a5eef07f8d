"""The reconciliation as a Dagster check on every raw asset, run by its own job (nightly, or on demand)."""

import datetime as dt
from email.message import EmailMessage

import dagster as dg

from totesys_platform.catalog import SOURCE_TABLES
from totesys_platform.raw.checks import raw_key
from totesys_platform.raw.reconcile import KINDS, Reconciliation, TableFindings, reconcile_source
from totesys_platform.resources.alerts import notify, webserver_url
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.postgres import PostgresResource

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
