"""A dimension's history from its sources' versions (`history_rows`), on small frames."""

import datetime as dt

import polars as pl

from totesys_platform.catalog import WAREHOUSE_TABLES_BY_NAME
from totesys_platform.processed.star import DELETED, build_dimension, history_rows

STAFF_HISTORY = WAREHOUSE_TABLES_BY_NAME["dim_staff_history"]
DESIGN_HISTORY = WAREHOUSE_TABLES_BY_NAME["dim_design_history"]


def day(n: int) -> dt.datetime:
    return dt.datetime(2025, 1, n, 9)


def staff(*versions: tuple) -> pl.DataFrame:
    """(staff_id, first_name, department_id, day)"""
    return pl.DataFrame(
        [
            {
                "staff_id": i,
                "first_name": name,
                "last_name": "Roma",
                "department_id": dept,
                "email_address": f"{name.lower()}@terrifictotes.com",
                "created_at": day(1),
                "last_updated": day(d),
            }
            for i, name, dept, d in versions
        ]
    ).cast({"staff_id": pl.Int32, "department_id": pl.Int32})


def departments(*versions: tuple) -> pl.DataFrame:
    """(department_id, department_name, day)"""
    return pl.DataFrame(
        [
            {
                "department_id": i,
                "department_name": name,
                "location": "Leeds",
                "manager": None,
                "created_at": day(1),
                "last_updated": day(d),
            }
            for i, name, d in versions
        ],
        schema_overrides={"manager": pl.String},
    ).cast({"department_id": pl.Int32})


def states(frame: pl.DataFrame) -> list[tuple]:
    return [
        (r["staff_id"], r["first_name"], r["department_name"], r["valid_from"], r["valid_to"], r["is_current"])
        for r in frame.to_dicts()
    ]


def test_a_member_changed_twice_keeps_both_states_and_its_validity_is_contiguous():
    history = history_rows(
        STAFF_HISTORY,
        {
            "staff": staff((1, "Ann", 1, 2), (1, "Anne", 1, 4), (1, "Annie", 1, 6)),
            "department": departments((1, "Sales", 1)),
        },
    )
    assert states(history) == [
        (1, "Ann", "Sales", day(2), day(4), False),
        (1, "Anne", "Sales", day(4), day(6), False),
        (1, "Annie", "Sales", day(6), None, True),
    ]
    assert history.columns == list(STAFF_HISTORY.schema)
    assert history.schema == STAFF_HISTORY.schema


def test_a_department_change_opens_a_state_for_each_of_its_staff_at_its_time_and_no_one_else():
    history = history_rows(
        STAFF_HISTORY,
        {
            "staff": staff((1, "Ann", 1, 2), (2, "Bob", 1, 3), (3, "Cy", 2, 2)),
            "department": departments((1, "Sales", 1), (1, "Sales & Marketing", 5), (2, "Purchasing", 1)),
        },
    )
    assert states(history) == [
        (1, "Ann", "Sales", day(2), day(5), False),
        (1, "Ann", "Sales & Marketing", day(5), None, True),
        (2, "Bob", "Sales", day(3), day(5), False),
        (2, "Bob", "Sales & Marketing", day(5), None, True),
        (3, "Cy", "Purchasing", day(2), None, True),
    ]


def test_a_move_takes_the_new_departments_state_and_leaves_the_old_ones_changes_behind():
    history = history_rows(
        STAFF_HISTORY,
        {
            "staff": staff((1, "Ann", 1, 2), (1, "Ann", 2, 4)),
            "department": departments((1, "Sales", 1), (1, "Sales UK", 6), (2, "Purchasing", 1)),
        },
    )
    assert states(history) == [
        (1, "Ann", "Sales", day(2), day(4), False),
        (1, "Ann", "Purchasing", day(4), None, True),
    ]


def test_a_joined_rows_earliest_known_version_stands_for_the_time_before_it():
    # Only the department's newer version was ever captured: it stands for the staff member's start too.
    history = history_rows(
        STAFF_HISTORY,
        {"staff": staff((1, "Ann", 1, 2)), "department": departments((1, "Sales", 7), (1, "Sales UK", 9))},
    )
    assert states(history) == [(1, "Ann", "Sales", day(2), day(9), False), (1, "Ann", "Sales UK", day(9), None, True)]


def test_versions_that_change_nothing_the_dimension_shows_are_one_state():
    history = history_rows(
        DESIGN_HISTORY,
        {
            "design": pl.DataFrame(
                {
                    "design_id": [5, 5, 5],
                    "created_at": [day(1)] * 3,
                    "design_name": ["Steel", "Steel", "Bronze"],
                    "file_location": ["/usr"] * 3,
                    "file_name": ["steel.json"] * 3,
                    "last_updated": [day(1), day(3), day(8)],
                }
            ).cast({"design_id": pl.Int32})
        },
    )
    assert history.select("design_name", "valid_from", "valid_to").rows() == [
        ("Steel", day(1), day(8)),
        ("Bronze", day(8), None),
    ]


def test_the_current_states_equal_the_dimension():
    sources = {
        "staff": staff((1, "Ann", 1, 2), (1, "Anne", 2, 4), (2, "Bob", 1, 3), (3, "Cy", 2, 1)),
        "department": departments((1, "Sales", 1), (2, "Purchasing", 1), (2, "Buying", 6)),
    }
    current = history_rows(STAFF_HISTORY, sources).filter("is_current").drop("valid_from", "valid_to", "is_current")
    assert current.equals(build_dimension(WAREHOUSE_TABLES_BY_NAME["dim_staff"], sources))


def test_the_order_versions_arrive_in_does_not_matter_and_a_tie_goes_to_the_later_commit():
    versions = staff((1, "Ann", 1, 2), (1, "Anne", 1, 4), (1, "Quiet fix", 1, 4)).with_columns(
        pl.Series("_commit_version", [1, 2, 3])
    )
    sources = {"department": departments((1, "Sales", 1))}
    forward = history_rows(STAFF_HISTORY, {**sources, "staff": versions}, order="_commit_version")
    backward = history_rows(STAFF_HISTORY, {**sources, "staff": versions.reverse()}, order="_commit_version")
    assert forward.equals(backward)
    assert forward["first_name"].to_list() == ["Ann", "Quiet fix"]


def test_a_deletion_closes_the_members_last_state_at_its_detection():
    versions = staff((1, "Ann", 1, 2), (2, "Bob", 1, 2))
    found = pl.DataFrame({"staff_id": [2], "last_updated": [day(5)], DELETED: [True]}).cast({"staff_id": pl.Int32})
    history = history_rows(
        STAFF_HISTORY,
        {
            "staff": pl.concat([versions.with_columns(pl.lit(False).alias(DELETED)), found], how="diagonal_relaxed"),
            "department": departments((1, "Sales", 1)),
        },
    )
    assert states(history) == [
        (1, "Ann", "Sales", day(2), None, True),
        (2, "Bob", "Sales", day(2), day(5), False),
    ]


def test_a_state_breaking_an_error_rule_is_left_out_when_a_later_one_follows():
    # Department 9 was never captured: the state between day 3 and 5 has no department name.
    history = history_rows(
        STAFF_HISTORY,
        {
            "staff": staff((1, "Ann", 1, 2), (1, "Ann", 9, 3), (1, "Ann", 1, 5)),
            "department": departments((1, "Sales", 1)),
        },
    )
    assert states(history) == [(1, "Ann", "Sales", day(2), None, True)]
    # When it is the member's current state it stays, for the blocking check to stop the batch.
    current = history_rows(
        STAFF_HISTORY, {"staff": staff((1, "Ann", 1, 2), (1, "Ann", 9, 3)), "department": departments((1, "Sales", 1))}
    )
    assert states(current)[-1] == (1, "Ann", None, day(3), None, True)
