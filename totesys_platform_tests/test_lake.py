"""The lake zone's Delta tables: what a run loads, what a writer sees, and the settings every table gets."""

import json
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, write_deltalake

import totesys_platform.resources.delta_settings as delta_settings
import totesys_platform.resources.lake as lake
import totesys_platform.resources.run_tables as run_tables
from totesys_platform.resources.delta_settings import CONSUMED_KEY
from totesys_platform.resources.lake import LakeZone
from totesys_platform.resources.spool import Spool


def zone_in_run(url: str, run_id: str | None) -> LakeZone:
    """A zone as Dagster sets it up for the run `run_id` (None: used outside any run)."""
    zone = LakeZone(url=url)
    zone.setup_for_execution(SimpleNamespace(run_id=run_id))  # type: ignore[arg-type]
    return zone


def append(zone: LakeZone, name: str, values: list[int], consumed: int, **kwargs) -> int | None:
    with Spool() as spool:
        spool.add(pl.DataFrame({"k": values, "last_updated": values}))
        return zone.append(name, spool.reader(), {CONSUMED_KEY: {"raw": consumed}}, append_only=True, **kwargs).version


class CountingTable(DeltaTable):
    loads = 0
    refreshes = 0

    def __init__(self, *args, **kwargs):
        CountingTable.loads += 1
        super().__init__(*args, **kwargs)

    def update_incremental(self) -> None:
        CountingTable.refreshes += 1
        super().update_incremental()


@pytest.mark.unit
def test_a_run_loads_each_table_once_and_a_writer_still_sees_other_runs_commits(tmp_path, monkeypatch):
    monkeypatch.setattr(lake, "DeltaTable", CountingTable)
    url = str(tmp_path / "processed")
    first, second = zone_in_run(url, "run-1"), zone_in_run(url, "run-2")
    assert append(first, "fact", [1, 2], consumed=1) == 0
    CountingTable.loads = CountingTable.refreshes = 0
    for _ in range(3):  # readers within the run take the snapshot in hand: no load, no listing of the log
        assert first.version("fact") == 0
        assert first.row_count("fact") == 2
        assert first.scan("fact").collect().height == 2
    assert (CountingTable.loads, CountingTable.refreshes) == (0, 0)

    assert append(second, "fact", [3], consumed=2) == 1  # another run commits
    assert CountingTable.loads == 1  # ... loading the table once for its own run
    assert first.version("fact") == 0  # the first run's readers keep one consistent snapshot
    # What decides what a writer reads next is looked up afresh: it sees the other run's commit.
    assert first.consumed("fact") == {"raw": 2}
    assert first.version("fact") == 1
    assert append(first, "fact", [4], consumed=3) == 2
    assert first.row_count("fact") == 4 and first.consumed("fact") == {"raw": 3}
    # Outside a run (a notebook, the CLI) every use sees the newest version.
    outside = zone_in_run(url, None)
    assert outside.version("fact") == 2
    append(second, "fact", [5], consumed=4)
    assert outside.version("fact") == 3 and outside.row_count("fact") == 5


@pytest.mark.unit
def test_what_a_run_has_in_hand_is_its_own_and_is_let_go_when_the_run_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(lake, "DeltaTable", CountingTable)
    url = str(tmp_path / "processed")
    append(zone_in_run(url, None), "fact", [1], consumed=1)
    first = zone_in_run(url, "run-1")
    CountingTable.loads = 0
    assert first.version("fact") == 0 and first.derived(("keys", 0), lambda: [1]) == [1]
    assert first.derived(("keys", 0), lambda: [2]) == [1]  # derived once per run
    second = zone_in_run(url, "run-2")  # a later run in the same process loads for itself
    assert second.version("fact") == 0 and second.derived(("keys", 0), lambda: [2]) == [2]
    assert CountingTable.loads == 2
    first.teardown_after_execution(SimpleNamespace(run_id="run-1"))  # type: ignore[arg-type]
    assert not first._tables.loaded  # the run's tables are let go with its resources
    # Outside a run nothing derived is kept: every use computes afresh.
    outside = zone_in_run(url, None)
    assert outside.derived("k", lambda: 1) == 1 and outside.derived("k", lambda: 2) == 2


@pytest.mark.unit
def test_a_table_a_run_found_missing_is_created_and_then_read(tmp_path):
    zone = zone_in_run(str(tmp_path / "processed"), "run-1")
    assert zone.table("quarantine/fact") is None
    assert zone.consumed("quarantine/fact") == {}
    assert append(zone, "quarantine/fact", [7], consumed=5) == 0
    assert zone.row_count("quarantine/fact") == 1 and zone.consumed("quarantine/fact") == {"raw": 5}


@pytest.mark.unit
def test_every_new_table_has_a_checkpoint_from_its_first_commit_and_keeps_its_whole_log(tmp_path):
    zone = LakeZone(url=str(tmp_path / "processed"))
    append(zone, "fact", [1], consumed=1)
    zone.merge("dim", pl.DataFrame({"k": [1], "v": ["a"]}), "k", {CONSUMED_KEY: {"raw": 1}})
    for name in ("fact", "dim"):
        log = tmp_path / "processed" / name / "_delta_log"
        assert json.loads((log / "_last_checkpoint").read_text())["version"] == 0
        assert (log / "00000000000000000000.checkpoint.parquet").exists()
        # No expired-log clean-up after commits: it would list the whole log on every write.
        settings = zone.table(name).metadata().configuration
        assert settings["delta.enableExpiredLogCleanup"] == "false"
        # Replaced files are listed in checkpoints for a day only (nothing deletes them).
        assert settings["delta.deletedFileRetentionDuration"] == "interval 1 days"
    assert zone.table("fact").metadata().configuration["delta.appendOnly"] == "true"


@pytest.mark.unit
def test_a_table_written_by_an_earlier_release_gets_the_current_settings_and_keeps_its_state(tmp_path):
    url = str(tmp_path / "ingestion")
    old_settings = {"delta.enableChangeDataFeed": "true", "delta.appendOnly": "true"}
    state = {"watermark": "2026-11-01T10:00:00", CONSUMED_KEY: json.dumps({"raw": 9})}
    write_deltalake(
        f"{url}/payment",
        pa.table({"k": [1], "last_updated": [1]}),
        configuration=old_settings,
        commit_properties=CommitProperties(custom_metadata=state),
    )
    zone = zone_in_run(url, "run-1")
    table = zone.table("payment")
    # A run stopped right after the settings commit: the table still says what it had consumed.
    zone._upgrade_configuration("payment", table, {**lake.TABLE_CONFIGURATION, **lake.APPEND_ONLY_CONFIGURATION})
    assert zone.last_commit("payment")["watermark"] == state["watermark"]
    assert zone.consumed("payment") == {"raw": 9}
    assert append(zone, "payment", [2], consumed=10, stats_columns=["k", "last_updated"]) == 3
    settings = DeltaTable(f"{url}/payment").metadata().configuration
    assert settings["delta.enableExpiredLogCleanup"] == "false"
    assert settings["delta.dataSkippingStatsColumns"] == "k,last_updated"
    assert settings["delta.appendOnly"] == "true"
    assert zone.consumed("payment") == {"raw": 10}
    assert zone.row_count("payment") == 2


@pytest.mark.unit
def test_an_append_only_table_is_compacted_without_changing_any_object_or_what_readers_see(tmp_path, monkeypatch):
    monkeypatch.setattr(lake, "COMPACT_APPEND_ONLY_AFTER_FILES", 4)
    url = str(tmp_path / "ingestion")
    zone = zone_in_run(url, "run-1")
    objects: dict[str, bytes] = {}
    versions = []
    for commit in range(10):
        rows = [commit * 10, commit * 10 + 1]
        versions.append(append(zone, "payment", rows, consumed=commit, stats_columns=["k", "last_updated"]))
        for path in (tmp_path / "ingestion").rglob("*"):
            if path.is_file() and path.name != "_last_checkpoint":
                # Never rewritten or deleted: every object keeps the bytes it was written with.
                assert objects.setdefault(str(path), path.read_bytes()) == path.read_bytes(), path
    assert all(Path(p).exists() for p in objects)
    table = zone.table("payment")
    assert len(table.file_uris()) <= 4 + 1  # compacted whenever it passed 4 files
    assert [h["operation"] for h in table.history()].count("OPTIMIZE") >= 2
    assert table.metadata().configuration["delta.appendOnly"] == "true"
    every = sorted(v for c in range(10) for v in (c * 10, c * 10 + 1))
    assert zone.row_count("payment") == 20
    assert sorted(zone.scan("payment").collect()["k"].to_list()) == every
    # The change feed has every row once: the compaction commits add no change.
    assert sorted(pl.concat(list(zone.changes("payment", None)))["k"].to_list()) == every
    assert sorted(pl.concat(list(zone.changes("payment", versions[3])))["k"].to_list()) == every[8:]
    # What the table consumed survives its compaction commits, and the dedup read still finds recent rows.
    assert zone.consumed("payment") == {"raw": 9}
    assert sorted(zone.read_since("payment", "last_updated", 80, ["k"])["k"].to_list()) == [80, 81, 90, 91]


@pytest.mark.unit
def test_an_upsert_names_its_keys_so_delta_prunes_files_and_upserts_the_same(tmp_path, monkeypatch):
    frame = pl.DataFrame({"k": [3, 1, 2, 2, None], "v": ["c", "a", "b", "b", "n"]})
    assert delta_settings.key_filter(frame, "k") == " AND t.k IN (1, 2, 3)"
    monkeypatch.setattr(delta_settings, "MERGE_KEY_LITERALS", 2)
    assert delta_settings.key_filter(frame, "k") == " AND t.k BETWEEN 1 AND 3"
    assert delta_settings.key_filter(pl.DataFrame({"k": ["x"], "v": ["y"]}), "k") == ""  # only integer keys

    # Either form upserts exactly as a plain key join would: matched keys updated, others inserted, the
    # keys outside the filter untouched, with many files in the table to prune.
    zone = LakeZone(url=str(tmp_path / "processed"))
    for first in range(0, 40, 10):
        new = pl.DataFrame({"k": list(range(first, first + 10)), "v": ["old"] * 10})
        zone.merge("dim", new, "k", {CONSUMED_KEY: {"raw": first}})
    for limit in (delta_settings.MERGE_KEY_LITERALS, 5000):
        monkeypatch.setattr(delta_settings, "MERGE_KEY_LITERALS", limit)
        change = pl.DataFrame({"k": [5, 25, 100 + limit], "v": [f"new {limit}"] * 3})
        zone.merge("dim", change, "k", {CONSUMED_KEY: {"raw": 100 + limit}})
        # Up to MERGE_KEY_LITERALS keys, the rows are replaced by a predicate overwrite; past it, a merge.
        operation = DeltaTable(zone.uri("dim")).history(1)[0]["operation"]
        assert operation == ("WRITE" if limit >= 3 else "MERGE")
        assert zone.consumed("dim") == {"raw": 100 + limit}
    table = zone.scan("dim").collect()
    assert table.height == table["k"].n_unique() == 42  # no key twice: every change found its row
    rows = dict(table.iter_rows())
    assert rows[5] == rows[25] == "new 5000" and rows[102] == "new 2" and rows[5100] == "new 5000"
    assert [rows[k] for k in range(40) if k not in (5, 25)] == ["old"] * 38


@pytest.mark.unit
def test_a_preloaded_table_is_as_fresh_at_its_first_use_as_one_loaded_then(tmp_path, monkeypatch):
    monkeypatch.setattr(lake, "DeltaTable", CountingTable)
    monkeypatch.setattr(run_tables, "DeltaTable", CountingTable)
    url = str(tmp_path / "processed")
    append(zone_in_run(url, None), "fact", [1], consumed=1)
    (tmp_path / "processed" / "broken" / "_delta_log").mkdir(parents=True)
    (tmp_path / "processed" / "broken" / "_delta_log" / "00000000000000000000.json").write_text("not json")
    first, second = zone_in_run(url, "run-1"), zone_in_run(url, "run-2")
    CountingTable.loads = 0
    first.preload(["fact", "missing", "broken"])
    first._tables.wait_for_preloads()  # the loads are done (or failed) before the other run commits
    assert CountingTable.loads == 3
    assert append(second, "fact", [2], consumed=2) == 1  # another run commits after the preload

    # The first use takes the preloaded table, and looks for newer commits as a fresh load would.
    loads = CountingTable.loads
    assert first.version("fact") == 1 and first.consumed("fact") == {"raw": 2}
    assert CountingTable.loads == loads  # no second load
    # A table missing at the preload is missing at its first use, then created and read as usual;
    # one the preload could not read fails at its first use with the zone's own message.
    assert first.table("missing") is None
    assert append(first, "missing", [5], consumed=1) == 0 and first.row_count("missing") == 1
    with pytest.raises(lake.ZoneDataError, match="broken"):
        first.table("broken")
    # Outside a run nothing is preloaded (every use loads the newest version anyway).
    outside = zone_in_run(url, None)
    outside.preload(["fact"])
    assert not outside._tables.is_preloading(outside.uri("fact"))


@pytest.mark.unit
def test_a_value_range_comes_from_the_log_statistics_or_from_the_rows_where_a_file_has_none(tmp_path):
    zone = zone_in_run(str(tmp_path / "processed"), None)
    assert zone.value_range("fact", ["a", "b"]) is None  # no table yet
    frame = pl.DataFrame({"k": [1, 2, 3], "a": [5, None, 9], "b": [None, 2, 7]})
    write_deltalake(str(tmp_path / "processed" / "fact"), frame.to_arrow())
    assert zone.value_range("fact", ["a", "b"]) == (2, 9)
    # A file written without statistics for column b (another writer's setting): its rows are read.
    table = DeltaTable(str(tmp_path / "processed" / "fact"))
    table.alter.set_table_properties({"delta.dataSkippingStatsColumns": "k"})
    write_deltalake(table, pl.DataFrame({"k": [4], "a": [6], "b": [1]}).to_arrow(), mode="append")
    stats = pl.from_arrow(pa.table(DeltaTable(table.table_uri).get_add_actions(flatten=True)))
    assert "min.b" not in stats.columns  # the log offers no statistics for b any more
    assert zone.value_range("fact", ["a", "b"]) == (1, 9)
    # Only nulls: no range.
    write_deltalake(
        str(tmp_path / "processed" / "empty"), pl.DataFrame({"a": [None]}, schema={"a": pl.Int64}).to_arrow()
    )
    assert zone.value_range("empty", ["a"]) is None
