"""Terrific Totes data platform: totesys -> ingestion zone -> star schema -> PostgreSQL warehouse."""

import os

# Polars allocates through its own jemalloc, which by default keeps the pages a step frees for up to 10 s
# before handing them back. A backfill frees hundreds of MB a step, so each step's peak stacked on what
# the ones before it kept. A background thread returning them within 0.1 s lowers a scale-100 backfill's
# peak by about 100 MB at no measurable cost (see benchmarks/results/README.md). It must be in the
# environment before Polars is first imported, hence here; a value set by the deployment wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "background_thread:true,dirty_decay_ms:100,muzzy_decay_ms:0")

from totesys_platform.definitions import defs  # noqa: E402 - after the allocator setting

__all__ = ["defs"]
