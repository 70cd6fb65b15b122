"""Stores: the offline store (ClickHouse), and later the online store (Redis) and objects (S3)."""
