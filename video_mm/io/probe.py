"""``probe``: what a video is, from container metadata and one decoded frame (no full decode).

It is also the gate every reader goes through: the limits (size, duration, frame size, frame
count) are checked here, and every ffmpeg failure becomes a typed error that names the file.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, NamedTuple

import av
import av.logging
import numpy as np

from video_mm.errors import (
    CorruptVideo,
    DecodeTimeout,
    NotAVideo,
    UnsupportedCodec,
    VideoError,
    VideoTooLarge,
)
from video_mm.io.damage import (
    TS_PACKET_SIZES,
    damage_warning,
    lost_fragments,
    nal_length_size,
    nal_lengths_fit,
    require_share,
)
from video_mm.io.guard import Source, check_input, describe
from video_mm.io.native_logs import route_ffmpeg_logs
from video_mm.records import VideoInfo
from video_mm.settings import IOSettings, get_settings

# Packets scanned (demuxed, not decoded) to tell constant from variable frame rate.
VFR_SCAN_PACKETS = 300
# Frame-to-frame gaps may spread this much around the median before the rate counts as variable.
VFR_TOLERANCE = 0.1
# A scan that demuxes a file whole keeps its packets' data, up to this many bytes, so a reader
# decodes them from memory instead of demuxing the file a second time.
SCAN_KEEP_BYTES = 64 * 2**20

# FFmpeg's stream probe reads a GIF whole (up to its 5 MB probesize) to guess a frame rate; the
# header has the rest, and the probe's scan times every frame. So a GIF is probed on this much.
GIF_PROBE_BYTES = 32768
_BAD_SIZE = re.compile(r"Picture size (\d+)x(\d+) is invalid")
_LOG_LOCK = threading.Lock()
route_ffmpeg_logs()


def probe(
    source: Source, limits: IOSettings | None = None, *, isolate: bool | None = None
) -> VideoInfo:
    """Duration, frame rate, frame count, display size, rotation, codec, pixel format, audio.

    With ``isolate`` (default: ``io.isolate_probe``) a path is probed in a child process that is
    killed after ``io.decode_timeout_s``, so even a decoder that never returns cannot hang us.
    """
    limits = limits or get_settings().io
    checked = check_input(source, limits)
    if (limits.isolate_probe if isolate is None else isolate) and isinstance(checked, Path):
        from video_mm.io.isolate import run_isolated

        return run_isolated(
            probe,
            checked,
            limits,
            isolate=False,
            timeout=limits.decode_timeout_s,
            source=str(checked),
        )
    with probed(checked, limits) as (info, _, _, _):
        return info


class Packet(NamedTuple):
    """A demuxed packet with data, as an index needs it (read without decoding)."""

    pts: int | None
    dts: int | None
    key: bool
    corrupt: bool  # the demuxer marks it damaged (or cut off, at the end of a cut file)
    broken: bool  # its NAL lengths do not fill it (H.264/HEVC as in MP4): FFmpeg drops it

    @classmethod
    def of(cls, packet: av.Packet, nal: int) -> Packet:
        """``nal``: :func:`nal_length_size` of the stream (0: not checked)."""
        broken = bool(nal) and not nal_lengths_fit(memoryview(packet), nal)
        return cls(packet.pts, packet.dts, packet.is_keyframe, packet.is_corrupt, broken)


@dataclass
class Scan:
    """What the probe's scan demuxed: every packet with data until ``VFR_SCAN_PACKETS`` of them had
    timestamps (in file order), and how it ended. A reader that indexes the file carries on from
    there on the same container, not from the start."""

    packets: list[Packet] = field(default_factory=list)
    complete: bool = True  # the demuxer reached the end: these are all the packets
    stopped: bool = False  # a read error ended it (a damaged file): what follows is not read
    moved: bool = False  # the probe read elsewhere after it (a TS's last frame): not where it was
    # The packets themselves (data included), one for each of ``packets``, where the scan read
    # every packet there is to read (complete or stopped) in at most SCAN_KEEP_BYTES; else None.
    data: list[av.Packet] | None = field(default_factory=list)
    # With ``data``: how many of its packets the decoder was fed for the first frame, and the
    # frames that came out (the first among them), so a reader decoding ``data`` goes on from
    # there instead of decoding them again. None without ``data``, or where the decoder was
    # drained (an empty packet) to get the first frame.
    decoded: tuple[int, list[av.VideoFrame]] | None = None


@contextmanager
def probed(
    checked: Path | BinaryIO, limits: IOSettings, *, threads: bool = False
) -> Iterator[
    tuple[VideoInfo, Scan, av.container.InputContainer, av.video.stream.VideoStream]
]:
    """:func:`probe` (in this process) that keeps the container open: yields what the probe found,
    the packets its scan demuxed, the container and its video stream, so a reader indexes the
    file on the same open, from where the scan stopped. ``threads``: decode with FFmpeg's frame
    and slice threads where the frames are big enough (:func:`decode_threads`; set before the
    first decode, for a reader to go on decoding with)."""
    with open_container(checked, limits) as (container, logs):
        stream = video_stream(container, checked, logs)
        if threads:
            decode_threads(stream, limits)
        deadline = Deadline(checked, limits.decode_timeout_s)
        info, scan = _info(container, stream, checked, limits, deadline)
        yield info, scan, container, stream


def decode_threads(stream: av.video.stream.VideoStream, limits: IOSettings) -> None:
    """Decode on FFmpeg's frame and slice threads when the frames have at least
    ``io.frame_threads_min_pixels``, else on one thread: on small frames, starting and feeding
    the threads costs more wall-clock time than they save, and on any frames more CPU time.
    Set before the first decode."""
    big = stream.width * stream.height >= limits.frame_threads_min_pixels
    stream.codec_context.thread_type = "AUTO" if big else "NONE"


class Deadline:
    """The decode-time limit of one operation; checked between frames and packets."""

    def __init__(self, source: Path | BinaryIO, seconds: float) -> None:
        self.source, self.seconds = describe(source), seconds
        self.end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise DecodeTimeout(
                self.source, f"decoding took longer than {self.seconds:g} s (io.decode_timeout_s)"
            )


@contextmanager
def open_container(
    checked: Path | BinaryIO, limits: IOSettings
) -> Iterator[tuple[av.container.InputContainer, list[tuple[int, str, str]]]]:
    """Open with PyAV: only the ``file`` protocol, ffmpeg's own I/O timeout, typed errors.

    Yields the container and the ffmpeg log lines captured while opening it.
    """
    name = describe(checked)
    target = str(checked) if isinstance(checked, Path) else checked
    options = {"protocol_whitelist": "file", **_stream_probe_options(_head(checked, 12))}
    if not isinstance(checked, Path):
        checked.seek(0)
    with _LOG_LOCK:
        previous = av.logging.get_level()
        av.logging.set_level(av.logging.ERROR)
        try:
            with av.logging.Capture() as logs:
                container = av.open(
                    target,
                    options=options,
                    timeout=(limits.decode_timeout_s, limits.decode_timeout_s),
                )
        except av.error.ExitError as exc:
            raise DecodeTimeout(
                name,
                f"opening took longer than {limits.decode_timeout_s:g} s (io.decode_timeout_s)",
            ) from exc
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise _open_error(checked, exc) from exc
        finally:
            av.logging.set_level(previous)
    try:
        yield container, list(logs)
    except av.error.ExitError as exc:
        raise DecodeTimeout(
            name, f"reading took longer than {limits.decode_timeout_s:g} s (io.decode_timeout_s)"
        ) from exc
    except av.error.FFmpegError as exc:
        raise CorruptVideo(name, f"ffmpeg could not read it: {ffmpeg_reason(exc)}") from exc
    finally:
        container.close()


def _stream_probe_options(head: bytes) -> dict[str, str]:
    """FFmpeg's stream probe (``avformat_find_stream_info``) cut to what the header leaves open.

    A GIF is probed on ``GIF_PROBE_BYTES``. An AVI's header declares its frame rate and every
    packet's time is its frame number, yet FFmpeg demuxes up to 40 packets past the codec
    parameters to estimate the rate again (``r_frame_rate``, which the probe does not use):
    ``fpsprobesize`` 0 skips that, a third of opening a small AVI (3.3 -> 1.1 ms at 320x240)
    with the same streams, times and frames."""
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return {"probesize": str(GIF_PROBE_BYTES)}
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return {"fpsprobesize": "0"}
    return {}


def _head(checked: Path | BinaryIO, n: int) -> bytes:
    """The first ``n`` bytes of a file or a stream (left at its start)."""
    if isinstance(checked, Path):
        with checked.open("rb") as f:
            return f.read(n)
    checked.seek(0)
    head = checked.read(n)
    checked.seek(0)
    return head


def video_stream(
    container: av.container.InputContainer, checked: Path | BinaryIO, logs: list
) -> av.video.stream.VideoStream:
    """The first real video stream (cover art in audio files does not count)."""
    name = describe(checked)
    streams = [
        s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
    ]
    if not streams:
        if container.streams.audio:
            raise NotAVideo(name, "audio only: the file has no video stream")
        raise NotAVideo(name, f"no video stream in this {container.format.name} file")
    stream = streams[0]
    if stream.codec_context is None or stream.codec_context.codec is None:
        raise UnsupportedCodec(name, f"no decoder for its video codec ({stream.codec_context})")
    if not stream.width or not stream.height:
        for _, _, message in logs:
            found = _BAD_SIZE.search(message)
            if found:
                raise VideoTooLarge(
                    name,
                    f"the header declares {found[1]}x{found[2]} frames, beyond what can be decoded",
                )
        raise CorruptVideo(name, "the video stream declares no frame size")
    return stream


def demux(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> Iterator[av.Packet]:
    """``container.demux(stream)``, ending cleanly where PyAV fails on a damaged transport stream:
    when a stream appears mid-file, PyAV raises IndexError while flushing at the end."""
    try:
        yield from container.demux(stream)
    except IndexError:
        return


def rotation_of(frame: av.VideoFrame) -> int:
    """Degrees clockwise the frame must turn for display (ffmpeg stores counter-clockwise)."""
    return round(-frame.rotation / 90.0) % 4 * 90


def check_frame_size(name: str, width: int, height: int, limits: IOSettings) -> None:
    fits = (width <= limits.max_width and height <= limits.max_height) or (
        width <= limits.max_height and height <= limits.max_width
    )
    if not fits:
        raise VideoTooLarge(
            name,
            f"frames are {width}x{height}, over the limit of "
            f"{limits.max_width}x{limits.max_height} (io.max_width, io.max_height)",
        )


def _info(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    checked: Path | BinaryIO,
    limits: IOSettings,
    deadline: Deadline,
) -> tuple[VideoInfo, Scan]:
    name = describe(checked)
    check_frame_size(name, stream.width, stream.height, limits)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = stream.frames / fps if stream.frames and fps else 0.0
    if duration > limits.max_duration_s:
        raise VideoTooLarge(
            name,
            f"lasts {duration:.1f} s, over the limit of {limits.max_duration_s:g} s "
            "(io.max_duration_s)",
        )
    frame_count = stream.frames or round(duration * fps)
    if frame_count > limits.max_frames:
        raise VideoTooLarge(
            name, f"has {frame_count} frames, over the limit of {limits.max_frames} (io.max_frames)"
        )
    first, scan = _scan(container, stream, name, deadline)
    complete = scan.complete
    stamps = np.sort(np.asarray([p.pts for p in scan.packets if p.pts is not None], np.float64))
    corrupt = sum(p.corrupt for p in scan.packets)
    size = checked.stat().st_size if isinstance(checked, Path) else _fileobj_size(checked)
    if complete and stamps.size:  # the scan saw every packet: the count is exact
        frame_count = int(stamps.size)
    present, expected, cut_at = _cut(container, stream, size, stamps, complete, fps, deadline)
    scan.moved = container.format.name == "mpegts"  # _cut may have read the end of a TS
    fragments = _lost_fragments(checked, deadline) if "mp4" in container.format.name else 0
    gaps = np.diff(stamps) * float(stream.time_base or Fraction(1))
    gaps = gaps[gaps > 0]
    if fragments and gaps.size:  # the jumps over lost fragments are not a variable frame rate
        gaps = gaps[gaps < 1.5 * np.median(gaps)]
        fps = fps or 1.0 / float(np.median(gaps))
        present = frame_count if complete else len(_kept(stream)) or frame_count
        expected = max(round(duration * fps), present)
    warning = ""
    if cut_at is not None or fragments:
        present = present or frame_count
        expected = max(expected, present)
        warning = damage_warning(
            expected=expected, decoded=present, cut_at=cut_at, fragments=fragments
        )
        require_share(name, present, expected, warning, limits)
        frame_count = present
        if cut_at is not None:
            duration = min(duration, cut_at) if duration else cut_at
    elif corrupt:  # the demuxer saw damage (a transport stream's broken continuity): PyAV reads it
        warning = f"the container marks {corrupt} {'packet' if corrupt == 1 else 'packets'} damaged"
        warning += "" if complete else f" in the first {VFR_SCAN_PACKETS}"
    rotation = rotation_of(first)
    width, height = (
        (stream.height, stream.width) if rotation in (90, 270) else (stream.width, stream.height)
    )
    if not fps and gaps.size:
        fps = 1.0 / float(np.median(gaps))
    if complete and duration and _variable(gaps):  # the container's rate is only a guess here
        fps = frame_count / duration
    if not duration and fps:
        duration = frame_count / fps
    return VideoInfo(
        path=name,
        container=container.format.name,
        codec=stream.codec_context.name,
        pix_fmt=stream.codec_context.pix_fmt or first.format.name,
        width=width,
        height=height,
        rotation=rotation,
        duration=duration,
        fps=fps,
        variable_fps=_variable(gaps),
        frame_count=frame_count,
        has_audio=bool(container.streams.audio),
        size_bytes=size,
        warning=warning,
        expected_frames=expected if cut_at is not None or fragments else frame_count,
        cut_at=cut_at,
        lost_fragments=fragments,
    ), scan


def _cut(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    size: int,
    stamps: np.ndarray,
    complete: bool,
    fps: float,
    deadline: Deadline,
) -> tuple[int, int, float | None]:
    """``(frames there, frames promised, seconds where the data ends)`` of a file cut short;
    ``(0, 0, None)`` when nothing shows it is cut.

    An MP4 lists every frame's byte range in its index, so frames past the end of the file are
    counted without reading them; a transport stream that ends inside a packet, or whose last
    frame is incomplete, was cut; any other file is cut when the header promises more frames than
    a complete scan found.
    """
    time_base = float(stream.time_base or Fraction(1))
    if "mp4" in container.format.name and (kept := _kept(stream)):
        gone = [e.timestamp for e in kept if e.pos + e.size > size]
        if gone:
            start = min(e.timestamp for e in kept)
            expected = max(stream.frames, len(kept))
            return len(kept) - len(gone), expected, (min(gone) - start) * time_base
        return 0, 0, None
    if container.format.name == "mpegts" and (
        all(size % n for n in TS_PACKET_SIZES) or _last_frame_cut(container, stream, deadline)
    ):
        end = container.duration / av.time_base if container.duration else 0.0
        return int(stamps.size) if complete else 0, int(stamps.size) if complete else 0, end
    if complete and stamps.size and stream.frames > stamps.size:
        step = 1.0 / fps if fps else 0.0
        return int(stamps.size), stream.frames, (stamps[-1] - stamps[0]) * time_base + step
    return 0, 0, None


def _kept(stream: av.video.stream.VideoStream) -> list:
    """The container index's entries for the frames shown (not those marked discard)."""
    return [e for e in stream.index_entries if not e.is_discard]


def _lost_fragments(checked: Path | BinaryIO, deadline: Deadline) -> int:
    if isinstance(checked, Path):
        with checked.open("rb") as f:
            return lost_fragments(f, deadline.check)
    here = checked.tell()
    try:
        return lost_fragments(checked, deadline.check)
    finally:
        checked.seek(here)


def _last_frame_cut(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    deadline: Deadline,
) -> bool:
    """Whether a transport stream ends inside its last frame, which then decodes damaged or not
    at all (a file cut on a packet boundary; a TS has no index that says it is whole). Its last
    group of pictures is decoded: from a seek near the end (further back until a keyframe is
    met), packets are demuxed, and those from the last keyframe on are decoded."""
    if not container.duration:
        return False
    start = container.start_time or 0  # a broadcast capture's clock may start hours in
    span = 1.0
    while True:
        at = start + max(container.duration - round(span * av.time_base), 0)
        container.seek(at, backward=True, any_frame=False)
        tail: list[av.Packet] = []  # from the last keyframe seen to the end
        for packet in demux(container, stream):
            deadline.check()
            if packet.is_keyframe:
                tail = []
            if tail or packet.is_keyframe:
                tail.append(packet)
        if tail or at == start:
            break
        span *= 4
    stream.codec_context.flush_buffers()
    failed = False
    last: av.VideoFrame | None = None
    for packet in tail:
        deadline.check()
        try:
            frames = stream.decode(packet)
        except av.error.ExitError:
            raise
        except (av.error.FFmpegError, EOFError):
            failed = failed or bool(packet.size)
            continue
        failed = failed and not packet.size  # the last packet with data did not decode
        for frame in frames:
            if last is None or (frame.pts or 0) >= (last.pts or 0):
                last = frame
    return failed or (last is not None and last.is_corrupt)


def _scan(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    name: str,
    deadline: Deadline,
) -> tuple[av.VideoFrame, Scan]:
    """Decode the first frame (it carries the rotation and proves the codec decodes) and demux up
    to ``VFR_SCAN_PACKETS`` timestamped packets (their timestamps tell the rate, their corrupt
    flags damage the demuxer saw)."""
    first: av.VideoFrame | None = None
    scan = Scan()
    stamped = 0  # packets with data and a timestamp
    kept = 0  # bytes of scan.data
    nal = nal_length_size(stream.codec_context.name, stream.codec_context.extradata)
    drained = False  # the decoder was fed an empty packet: it cannot go on decoding
    try:
        for packet in demux(container, stream):
            deadline.check()
            if first is None:
                frames = stream.decode(packet)
                first = frames[0] if frames else None
                drained = drained or not packet.size
                if first is not None and not drained:
                    scan.decoded = (len(scan.packets) + 1, frames)  # with this packet, kept below
            if packet.size:
                scan.packets.append(Packet.of(packet, nal))
                stamped += packet.pts is not None
                kept += packet.size
                if kept > SCAN_KEEP_BYTES:
                    scan.data = None
                elif scan.data is not None:
                    scan.data.append(packet)
            if first is not None and stamped >= VFR_SCAN_PACKETS:
                scan.complete, scan.data = False, None
                break
        if first is None:
            frames = stream.decode(None)
            first = frames[0] if frames else None
    except av.error.ExitError as exc:
        raise read_timeout(name, deadline.seconds) from exc
    except av.error.FFmpegError as exc:
        scan.complete, scan.stopped = False, True
        if first is None:
            raise CorruptVideo(
                name, f"the first frame does not decode: {ffmpeg_reason(exc)}"
            ) from exc
    if first is None:
        raise CorruptVideo(
            name, "no frame decodes: the stream is empty or cut before its first frame"
        )
    if scan.data is None:
        scan.decoded = None
    return first, scan


def ffmpeg_reason(exc: Exception) -> str:
    """FFmpeg's error in our words: its message, without the file, function or log line it names."""
    return (getattr(exc, "strerror", None) or type(exc).__name__).rstrip(".").lower()


def read_timeout(name: str, seconds: float) -> DecodeTimeout:
    """ffmpeg's I/O interrupt callback stopped a read that ran past the limit."""
    return DecodeTimeout(name, f"a read took longer than {seconds:g} s (io.decode_timeout_s)")


def _variable(gaps: np.ndarray) -> bool:
    if gaps.size < 2:
        return False
    median = float(np.median(gaps))
    return bool((gaps.max() - gaps.min()) > VFR_TOLERANCE * median)


def _fileobj_size(fobj: BinaryIO) -> int:
    here = fobj.tell()
    size = fobj.seek(0, 2)
    fobj.seek(here)
    return size


# First bytes of the containers ffmpeg reads: a file that starts like one but does not open is
# corrupt; anything else is simply not a video.
_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"moof"),
    (4, b"styp"),
    (4, b"free"),
    (4, b"wide"),
    (4, b"skip"),
    (0, b"\x1a\x45\xdf\xa3"),
    (0, b"RIFF"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (0, b"OggS"),
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),
    (0, b"YUV4MPEG2"),
)


def _open_error(checked: Path | BinaryIO, exc: Exception) -> VideoError:
    name = describe(checked)
    head = _head(checked, 16)
    if any(head[at : at + len(sig)] == sig for at, sig in _SIGNATURES):
        detail = ffmpeg_reason(exc)
        return CorruptVideo(
            name, f"looks like a video container but ffmpeg cannot open it ({detail})"
        )
    return NotAVideo(name, "not a video file ffmpeg recognises")
