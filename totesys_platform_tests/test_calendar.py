"""dim_date from the facts' log statistics: the days it lacks, appended once, and no commit when none."""

import datetime as dt
from types import SimpleNamespace

import polars as pl
import pytest

from totesys_platform.catalog import WAREHOUSE_TABLES_BY_NAME
from totesys_platform.processed.assets import FACT_TABLES
from totesys_platform.processed.build import process_calendar
from totesys_platform.resources.io_managers import LakeTable
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.spool import Spool

DIM_DATE = WAREHOUSE_TABLES_BY_NAME["dim_date"]


def zone_in_run(url: str, run_id: str) -> LakeZone:
    zone = LakeZone(url=url)
    zone.setup_for_execution(SimpleNamespace(run_id=run_id))  # type: ignore[arg-type]
    return zone


def append_payment(zone: LakeZone, payment_id: int, paid_on: dt.date) -> None:
    """One fact_payment row whose every date column is `paid_on`."""
    fact = WAREHOUSE_TABLES_BY_NAME["fact_payment"]
    row = {c: None for c in fact.schema}
    row.update({c.name: paid_on for c in fact.data_columns if c.pg_type == "date"}, payment_id=payment_id)
    with Spool() as spool:
        spool.add(pl.DataFrame([row], schema=fact.schema))
        zone.append("fact_payment", spool.reader(), {}, append_only=True)


def calendar(zone: LakeZone, today: dt.date):
    facts = {name: LakeTable(zone, name) for name in (t.name for t in FACT_TABLES)}
    outcome = process_calendar(DIM_DATE, facts, zone, today)
    if outcome.output is not None:
        zone.append("dim_date", outcome.output.spool.reader(), outcome.output.metadata, append_only=True)
        outcome.output.spool.close()
    return outcome


@pytest.mark.unit
def test_dim_date_covers_the_facts_years_and_a_year_ahead_and_commits_only_the_days_it_lacks(tmp_path):
    url, today = str(tmp_path / "processed"), dt.date(2026, 11, 28)
    zone = zone_in_run(url, "run-1")
    append_payment(zone, 1, dt.date(2024, 3, 5))
    first = calendar(zone, today)
    days = zone.scan("dim_date").collect()["date_id"]
    assert (days.min(), days.max(), days.len()) == (dt.date(2024, 1, 1), dt.date(2027, 12, 31), 366 + 365 * 3)
    assert first.metadata["rows_written"] == days.len()

    # Facts inside the covered years: nothing to add, and no commit.
    zone = zone_in_run(url, "run-2")
    append_payment(zone, 2, dt.date(2025, 6, 1))
    version = zone.version("dim_date")
    assert calendar(zone, today).output is None and zone.version("dim_date") == version

    # A date years ahead (a delivery agreed for 2030) and one earlier: only the missing years are added.
    zone = zone_in_run(url, "run-3")
    append_payment(zone, 3, dt.date(2030, 2, 1))
    append_payment(zone, 4, dt.date(2023, 12, 31))
    assert calendar(zone, today).metadata["rows_written"] == 365 + 366 + 365 + 365  # 2023, 2028-2030
    days = zone.scan("dim_date").collect()["date_id"]
    assert days.n_unique() == days.len()  # no day twice
    assert (days.min(), days.max()) == (dt.date(2023, 1, 1), dt.date(2030, 12, 31))
    assert days.len() == (dt.date(2030, 12, 31) - dt.date(2023, 1, 1)).days + 1
