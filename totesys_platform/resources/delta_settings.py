"""How every Delta table of the lake is set up and written: table properties, compaction thresholds, the
keys an upsert names, and the commit metadata that records what a writer consumed."""

from __future__ import annotations

import json

import polars as pl

# A checkpoint every 5 commits (and one when the table is created): a table load reads a checkpoint plus
# at most 4 commit files, so the per-run cost saws up and down by at most that much, from the first run on.
CHECKPOINT_INTERVAL = 5
TABLE_CONFIGURATION = {
    "delta.enableChangeDataFeed": "true",
    "delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
    # No expired-log clean-up after a commit: it lists the table's whole log (every commit file, not only
    # those after the checkpoint), a cost that grows with the table's age. Readers never look before the
    # last checkpoint, so the kept commit files cost storage only.
    "delta.enableExpiredLogCleanup": "false",
    # Files a compaction replaced are listed in each checkpoint (as removed) for this long. Nothing here
    # ever deletes a file (no VACUUM), so this decides only the checkpoints' size: a day of compactions.
    "delta.deletedFileRetentionDuration": "interval 1 days",
}
# The ingestion zone and the facts only ever grow: Delta refuses any delete or overwrite on them, and the
# log is kept whole, so a bucket policy can deny every delete.
APPEND_ONLY_CONFIGURATION = {"delta.appendOnly": "true"}
# What Delta itself records in a commit's information, as opposed to the writer's custom metadata.
DELTA_COMMIT_INFO = frozenset(
    {
        "timestamp", "operation", "operationParameters", "operationMetrics", "engineInfo", "clientVersion",
        "version", "readVersion", "isolationLevel", "isBlindAppend", "userMetadata", "txnId",
    }
)  # fmt: skip
CONSUMED_KEY = "totesys.consumed"  # commit metadata: {input table: last version consumed}
# A merged table (a dimension) gains files with every merge; past this many small files they are compacted,
# so reading it costs what its rows cost, not what its history of merges cost. Only files under
# COMPACT_MERGED_TARGET_BYTES are compacted, into files of at most that size: a big file (a big dimension's
# first write) is never rewritten by compaction, only by a merge updating one of its rows (copy-on-write).
COMPACT_AFTER_FILES = 8
COMPACT_MERGED_TARGET_BYTES = 8 * 2**20
# An upsert names the keys it touches, up to this many, as literals (a predicate overwrite of those keys'
# rows): Delta then skips every file whose key statistics exclude them, instead of joining the new rows
# with every file (a tenth of a second on a million-row dimension, whatever the number of changed rows).
# More keys: a merge that names their range.
MERGE_KEY_LITERALS = 5000
# An append-only table (ingestion, facts, quarantine) gains a file with every commit, and every checkpoint
# lists every file: past this many files its small files are compacted (OPTIMIZE: new files, dataChange
# false, so no reader of the change feed sees them twice), which keeps its checkpoint, and the cost of
# loading it, in proportion to its rows rather than to the number of runs that wrote it. The files it
# replaces are only marked removed in the log: no object is ever rewritten or deleted, and older versions
# stay readable. A compacted file is at most COMPACT_TARGET_BYTES, which bounds what the dedup read opens.
COMPACT_APPEND_ONLY_AFTER_FILES = 200
COMPACT_TARGET_BYTES = 32 * 2**20
# Rows of a change feed handed to a reader at a time (see LakeZone.changes).
CHANGE_CHUNK_ROWS = 200_000
# Rows of a table's snapshot (a warehouse backfill's read) handed to a reader at a time.
SNAPSHOT_BATCH_ROWS = 200_000
# Rows per Parquet row group of an appended file (delta-rs writes 1,048,576): a reader decodes a row group's
# columns at once, so a fact table's first load into the warehouse held a million rows of it at a time.
ROW_GROUP_ROWS = 131_072


def key_filter(frame: pl.DataFrame, key: str) -> str:
    """` AND t.<key> IN (...)` (or BETWEEN) for an integer key: the merge's file pruning by statistics.
    The values are the integers of the frame itself, formatted as integers."""
    if not frame.schema[key].is_integer() or frame[key].null_count() == frame.height:
        return ""
    keys = frame[key].drop_nulls().unique().sort()
    if keys.len() <= MERGE_KEY_LITERALS:
        return f" AND t.{key} IN ({', '.join(str(int(k)) for k in keys)})"
    return f" AND t.{key} BETWEEN {int(keys[0])} AND {int(keys[-1])}"


def replaceable_keys(frame: pl.DataFrame, key: str) -> list[int] | None:
    """The frame's keys when an upsert of it may be a predicate overwrite: integer keys, none null or twice,
    at most MERGE_KEY_LITERALS of them (named one by one); otherwise None (a merge)."""
    keys = frame[key]
    if not frame.height or not keys.dtype.is_integer() or keys.null_count() or keys.n_unique() != frame.height:
        return None
    return [int(k) for k in keys.sort()] if frame.height <= MERGE_KEY_LITERALS else None


def consumed_versions(commit_metadata: dict) -> dict[str, int]:
    """{input table: last version consumed} from a commit's metadata (see LakeZone.last_commit)."""
    return json.loads(commit_metadata.get(CONSUMED_KEY, "{}"))


def as_text(metadata: dict) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
