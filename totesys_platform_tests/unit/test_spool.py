"""Rows spooled by key range (`KeyRangeSpool`): what a first build reduces a range at a time."""

import datetime as dt

import polars as pl
import pytest

from totesys_platform.resources.spool import KeyRangeSpool

pytestmark = pytest.mark.unit

SCHEMA = pl.Schema({"id": pl.Int32, "name": pl.String, "at": pl.Time})


def frame(ids: list[int | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": ids, "name": [f"n{i}" for i in ids], "at": [dt.time(9, i or 0) for i in ids]}, schema=SCHEMA
    )


def test_every_version_of_a_key_comes_back_in_its_range_in_key_order():
    with KeyRangeSpool("id", width=10) as ranges:
        ranges.add(frame([25, 3, 14, 3]))  # key 3 twice, across two added frames below too
        ranges.add(frame([]))
        ranges.add(frame([7, 25, 30, 3]))
        back = list(ranges.frames(SCHEMA))
    assert ranges.rows == 8
    assert [sorted(f["id"].to_list()) for f in back] == [[3, 3, 3, 7], [14], [25, 25], [30]]
    assert all(f.schema == SCHEMA for f in back)  # the time the spool stores as an integer comes back a time
    assert pl.concat(back).sort("id").equals(pl.concat([frame([25, 3, 14, 3]), frame([7, 25, 30, 3])]).sort("id"))


def test_rows_without_a_key_are_kept_apart_for_the_rules_to_reject():
    with KeyRangeSpool("id", width=10) as ranges:
        ranges.add(frame([None, 4]))
        back = list(ranges.frames(SCHEMA))
    assert [f["id"].to_list() for f in back] == [[None], [4]]


def test_nothing_added_reads_back_nothing():
    with KeyRangeSpool("id", width=10) as ranges:
        assert list(ranges.frames(SCHEMA)) == []
        assert ranges.rows == 0
