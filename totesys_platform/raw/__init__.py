"""Raw stage: incremental extraction of the 11 totesys tables into the ingestion zone (Delta tables)."""
