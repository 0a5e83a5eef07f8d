"""Terrific Totes data platform: totesys -> ingestion zone -> star schema -> PostgreSQL warehouse."""

from totesys_platform.definitions import defs

__all__ = ["defs"]
