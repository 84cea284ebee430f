"""Receive uploaded videos as a stream: bytes go to a spool file as they arrive, never all into
memory, and the upload stops at the first byte past the size limit or at a first chunk that is not
a video container. The client's filename and content type are only ever kept as display text.
"""

from __future__ import annotations

import re
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

from video_mm.errors import NotAVideo, VideoTooLarge

SNIFF_BYTES = 512
FORM_OVERHEAD_BYTES = 2**20  # room for part headers and small form fields


@dataclass
class Spooled:
    """One received file: where its bytes were spooled and the name the client gave it."""

    path: Path
    filename: str
    size: int


class BadRequest(ValueError):
    """The request body itself is malformed (not the video inside it)."""


def sniff_container(head: bytes) -> str | None:
    """Name the container a file starts with, from its magic bytes alone; None if none matches."""
    if len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"FLV\x01"):
        return "flv"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"  # animated GIFs are clips too (MSVD ships some)
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "asf"
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "mpeg"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts"
    return None


def display_name(raw: str | None) -> str:
    """The client's filename as harmless display text: the last path part, printable, bounded.

    It is stored in the catalog and shown on the page; it is never used to build a path.
    """
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(c for c in name if c.isprintable()).strip().lstrip(".")
    return name[:200] or "upload"


class _Sink:
    """Writes one file's bytes to a spool file, checking the container and the running total."""

    def __init__(self, spool_dir: Path, filename: str, budget: _Budget) -> None:
        self.filename = filename
        self.budget = budget
        self.file = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in close/discard)
            dir=spool_dir, prefix="up-", delete=False
        )
        self.head = b""
        self.size = 0
        self.checked = False

    def write(self, data: bytes) -> None:
        self.budget.take(len(data))
        self.size += len(data)
        if not self.checked:
            self.head += data[: SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES:
                self._check()
        self.file.write(data)

    def _check(self) -> None:
        self.checked = True
        if sniff_container(self.head) is None:
            raise NotAVideo(self.filename, "the content is not a known video container")

    def close(self) -> Spooled:
        if not self.checked:
            self._check()
        self.file.close()
        return Spooled(Path(self.file.name), self.filename, self.size)

    def discard(self) -> None:
        self.file.close()
        Path(self.file.name).unlink(missing_ok=True)


@dataclass
class _Budget:
    limit: int
    used: int = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise VideoTooLarge("upload", f"larger than the limit of {self.limit} bytes")


@dataclass
class _Multipart:
    """Callbacks for python-multipart's streaming parser: file parts go to sinks, the rest is
    dropped (form fields are small and bounded by the header limits of the parser)."""

    spool_dir: Path
    budget: _Budget
    max_files: int
    done: list[Spooled] = field(default_factory=list)
    sink: _Sink | None = None
    _field: bytes = b""
    _value: bytes = b""
    _disposition: bytes = b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: setattr(self, "_field", self._field + d[s:e]),
            "on_header_value": lambda d, s, e: setattr(self, "_value", self._value + d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""

    def _header_end(self) -> None:
        if self._field.lower() == b"content-disposition":
            self._disposition = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        if b"filename" not in params:
            return  # a plain form field: not a file, ignored
        if len(self.done) >= self.max_files:
            raise BadRequest(f"at most {self.max_files} files per request")
        name = display_name(params[b"filename"].decode("utf-8", "replace"))
        self.sink = _Sink(self.spool_dir, name, self.budget)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.sink is not None:
            self.sink.write(data[start:end])

    def _part_end(self) -> None:
        if self.sink is not None:
            sink, self.sink = self.sink, None
            self.done.append(sink.close())

    def discard(self) -> None:
        if self.sink is not None:
            self.sink.discard()
        for spooled in self.done:
            spooled.path.unlink(missing_ok=True)


async def receive_files(
    chunks: AsyncIterator[bytes],
    content_type: str,
    *,
    spool_dir: Path,
    max_bytes: int,
    max_files: int,
    filename: str | None = None,
) -> list[Spooled]:
    """Spool the files of a request body to ``spool_dir`` and return them in order.

    ``multipart/form-data`` bodies may hold up to ``max_files`` file parts; any other content type
    is one raw file named ``filename``. Raises :class:`VideoTooLarge` past ``max_bytes`` (all files
    together), :class:`NotAVideo` when a file does not start like a video container, and
    :class:`BadRequest` for malformed bodies. Nothing is left on disk when it raises.
    """
    spool_dir.mkdir(parents=True, exist_ok=True)
    budget = _Budget(max_bytes)
    mime, params = parse_options_header(content_type)
    if mime == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise BadRequest("multipart/form-data without a boundary")
        form = _Multipart(spool_dir, budget, max_files)
        body = _Budget(max_bytes + FORM_OVERHEAD_BYTES)  # fields and part headers count too
        try:
            parser = MultipartParser(boundary, form.callbacks())
            async for chunk in chunks:
                body.take(len(chunk))
                parser.write(chunk)
            parser.finalize()
        except (NotAVideo, VideoTooLarge, BadRequest):
            form.discard()
            raise
        except Exception as exc:  # python-multipart's parse errors
            form.discard()
            raise BadRequest(f"malformed multipart body: {exc}") from exc
        if form.sink is not None:  # the body ended inside a part
            form.discard()
            raise BadRequest("the multipart body ended before its last part did")
        if not form.done:
            raise BadRequest("no file in the request (send it as a form field with a filename)")
        return form.done
    sink = _Sink(spool_dir, display_name(filename), budget)
    try:
        async for chunk in chunks:
            sink.write(chunk)
        if sink.size == 0:
            raise BadRequest("empty request body")
        return [sink.close()]
    except BaseException:
        sink.discard()
        raise
