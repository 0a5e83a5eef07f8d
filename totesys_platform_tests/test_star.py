"""The star schema's plain Polars transforms, on small frames."""

import datetime as dt

import polars as pl

from totesys_platform.processed.star import latest_versions

T0 = dt.datetime(2025, 1, 1, 9)


def test_latest_versions_keeps_the_newest_version_of_each_key_sorted_by_key():
    versions = pl.DataFrame(
        {
            "id": [3, 1, 3, 2, 1, 1],
            "last_updated": [T0, T0, T0 + dt.timedelta(hours=1), T0, T0 + dt.timedelta(hours=2), T0],
            "name": ["c-old", "a-old", "c-new", "b", "a-new", "a-older"],
        }
    )
    latest = latest_versions(versions, "id")
    assert latest.to_dicts() == [
        {"id": 1, "last_updated": T0 + dt.timedelta(hours=2), "name": "a-new"},
        {"id": 2, "last_updated": T0, "name": "b"},
        {"id": 3, "last_updated": T0 + dt.timedelta(hours=1), "name": "c-new"},
    ]


def test_latest_versions_breaks_a_tie_on_the_cursor_by_the_given_column_then_by_arrival():
    tied = pl.DataFrame(
        {
            "id": [1, 1, 1, 2, 2],
            "last_updated": [T0] * 5,
            "_commit_version": [7, 5, 7, 4, 4],
            "name": ["first of 7", "5", "second of 7", "first of 4", "second of 4"],
        }
    )
    assert latest_versions(tied, "id", then="_commit_version")["name"].to_list() == ["second of 7", "second of 4"]
    assert latest_versions(tied, "id")["name"].to_list() == ["second of 7", "second of 4"]  # arrival alone


def test_latest_versions_of_one_version_per_key_is_the_frame_sorted_by_key():
    inserts = pl.DataFrame({"id": [2, 3, 1], "last_updated": [T0] * 3, "name": ["b", "c", "a"]})
    assert latest_versions(inserts, "id")["name"].to_list() == ["a", "b", "c"]
    assert latest_versions(inserts.sort("id"), "id").equals(inserts.sort("id"))
