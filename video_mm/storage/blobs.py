"""Content-addressed blob storage over fsspec: a local directory by default, S3 at scale.

A blob's key is the sha256 of its bytes, so the same upload twice is stored once and a key never
points at changed content. Uploads stream through a spool file on local disk in fixed chunks (never
whole in memory) while they are hashed; only then is the key known. Writes are atomic: locally the
spool file is renamed into place, remotely it is sent with one PUT (an object store shows an object
whole or not at all). A reader therefore never sees a partial blob.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from video_mm.errors import NotFound, StorageError, VideoMMError
from video_mm.settings import Settings

_KEY = re.compile(r"^[0-9a-f]{64}$")
SPOOL_MAX_AGE_S = 86_400


def _spool_write(url: str, out: BinaryIO, chunk: bytes, *, sync: bool = False) -> None:
    """Write to the spool file; the disk failing (full, read-only) is a StorageError."""
    try:
        if chunk:
            out.write(chunk)
        if sync:
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise StorageError(f"{url}: cannot spool a blob: {exc}") from exc


class BlobTooLarge(VideoMMError):
    """An upload went past the size limit it was given; retrying cannot help."""

    code = "too_large"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"blob larger than the limit of {limit} bytes")


class BlobStore:
    """Blobs under one fsspec URL, named by the sha256 of their content."""

    def __init__(self, url: str, *, chunk_bytes: int = 1 << 20, **options: Any) -> None:
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self.url = url
        self.chunk_bytes = chunk_bytes
        self.fs, root = fsspec.core.url_to_fs(url, **options)
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            # The spool lives beside the blobs so the final rename never crosses filesystems.
            self._spool = Path(self.root) / ".tmp"
            self._spool.mkdir(parents=True, exist_ok=True)
            self._sweep_spool()

    def _sweep_spool(self) -> None:
        """Remove spool files left by a killed process (a day old: no upload lasts that long)."""
        cutoff = time.time() - SPOOL_MAX_AGE_S
        for part in self._spool.glob("*.part"):
            with suppress(FileNotFoundError):
                if part.stat().st_mtime < cutoff:
                    part.unlink()

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobStore:
        return cls(
            settings.storage_url,
            chunk_bytes=settings.storage.chunk_bytes,
            **settings.storage.options,
        )

    def __repr__(self) -> str:
        return f"BlobStore({self.url!r})"

    # -- layout ----------------------------------------------------------------------------------
    def path(self, key: str) -> str:
        """Where a key lives: two levels of fan-out so no directory grows huge."""
        if not isinstance(key, str) or not _KEY.match(key):
            raise NotFound(f"not a blob key: {key!r}")
        return f"{self.root}/{key[:2]}/{key[2:4]}/{key}"

    # -- writing ---------------------------------------------------------------------------------
    def put(self, source: bytes | BinaryIO | str | Path, *, max_bytes: int | None = None) -> str:
        """Store bytes, a binary file object (read in chunks) or a local file; return its key.

        Raises :class:`BlobTooLarge` past ``max_bytes`` (nothing is kept) and
        :class:`~video_mm.errors.StorageError` when the backend fails.
        """
        if isinstance(source, bytes | bytearray | memoryview):
            if max_bytes is not None and len(source) > max_bytes:
                raise BlobTooLarge(max_bytes)
            return self._put_stream(_BytesReader(bytes(source)), max_bytes)
        if isinstance(source, str | Path):
            with open(source, "rb") as f:
                return self._put_stream(f, max_bytes)
        return self._put_stream(source, max_bytes)

    def _put_stream(self, stream: BinaryIO, max_bytes: int | None) -> str:
        """Spool (hashing as it goes), then commit under the hash. A full or read-only disk is a
        StorageError like any backend failure (transient: space may be freed), not an internal
        error; a failing source (a client's connection) raises its own error."""
        spool_dir = str(self._spool) if self.local else None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f"{uuid.uuid4().hex}.", suffix=".part",
                                       dir=spool_dir)
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot spool a blob: {exc}") from exc
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(self.chunk_bytes):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise BlobTooLarge(max_bytes)
                    digest.update(chunk)
                    _spool_write(self.url, out, chunk)
                _spool_write(self.url, out, b"", sync=True)
            key = digest.hexdigest()
            self._commit(tmp, key)
            return key
        finally:
            with suppress(OSError):  # gone already, or the disk refuses even that
                os.unlink(tmp)

    def _commit(self, tmp: str, key: str) -> None:
        final = self.path(key)
        try:
            if self.local:
                Path(final).parent.mkdir(parents=True, exist_ok=True)
                if not os.path.exists(final):
                    os.replace(tmp, final)  # atomic; a concurrent identical put is harmless
            elif not self._exists(final):
                self.fs.put_file(tmp, final)
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot store blob {key}: {exc}") from exc

    # -- reading ---------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self._exists(self.path(key))

    def _exists(self, path: str) -> bool:
        try:
            self.fs.invalidate_cache(path)
            return bool(self.fs.exists(path))
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot check {path}: {exc}") from exc

    def size(self, key: str) -> int:
        path = self.path(key)
        try:
            return int(self.fs.size(path))
        except FileNotFoundError:
            raise NotFound(f"no blob {key} in {self.url}") from None
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot stat {key}: {exc}") from exc

    def open(self, key: str) -> BinaryIO:
        """A binary file object for streaming a blob out (the caller closes it)."""
        path = self.path(key)
        try:
            return self.fs.open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"no blob {key} in {self.url}") from None
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot open {key}: {exc}") from exc

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    @contextmanager
    def local_path(self, key: str, suffix: str = "") -> Iterator[Path]:
        """A path on local disk holding the blob: the blob itself locally, else a temporary copy."""
        path = self.path(key)
        if self.local:
            if not os.path.exists(path):
                raise NotFound(f"no blob {key} in {self.url}")
            yield Path(path)
            return
        fd, tmp = tempfile.mkstemp(suffix=suffix)
        os.close(fd)
        try:
            try:
                self.fs.get_file(path, tmp)
            except FileNotFoundError:
                raise NotFound(f"no blob {key} in {self.url}") from None
            except OSError as exc:
                raise StorageError(f"{self.url}: cannot fetch {key}: {exc}") from exc
            yield Path(tmp)
        finally:
            with suppress(FileNotFoundError):
                os.unlink(tmp)

    def keys(self) -> Iterator[str]:
        """Every stored key (for audits and garbage collection; lists the whole store)."""
        try:
            paths = self.fs.find(self.root)
        except FileNotFoundError:
            return
        finally:
            self.fs.invalidate_cache()
        for p in paths:
            name = p.rsplit("/", 1)[-1]
            if _KEY.match(name):
                yield name

    # -- deleting --------------------------------------------------------------------------------
    def delete(self, key: str) -> bool:
        """Remove a blob; True if it was there. Deleting a missing blob is not an error."""
        path = self.path(key)
        try:
            if not self._exists(path):
                return False
            self.fs.rm_file(path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot delete {key}: {exc}") from exc


class _BytesReader:
    """Chunked reads over bytes without copying them into a BytesIO."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, n: int) -> bytes:
        chunk = self._view[self._pos : self._pos + n]
        self._pos += len(chunk)
        return bytes(chunk)
