"""Streaming upload parsing, content sniffing, display names and byte ranges, without a server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from video_mm.api.media import parse_range
from video_mm.api.upload import BadRequest, display_name, receive_files, sniff_container
from video_mm.errors import NotAVideo, VideoTooLarge

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 600


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _receive(data: bytes, content_type: str, tmp: Path, chunk: int = 7, **kw: object) -> list:
    options = {"max_bytes": 10_000, "max_files": 4, **kw}
    return asyncio.run(
        receive_files(_chunks(data, chunk), content_type, spool_dir=tmp, **options)  # type: ignore[arg-type]
    )


def _form(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for name, filename, body in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n"
        out += head.encode() + body + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_sniffs_real_clips(msvd14_videos: list[Path], shared_data: Path) -> None:
    kinds = {sniff_container(p.read_bytes()[:512]) for p in msvd14_videos}
    assert kinds == {"avi", "gif"}
    mp4 = shared_data / "msrvtt" / "video8560" / "video8560.mp4"
    assert sniff_container(mp4.read_bytes()[:512]) == "mp4"


@pytest.mark.parametrize(
    "head",
    [b"", b"hello world" * 50, b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, b"%PDF-1.7" + b" " * 600,
     b"<html>" + b" " * 600, b"RIFF\x00\x00\x00\x00WAVEfmt "],
)
def test_sniff_refuses_non_videos(head: bytes) -> None:
    assert sniff_container(head) is None


def test_display_names_are_never_paths() -> None:
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("C:\\Users\\me\\clip.mp4") == "clip.mp4"
    assert display_name("..") == "upload"
    assert display_name(".hidden.mp4") == "hidden.mp4"
    assert display_name("a\x00b\nc.mp4") == "abc.mp4"
    assert display_name(None) == "upload"
    assert len(display_name("x" * 5000)) == 200


def test_multipart_is_streamed_to_spool_files(tmp_path: Path) -> None:
    second = b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 3
    body = _form([("note", None, b"ignored field"), ("files", "a/b/one.mp4", MP4_HEAD),
                  ("files", "two.mkv", second)])
    got = _receive(body, "multipart/form-data; boundary=b0undary", tmp_path / "spool")
    assert [g.filename for g in got] == ["one.mp4", "two.mkv"]
    assert [g.path.read_bytes() for g in got] == [MP4_HEAD, second]
    assert all(g.path.parent == tmp_path / "spool" for g in got)
    assert [g.size for g in got] == [len(MP4_HEAD), len(second)]


def test_raw_body(tmp_path: Path) -> None:
    (got,) = _receive(MP4_HEAD, "application/octet-stream", tmp_path, filename="x.mp4")
    assert got.path.read_bytes() == MP4_HEAD and got.filename == "x.mp4"


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b"not a video at all" * 40, "application/octet-stream", NotAVideo),
        (MP4_HEAD * 30, "application/octet-stream", VideoTooLarge),
        (b"", "application/octet-stream", BadRequest),
        (_form([("file", "v.mp4", b"just text" * 100)]), "multipart/form-data; boundary=b0undary",
         NotAVideo),
        (_form([("file", "v.mp4", MP4_HEAD * 30)]), "multipart/form-data; boundary=b0undary",
         VideoTooLarge),
        (_form([("note", None, b"no file")]), "multipart/form-data; boundary=b0undary", BadRequest),
        (_form([("file", "v.mp4", MP4_HEAD)])[:-30], "multipart/form-data; boundary=b0undary",
         BadRequest),
        (_form([("f", f"{i}.mp4", MP4_HEAD) for i in range(5)]),
         "multipart/form-data; boundary=b0undary", BadRequest),
        (b"x", "multipart/form-data", BadRequest),
    ],
)
def test_bad_uploads_leave_nothing(
    tmp_path: Path, body: bytes, content_type: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        _receive(body, content_type, tmp_path, chunk=64)
    assert list(tmp_path.iterdir()) == []


def test_too_large_stops_reading_early(tmp_path: Path) -> None:
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        yield MP4_HEAD
        while True:
            consumed += 1024
            yield b"\x00" * 1024

    with pytest.raises(VideoTooLarge):
        asyncio.run(receive_files(endless(), "video/mp4", spool_dir=tmp_path, max_bytes=50_000,
                                  max_files=1))
    assert consumed <= 51_200


@pytest.mark.parametrize(
    ("header", "span"),
    [("bytes=0-99", (0, 100)), ("bytes=100-", (100, 1000)), ("bytes=-10", (990, 1000)),
     ("bytes=900-5000", (900, 1000)), ("bytes=-5000", (0, 1000)), ("bytes=0-0", (0, 1)),
     ("bytes=0-1,5-9", None), ("items=0-1", None), ("bytes=-", None)],
)
def test_parse_range(header: str, span: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == span


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-2", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(ValueError):
        parse_range(header, 1000)
