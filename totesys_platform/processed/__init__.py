"""Processed stage: the star schema, built with plain Polars from the new raw versions (Delta tables)."""
