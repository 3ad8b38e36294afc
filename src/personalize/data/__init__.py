"""Data ingestion: read, validate, de-duplicate, quarantine, fingerprint."""

from personalize.config.data import DataConfig, TableSource, TimestampConfig
from personalize.data.ingest import Dataset, IngestReport, ingest, load_movielens_100k

__all__ = [
    "DataConfig",
    "Dataset",
    "IngestReport",
    "TableSource",
    "TimestampConfig",
    "ingest",
    "load_movielens_100k",
]
