"""Warehouse stage: DDL from the catalog and exactly-once loads of the processed zone into PostgreSQL."""
