"""The blob store's contract, on a local directory, fsspec's memory filesystem and S3 (moto)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from video_mm.errors import NotFound
from video_mm.settings import Settings
from video_mm.storage.blobs import BlobStore, BlobTooLarge


class ChunkedSource(io.RawIOBase):
    """A file object that makes ``size`` bytes on demand, records each read, and can fail midway."""

    def __init__(self, size: int, fail_after: int | None = None) -> None:
        self.size = size
        self.pos = 0
        self.fail_after = fail_after
        self.reads: list[int] = []
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.reads.append(n)
        if n is None or n < 0:
            raise AssertionError("the whole stream was asked for at once")
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise OSError("connection reset by peer")
        n = min(n, self.size - self.pos)
        chunk = bytes((self.pos + i) % 251 for i in range(n))
        self.pos += n
        self.digest.update(chunk)
        return chunk


def test_put_get_is_content_addressed(blob_store: BlobStore) -> None:
    data = b"a dog gives a man a high five" * 100
    key = blob_store.put(data)
    assert key == hashlib.sha256(data).hexdigest()
    assert blob_store.exists(key)
    assert blob_store.get(key) == data
    assert blob_store.size(key) == len(data)
    with blob_store.open(key) as f:
        assert f.read(3) == b"a d"


def test_same_upload_twice_is_stored_once(blob_store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    path = tmp_path / "video.bin"
    path.write_bytes(data)
    keys = {blob_store.put(data), blob_store.put(io.BytesIO(data)), blob_store.put(path)}
    assert len(keys) == 1
    assert list(blob_store.keys()) == [keys.pop()]


def test_upload_streams_in_chunks(blob_store: BlobStore) -> None:
    source = ChunkedSource(size=3 * blob_store.chunk_bytes + 123)
    key = blob_store.put(source)
    assert key == source.digest.hexdigest()
    assert max(source.reads) == blob_store.chunk_bytes  # never read(-1): never whole in memory
    assert len(source.reads) == 5  # 4 chunks and the empty read at the end
    assert blob_store.size(key) == source.size


def test_failed_upload_leaves_nothing(blob_store: BlobStore) -> None:
    source = ChunkedSource(size=10 * blob_store.chunk_bytes, fail_after=2 * blob_store.chunk_bytes)
    with pytest.raises(OSError, match="connection reset"):
        blob_store.put(source)
    assert list(blob_store.keys()) == []
    if blob_store.local:
        assert list((Path(blob_store.root) / ".tmp").iterdir()) == []


def test_size_limit(blob_store: BlobStore) -> None:
    with pytest.raises(BlobTooLarge) as err:
        blob_store.put(
            ChunkedSource(size=5 * blob_store.chunk_bytes), max_bytes=blob_store.chunk_bytes
        )
    assert err.value.code == "too_large" and not err.value.transient
    with pytest.raises(BlobTooLarge):
        blob_store.put(b"x" * 11, max_bytes=10)
    assert list(blob_store.keys()) == []
    assert blob_store.put(b"x" * 10, max_bytes=10)


def test_delete(blob_store: BlobStore) -> None:
    key = blob_store.put(b"thumbnail")
    other = blob_store.put(b"another")
    assert blob_store.delete(key) is True
    assert not blob_store.exists(key)
    assert blob_store.delete(key) is False
    with pytest.raises(NotFound):
        blob_store.get(key)
    assert list(blob_store.keys()) == [other]


def test_bad_keys_are_refused(blob_store: BlobStore) -> None:
    for key in ["../../etc/passwd", "ab" * 33, "A" * 64, "", "0" * 63]:
        with pytest.raises(NotFound):
            blob_store.get(key)
    with pytest.raises(NotFound):
        blob_store.get("0" * 64)  # well formed, absent


def test_local_path(blob_store: BlobStore) -> None:
    key = blob_store.put(b"frames")
    with blob_store.local_path(key, suffix=".mp4") as path:
        assert path.read_bytes() == b"frames"
    if not blob_store.local:
        assert not path.exists()  # the temporary copy is gone
    with pytest.raises(NotFound), blob_store.local_path("1" * 64):
        pass


def test_local_layout_and_atomic_rename(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path / "b"))
    key = store.put(b"hello")
    assert (tmp_path / "b" / key[:2] / key[2:4] / key).read_bytes() == b"hello"
    assert list((tmp_path / "b" / ".tmp").iterdir()) == []


def test_leftover_spool_files_are_swept(tmp_path: Path) -> None:
    spool = tmp_path / "b" / ".tmp"
    spool.mkdir(parents=True)
    old, fresh = spool / "old.part", spool / "fresh.part"
    old.write_bytes(b"killed mid-upload")
    fresh.write_bytes(b"another process uploading now")
    os.utime(old, (0, 0))
    BlobStore(str(tmp_path / "b"))
    assert not old.exists() and fresh.exists()


def test_from_settings_defaults_to_data_dir(settings: Settings) -> None:
    store = BlobStore.from_settings(settings)
    key = store.put(b"x")
    assert store.local and Path(store.path(key)).is_relative_to(settings.data_dir.resolve())


@pytest.mark.integration
def test_s3_from_settings(s3_endpoint: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        storage={"url": "s3://vmm/from-settings", "options": {"endpoint_url": s3_endpoint}},
    )
    store = BlobStore.from_settings(settings)
    key = store.put(b"clip bytes")
    assert not store.local and store.get(key) == b"clip bytes"
    assert store.fs.exists(f"vmm/from-settings/{key[:2]}/{key[2:4]}/{key}")
