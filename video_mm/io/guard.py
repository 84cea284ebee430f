"""What may be opened at all, decided before ffmpeg or Decord sees a single byte.

ffmpeg follows references: an HLS playlist or an ffconcat file makes it open other files or URLs,
and a string like ``http://...`` or ``concat:a|b`` names a protocol, not a file. Only local files
and file objects are read, so those are refused here by name and by content, and every path handed
on is absolute (an absolute path never parses as a protocol).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from video_mm.errors import ForbiddenSource, NotAVideo, NotFound, VideoTooLarge
from video_mm.settings import IOSettings

Source = str | os.PathLike[str] | BinaryIO

# ffmpeg reads "proto:..." and "proto,options:..." as a protocol, not a file name.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+)(,[^:/]*)?:")
_PLAYLIST_SUFFIXES = {".m3u8", ".m3u", ".ffconcat", ".concat", ".pls", ".sdp", ".mpd", ".xspf"}
# Manifests found anywhere in the first SNIFF_BYTES, not only at the start: an XML prolog, a BOM,
# comments or junk before them do not stop ffmpeg's probes from reading them.
_PLAYLIST_MARKERS = re.compile(
    rb"#EXTM3U|#EXT-X-|ffconcat\s+version|<(?:[\w.-]+:)?MPD[\s>/]|\[playlist\]", re.IGNORECASE
)
SNIFF_BYTES = 4096


def is_fileobj(source: object) -> bool:
    return hasattr(source, "read") and not isinstance(source, str | bytes | os.PathLike)


def describe(source: Source) -> str:
    """How errors name a source: its path, or the file object's name."""
    if is_fileobj(source):
        return str(getattr(source, "name", "<file object>"))
    return os.fspath(source)  # type: ignore[arg-type]


def check_source(source: str | os.PathLike[str], limits: IOSettings) -> Path:
    """The absolute local path of ``source``; refuses URLs, protocols, playlists, huge files."""
    text = os.fspath(source)
    match = _SCHEME.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme != "file":
            raise ForbiddenSource(
                text, f"the '{scheme}' protocol is refused: only local files are read"
            )
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise ForbiddenSource(text, "file URLs on another host are refused")
        text = unquote(parsed.path)
    path = Path(text).expanduser().absolute()
    if path.suffix.lower() in _PLAYLIST_SUFFIXES:
        raise ForbiddenSource(
            path, f"playlists ({path.suffix}) are refused: only media files are read"
        )
    if not path.exists():
        raise NotFound(f"{path}: no such file")
    if not path.is_file():
        raise NotAVideo(path, "not a regular file")
    size = path.stat().st_size
    _check_size(path, size, limits)
    with path.open("rb") as f:
        _check_head(path, f.read(SNIFF_BYTES))
    return path


def check_fileobj(fobj: BinaryIO, limits: IOSettings) -> BinaryIO:
    """The same checks for an open binary file object (it must be seekable); rewinds it."""
    name = describe(fobj)
    if not (hasattr(fobj, "seek") and fobj.seekable()):
        raise NotAVideo(name, "file object is not seekable")
    fobj.seek(0, os.SEEK_END)
    size = fobj.tell()
    fobj.seek(0)
    _check_size(name, size, limits)
    head = fobj.read(SNIFF_BYTES)
    fobj.seek(0)
    _check_head(name, head)
    return fobj


def check_input(source: Source, limits: IOSettings) -> Path | BinaryIO:
    """:func:`check_source` for paths, :func:`check_fileobj` for file objects."""
    if is_fileobj(source):
        return check_fileobj(source, limits)  # type: ignore[arg-type]
    return check_source(source, limits)  # type: ignore[arg-type]


def _check_size(name: str | Path, size: int, limits: IOSettings) -> None:
    if size == 0:
        raise NotAVideo(name, "empty file (0 bytes)")
    if size > limits.max_file_bytes:
        raise VideoTooLarge(
            name,
            f"file is {size} bytes, over the limit of {limits.max_file_bytes} (io.max_file_bytes)",
        )


def _check_head(name: str | Path, head: bytes) -> None:
    if _PLAYLIST_MARKERS.search(head):
        raise ForbiddenSource(
            name, "playlists (HLS, ffconcat, DASH) are refused: only media files are read"
        )
