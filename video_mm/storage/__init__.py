"""Blobs (content-addressed, fsspec) and the catalog (SQL, Alembic-migrated)."""

from video_mm.storage.blobs import BlobStore, BlobTooLarge
from video_mm.storage.catalog import Catalog, NotReady

__all__ = ["BlobStore", "BlobTooLarge", "Catalog", "NotReady"]
