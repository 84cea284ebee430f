"""What one client, or everyone together, may ask of the server: per-client rates of uploads and
searches, a bounded number of preview transcodes at once, a floor of free disk for uploads.

Every limit is a setting (``api.*``) and every refusal is a typed error the app maps to its HTTP
status: 429 with ``Retry-After`` (rate), 503 with ``Retry-After`` (previews busy), 507 (disk).
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import Request

from video_mm.errors import VideoMMError


class RateLimited(VideoMMError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Busy(VideoMMError):
    code = "busy"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InsufficientStorage(VideoMMError):
    code = "insufficient_storage"


def client_key(request: Request) -> str:
    """Who is asking: the bearer token when one is sent (hashed, never kept), else the address."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and len(auth) > 7:
        return "token:" + hashlib.sha256(auth[7:].encode()).hexdigest()[:16]
    return "ip:" + (request.client.host if request.client else "unknown")


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests a minute on average, bursts of up to
    ``burst``. Bounded memory: the least recently seen clients are forgotten past ``max_clients``
    (a forgotten client starts again with a full bucket)."""

    def __init__(self, what: str, setting: str, per_minute: float, burst: int,
                 max_clients: int = 10_000) -> None:
        self.what, self.setting = what, setting
        self.rate, self.burst = per_minute / 60.0, max(1, burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Take one request from ``client``'s bucket, or raise :class:`RateLimited`."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise RateLimited(
                    f"too many {self.what}: {self.rate * 60:g} a minute per client "
                    f"({self.setting}); try again in {wait:.0f} s", wait)
            self._buckets[client] = (tokens - 1.0, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)


class Gate:
    """At most ``n`` holders at once; a caller waits up to ``wait_s`` for a place, else
    :class:`Busy` (the preview transcodes: each is an ffmpeg process of up to
    ``api.preview_timeout_s`` on the API host)."""

    def __init__(self, what: str, n: int, wait_s: float) -> None:
        self.what, self.n, self.wait_s = what, n, wait_s
        self._slots = threading.BoundedSemaphore(n)

    @contextmanager
    def place(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self.wait_s):
            raise Busy(f"{self.n} {self.what} already running (api.preview_max_concurrent); "
                       "try again shortly", max(1.0, self.wait_s))
        try:
            yield
        finally:
            self._slots.release()


def check_free_disk(folder: Path, min_free_bytes: int) -> None:
    """Refuse an upload when the disk it is spooled and stored on has less than
    ``min_free_bytes`` free (``api.min_free_disk_bytes``)."""
    if min_free_bytes <= 0:
        return
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise InsufficientStorage(
            f"the server has {free} bytes of disk free, below the {min_free_bytes} it keeps "
            "(api.min_free_disk_bytes): uploads are refused until space is freed")
