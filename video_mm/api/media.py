"""Serve stored bytes with HTTP range support, so a browser's player can seek in a video stored in
any blob store (a local directory or S3), not only in local files."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import BinaryIO

from fastapi import Response
from fastapi.responses import StreamingResponse

CHUNK_BYTES = 256 * 1024
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The one byte range ``[start, end)`` a ``Range`` header asks for; None means "send it all"
    (no header, several ranges, or a unit we do not serve). Raises ValueError if unsatisfiable."""
    match = _RANGE.match(header)
    if not match or (not match[1] and not match[2]):
        return None
    if not match[1]:  # suffix: the last N bytes
        n = int(match[2])
        if n == 0:
            raise ValueError("empty suffix range")
        return max(0, size - n), size
    start = int(match[1])
    end = min(int(match[2]) + 1, size) if match[2] else size
    if start >= size or end <= start:
        raise ValueError("range outside the file")
    return start, end


def _stream(open_file: Callable[[], BinaryIO], start: int, end: int) -> Iterator[bytes]:
    with open_file() as f:
        f.seek(start)
        left = end - start
        while left > 0:
            chunk = f.read(min(CHUNK_BYTES, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def ranged_response(
    open_file: Callable[[], BinaryIO],
    size: int,
    media_type: str,
    range_header: str | None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A 200 with the whole body, a 206 with the asked-for range, or a 416."""
    base = {"accept-ranges": "bytes", **(headers or {})}
    try:
        span = parse_range(range_header, size) if range_header else None
    except ValueError:
        return Response(status_code=416, headers={**base, "content-range": f"bytes */{size}"})
    if span is None:
        return StreamingResponse(
            _stream(open_file, 0, size),
            media_type=media_type,
            headers={**base, "content-length": str(size)},
        )
    start, end = span
    return StreamingResponse(
        _stream(open_file, start, end),
        status_code=206,
        media_type=media_type,
        headers={
            **base,
            "content-length": str(end - start),
            "content-range": f"bytes {start}-{end - 1}/{size}",
        },
    )
