"""Report assets: business summaries as warehouse views, their key figures in the UI, and the dashboard."""

import datetime as dt

import dagster as dg

from totesys_platform.columns import OWNERS, report_metadata
from totesys_platform.reports.dashboard import dashboard_html, headline, markdown_summary
from totesys_platform.reports.specs import REPORTS, Report, reports_schema
from totesys_platform.reports.summaries import ensure_report_views, read_report, refresh_summaries
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.postgres import PostgresResource
from totesys_platform.warehouse.assets import WarehouseConfig, warehouse_key

REPORTS_GROUP = "reports"
DASHBOARD = "dashboard.html"


def report_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["reports", name])


def _report_spec(report: Report) -> dg.AssetSpec:
    return dg.AssetSpec(
        report_key(report.name),
        deps=[warehouse_key(t) for t in report.uses],
        group_name=REPORTS_GROUP,
        description=f"{report.title}: {report.question} (warehouse view)",
        kinds={"postgres", "sql"},
        metadata=report_metadata(report.columns, warehouse_key),
        owners=OWNERS,
    )


DASHBOARD_SPEC = dg.AssetSpec(
    report_key("dashboard"),
    deps=[report_key(r.name) for r in REPORTS],
    group_name=REPORTS_GROUP,
    description="Self-contained HTML dashboard of every report (charts and tables; opens with no network).",
    kinds={"html", "plotly"},
    owners=OWNERS,
)


def build_report_assets(**asset_kwargs) -> list[dg.AssetsDefinition]:
    """One step for every report and the dashboard: the views are created once and each queried once."""

    @dg.multi_asset(
        name="reports",
        specs=[*(_report_spec(r) for r in REPORTS), DASHBOARD_SPEC],
        can_subset=True,
        description="Refresh the report views, their key figures and the dashboard.",
        pool="totesys_warehouse",  # reads the facts' newest record ids: never while a load is in flight
        **asset_kwargs,
    )
    def reports(
        context: dg.AssetExecutionContext,
        warehouse_db: PostgresResource,
        warehouse: WarehouseConfig,
        reports_zone: LakeZone,
    ):
        selected = context.selected_asset_keys
        wanted = (
            REPORTS if report_key("dashboard") in selected else [r for r in REPORTS if report_key(r.name) in selected]
        )
        with warehouse_db.connect() as conn:
            schema = ensure_report_views(conn, warehouse.schema_name)
            conn.commit()
            refreshed = refresh_summaries(conn, warehouse.schema_name)
            frames = {r.name: read_report(conn, warehouse.schema_name, r) for r in wanted}
        for report in wanted:
            if report_key(report.name) not in selected:
                continue
            frame = frames[report.name]
            yield dg.MaterializeResult(
                asset_key=report_key(report.name),
                metadata={
                    "dagster/row_count": frame.height,
                    "view": f"{schema}.{report.name}",
                    "dagster/table_name": f"{schema}.{report.name}",
                    "key_figures": dg.MetadataValue.md(markdown_summary(frame)),
                    "current_versions_refreshed": sum(refreshed.values()),
                },
            )
        if report_key("dashboard") in selected:
            page = dashboard_html(frames, reports_schema(warehouse.schema_name), dt.datetime.now(dt.UTC))
            reports_zone.check_reachable()
            uri = reports_zone.write_document(DASHBOARD, page.encode())
            yield dg.MaterializeResult(
                asset_key=report_key("dashboard"),
                metadata={
                    "dashboard": dg.MetadataValue.path(uri) if reports_zone.is_local else dg.MetadataValue.url(uri),
                    "size_kb": round(len(page) / 1024),
                    "headline_per_currency": dg.MetadataValue.md(markdown_summary(headline(frames))),
                },
            )

    return [reports]
