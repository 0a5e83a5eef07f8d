"""moto's S3 server, optionally answering LIST from a prefix index as S3 does (benchmarks only).

    python -m benchmarks.s3_server -H 127.0.0.1 -p 5099                  # moto as it is
    python -m benchmarks.s3_server --indexed-list -H 127.0.0.1 -p 5099   # LIST by prefix index

moto lists a bucket by walking every key in it, whatever the prefix (`S3Backend.list_objects`: `for
key_name, key in bucket.keys.items()`), so one LIST of a table's `_delta_log` costs 3 ms in a bucket of
235 keys and 24 ms in one of 22,000: the emulator's time grows with the lake's age even when the request
and its answer do not. S3 answers a LIST from its key index by prefix. With `--indexed-list` moto's own
`list_objects` / `list_objects_v2` run unchanged on just the keys under the prefix (and after `start-after`),
found by bisection in a sorted index of the bucket's key names (rebuilt whenever the bucket's key count
changes; the benchmarks never delete), so requests and answers are moto's and only the walk is gone. The lake-age benchmark reports seconds both
ways; request counts do not depend on it.
"""

from __future__ import annotations

import bisect
import sys

from moto.s3 import models
from moto.server import main as moto_main

_LIST_OBJECTS = models.S3Backend.list_objects
_LIST_OBJECTS_V2 = models.S3Backend.list_objects_v2
_INDEX: dict[str, tuple[int, list[str]]] = {}  # bucket name -> (key count when built, sorted key names)


class _Keys:
    """Some keys of one bucket, shaped as moto's listing reads a bucket (`.keys.items()`)."""

    def __init__(self, bucket, names: list[str]) -> None:
        self.keys = self
        self._bucket, self._names = bucket, names

    def items(self):
        store = self._bucket.keys
        return [(name, store[name]) for name in self._names if name in store]


def _names_under(bucket, prefix: str, after: str | None = None) -> list[str]:
    """The bucket's key names under `prefix` (and after `after`), by bisection in its sorted index."""
    count, names = _INDEX.get(bucket.name, (-1, []))
    if count != len(bucket.keys):
        names = sorted(bucket.keys.keys())
        _INDEX[bucket.name] = (len(names), names)
    start = bisect.bisect_left(names, prefix)
    if after is not None and after >= prefix:
        start = bisect.bisect_right(names, after, lo=start)
    return names[start : bisect.bisect_left(names, prefix + "\U0010ffff", lo=start)]


def _plain(bucket, prefix) -> bool:
    return isinstance(bucket, _Keys) or not prefix or isinstance(bucket, models.FakeTableStorageBucket)


def list_objects_by_prefix(self, bucket, prefix, delimiter, marker, max_keys):
    if _plain(bucket, prefix):
        return _LIST_OBJECTS(self, bucket, prefix, delimiter, marker, max_keys)
    return _LIST_OBJECTS(self, _Keys(bucket, _names_under(bucket, prefix)), prefix, delimiter, marker, max_keys)


def list_objects_v2_by_prefix(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys):
    if _plain(bucket, prefix) or continuation_token or delimiter:
        return _LIST_OBJECTS_V2(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys)
    keys = _Keys(bucket, _names_under(bucket, prefix, start_after))
    return _LIST_OBJECTS_V2(self, keys, prefix, delimiter, continuation_token, start_after, max_keys)


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--indexed-list" in args:
        args.remove("--indexed-list")
        models.S3Backend.list_objects = list_objects_by_prefix
        models.S3Backend.list_objects_v2 = list_objects_v2_by_prefix
    moto_main(args)
