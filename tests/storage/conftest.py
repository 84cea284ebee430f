"""Real backends for the storage tests: SQLite and PostgreSQL catalogs; local, memory and S3 blobs.

PostgreSQL runs on this machine (``VMM_TEST_POSTGRES_URL``, default the trust-auth ``postgres``
user on 127.0.0.1:5432); each test session creates its own database and drops it afterwards. S3 is
moto's server mode on a free local port, spoken to through s3fs exactly as a real S3 would be.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from video_mm.storage.blobs import BlobStore
from video_mm.storage.catalog import Catalog

POSTGRES_ADMIN_URL = os.environ.get(
    "VMM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TABLES = "video_blobs, embeddings, captions, clips, jobs, videos"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, dropped at its end."""
    name = f"vmm_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL} ({exc}); set VMM_TEST_POSTGRES_URL"
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
        try:
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty catalog: a new SQLite file, or the session's PostgreSQL database emptied."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('videos')").fetchone()[0]
        if exists:
            conn.execute(f"TRUNCATE {TABLES} CASCADE")


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    with Catalog(catalog_url) as c:
        yield c


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, with a bucket named ``vmm``."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import s3fs

        s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True).mkdir("vmm")
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(params=["local", "memory", pytest.param("s3", marks=pytest.mark.integration)])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """The same contract on a local directory, fsspec's memory filesystem and S3 through s3fs."""
    chunk = 64 * 1024
    if request.param == "local":
        return BlobStore(str(tmp_path / "blobs"), chunk_bytes=chunk)
    if request.param == "memory":
        return BlobStore(f"memory://vmm-{uuid.uuid4().hex}", chunk_bytes=chunk)
    endpoint = request.getfixturevalue("s3_endpoint")
    return BlobStore(
        f"s3://vmm/{uuid.uuid4().hex}",
        chunk_bytes=chunk,
        endpoint_url=endpoint,
        skip_instance_cache=True,
    )
