"""The reports presented: Markdown tables for the Dagster UI and a self-contained HTML dashboard (plotly
charts) written to the reports zone.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import html
import json
from importlib import resources

import polars as pl

from totesys_platform.reports.specs import REPORTS, Report


def markdown_summary(frame: pl.DataFrame, limit: int = 15) -> str:
    if frame.is_empty():
        return "(no rows yet)"

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}"
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.head(limit).rows()]
    if frame.height > limit:
        lines.append(f"\n({frame.height - limit} more rows in the view)")
    return "\n".join(lines)


@functools.cache
def _template() -> dict:
    """plotly's default look (the "plotly" template) as the plain dict a figure carries: read from plotly's own
    package data, not built as plotly objects and validated (twice as slow, a tenth of the reports step)."""
    try:
        return json.loads((resources.files("plotly") / "package_data" / "templates" / "plotly.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # a plotly that keeps them elsewhere: the slow way
        import plotly.io as pio

        return pio.templates["plotly"].to_plotly_json()


@functools.cache
def _plotly_js() -> str:
    """plotly.js as plotly's Python package bundles it (the version its figures are written for)."""
    try:
        return (resources.files("plotly") / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    except FileNotFoundError:  # a plotly that keeps it elsewhere
        from plotly.offline import get_plotlyjs

        return get_plotlyjs()


def _json_value(value):
    """What plotly's JSON encoder makes of the values a report holds: numbers and ISO dates."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    raise TypeError(f"a chart cannot hold a {type(value).__name__}")


def chart_html(figure: dict, chart_id: str) -> str:
    """A figure drawn by plotly.js's own `Plotly.newPlot` (plotly.js must be on the page).

    What `plotly.io.to_html(full_html=False)` writes, without its cost: it imports a good part of plotly on
    first use and handles each figure through its validators, about 70 ms a run for six charts."""
    payload = json.dumps(figure, default=_json_value, separators=(",", ":")).replace("</", "<\\/")
    config = json.dumps({"displaylogo": False, "responsive": True})
    return (
        f"<div id='{chart_id}' class='plotly-graph-div' style='height:100%;width:100%'></div>"
        f"<script>(function(){{var f={payload};Plotly.newPlot('{chart_id}',f.data,f.layout,{config});}})();</script>"
    )


def figure(report: Report, frame: pl.DataFrame) -> dict:
    """The report's chart as a plotly figure dict: plotly.js draws it as it would a `go.Figure`, without
    building and validating plotly's Python objects for every trace (a tenth of a second per run)."""
    chart = report.chart
    traces = []
    for (series,), part in frame.sort(chart.series).group_by(chart.series, maintain_order=True):
        if chart.kind == "line":
            part = part.sort(chart.x)
            traces.append(
                {
                    "type": "scatter",
                    "x": part[chart.x].to_list(),
                    "y": part[chart.y].to_list(),
                    "mode": "lines+markers",
                    "name": str(series),
                }
            )
        else:
            totals = part.group_by(chart.x).agg(pl.col(chart.y).sum()).sort(chart.y, descending=True)
            if chart.top:
                totals = totals.head(chart.top)
            traces.append(
                {"type": "bar", "x": totals[chart.x].to_list(), "y": totals[chart.y].to_list(), "name": str(series)}
            )
    layout = {
        "template": _template(),
        "title": {"text": f"{report.title} ({chart.y} per currency)"},
        "barmode": "group",
        "height": 420,
        "margin": {"l": 60, "r": 20, "t": 60, "b": 120},
        "legend": {"title": {"text": "currency"}},
    }
    return {"data": traces, "layout": layout}


def html_table(frame: pl.DataFrame, limit: int = 20) -> str:
    def cell(value) -> str:
        return f"{value:,.2f}" if isinstance(value, float) else html.escape("" if value is None else str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in frame.head(limit).rows())
    more = f"<p class='more'>{frame.height - limit} more rows in the view</p>" if frame.height > limit else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def headline(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Per currency: sales orders and revenue, purchase spend, payments outstanding (due + overdue)."""
    sales = (
        frames["revenue_by_month_and_currency"]
        .group_by("currency_code")
        .agg(pl.col("orders").sum().alias("sales_orders"), pl.col("revenue").sum())
    )
    spend = frames["purchase_spend_by_counterparty"].group_by("currency_code").agg(pl.col("spend").sum())
    payments = frames["payments_by_status"]
    outstanding = (
        payments.filter(pl.col("status") != "paid")
        .group_by("currency_code")
        .agg(pl.col("amount").sum().alias("outstanding"))
    )
    codes = pl.concat([f.select("currency_code") for f in (sales, spend, payments)]).unique()
    return (
        codes.join(sales, on="currency_code", how="left")
        .join(spend, on="currency_code", how="left")
        .join(outstanding, on="currency_code", how="left")
        .fill_null(0)
        .sort("currency_code")
    )


def dashboard_html(frames: dict[str, pl.DataFrame], views_schema: str, generated_at: dt.datetime) -> str:
    """One self-contained page (plotly.js inlined once): no network needed to open it."""
    sections = [
        f"<section id='headline'><h2>Headline figures per currency</h2>{html_table(headline(frames))}</section>"
    ]
    for report in REPORTS:
        frame = frames[report.name]
        chart = chart_html(figure(report, frame), f"chart-{report.name}")
        sections.append(
            f"<section id='{report.name}'><h2>{html.escape(report.title)}</h2>"
            f"<p class='question'>{html.escape(report.question)} View: <code>{views_schema}.{report.name}</code></p>"
            f"<div class='chart'>{chart}</div>{html_table(frame)}</section>"
        )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;margin:1rem 0}"
        "td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
        ".question{color:#555}section{margin-bottom:3rem}"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Terrific Totes dashboard</title>"
        f"<style>{style}</style><script>{_plotly_js()}</script></head><body>"
        "<h1>Terrific Totes: sales, purchases and payments</h1>"
        f"<p>Generated {generated_at:%Y-%m-%d %H:%M} UTC from the warehouse. Amounts are per currency, never "
        "converted or summed across currencies. Orders and payments count their current version.</p>"
        + "".join(sections)
        + "</body></html>"
    )
