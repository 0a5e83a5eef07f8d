"""Report assets: business summaries as warehouse views, their key figures in the UI, and the dashboard."""

import datetime as dt

import dagster as dg

from totesys_platform.assets.warehouse import WarehouseConfig, warehouse_key
from totesys_platform.reports import (
    REPORTS,
    Report,
    dashboard_html,
    ensure_report_views,
    markdown_summary,
    read_report,
    reports_schema,
)
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.postgres import PostgresResource

REPORTS_GROUP = "reports"
DASHBOARD = "dashboard.html"


def report_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["reports", name])


def build_report_asset(report: Report, **asset_kwargs) -> dg.AssetsDefinition:
    @dg.asset(
        key=report_key(report.name),
        deps=[warehouse_key(t) for t in report.uses],
        group_name=REPORTS_GROUP,
        description=f"{report.title}: {report.question} (warehouse view)",
        kinds={"postgres", "sql"},
        **asset_kwargs,
    )
    def _report(warehouse_db: PostgresResource, warehouse: WarehouseConfig) -> dg.MaterializeResult:
        with warehouse_db.connect() as conn:
            schema = ensure_report_views(conn, warehouse.schema_name)
            conn.commit()
            frame = read_report(conn, warehouse.schema_name, report)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": frame.height,
                "view": f"{schema}.{report.name}",
                "dagster/table_name": f"{schema}.{report.name}",
                "key_figures": dg.MetadataValue.md(markdown_summary(frame)),
            }
        )

    return _report


def build_dashboard_asset(**asset_kwargs) -> dg.AssetsDefinition:
    @dg.asset(
        key=report_key("dashboard"),
        deps=[report_key(r.name) for r in REPORTS],
        group_name=REPORTS_GROUP,
        description="Self-contained HTML dashboard of every report (charts and tables; opens with no network).",
        kinds={"html", "plotly"},
        **asset_kwargs,
    )
    def _dashboard(
        warehouse_db: PostgresResource, warehouse: WarehouseConfig, reports_zone: LakeZone
    ) -> dg.MaterializeResult:
        with warehouse_db.connect() as conn:
            ensure_report_views(conn, warehouse.schema_name)
            conn.commit()
            frames = {r.name: read_report(conn, warehouse.schema_name, r) for r in REPORTS}
        page = dashboard_html(frames, reports_schema(warehouse.schema_name), dt.datetime.now(dt.UTC))
        reports_zone.check_reachable()
        uri = reports_zone.write_document(DASHBOARD, page.encode())
        revenue = frames["revenue_by_month_and_currency"]
        totals = revenue.group_by("currency_code").agg(revenue=revenue["revenue"].sum()).sort("currency_code")
        return dg.MaterializeResult(
            metadata={
                "dashboard": dg.MetadataValue.path(uri) if reports_zone.is_local else dg.MetadataValue.url(uri),
                "size_kb": round(len(page) / 1024),
                "revenue_by_currency": dg.MetadataValue.md(markdown_summary(totals)),
            }
        )

    return _dashboard


def build_report_assets(**asset_kwargs) -> list[dg.AssetsDefinition]:
    return [*(build_report_asset(r, **asset_kwargs) for r in REPORTS), build_dashboard_asset(**asset_kwargs)]
