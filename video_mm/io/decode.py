"""One reader interface over Decord, with PyAV for what Decord cannot read correctly.

Decord (decord2) is fast at random access, but measured on real files it returns the wrong frames
after a seek in AVIs without timestamps, returns mis-shaped arrays at some frame sizes (96 px wide,
1x1, rotated and resized), and cannot open variable-frame-rate Matroska. So Decord is used only
when its own index checks out (finite, ordered timestamps; no rotation; frames of the expected
shape, checked on the first batch, not by decoding a frame on opening); everything else, and every
file object, goes through PyAV, which decodes forward from the nearest keyframe, not decoding the
frames nothing refers to unless they are wanted. PyAV reads a file on one open: the probe's,
indexed from where the probe's scan stopped, then decoded on (a file the scan read whole is
decoded from the packets it kept, not demuxed again); so ``auto`` also gives PyAV the files it
reads for less (:func:`_pyav_is_cheaper`: short files, B-frames). Both resize on decode
(short side = ``size``) and return RGB uint8 ``[T, H, W, 3]`` in display orientation.

Damaged files are read for what is there, as a player does. A file the probe finds cut goes to
PyAV, which indexes the frames that exist. When Decord fails on or mis-reads a file (on opening
or mid-file), the file is read through PyAV, and that choice is remembered for the file in this
process. Decord conceals damage without saying so (or repeats a cached frame for one that does
not decode), but its FFmpeg logs errors, which :mod:`video_mm.io.native_logs` counts: a batch
during which the count grows is decoded again by PyAV, and the file goes the same way. PyAV skips
a packet that does not decode, and the nearest decoded frame stands in for it; it counts frames
decoded with damage concealed; :attr:`Reader.warning` says what was lost, and below
``io.min_decoded_share`` the file fails.
"""

from __future__ import annotations

import logging
import sys
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import BinaryIO, Literal

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from video_mm.errors import CorruptVideo, UnsupportedCodec, VideoError
from video_mm.io.damage import damage_warning, nal_length_size, require_share
from video_mm.io.guard import Source, check_input, describe
from video_mm.io.native_logs import native_errors, route_decord_logs
from video_mm.io.probe import (
    Deadline,
    Packet,
    Scan,
    decode_threads,
    demux,
    ffmpeg_reason,
    open_container,
    probe,
    probed,
    read_timeout,
    video_stream,
)
from video_mm.records import VideoInfo
from video_mm.settings import IOSettings, get_settings

Backend = Literal["auto", "decord", "pyav"]
# Decord batches are this many frames, so the decode-time limit is checked between them.
DECORD_CHUNK = 16
# Files Decord fails on or mis-reads (path, size, mtime) are read with PyAV from then on; this many
# are kept.
PYAV_MEMORY = 4096

log = logging.getLogger(__name__)
_pyav_files: OrderedDict[tuple[str, int, int], str] = OrderedDict()


class Reader:
    """Frames of one video by index. Use as a context manager, or call :meth:`close`."""

    backend: str
    info: VideoInfo

    def __init__(self, info: VideoInfo, size: int | None, limits: IOSettings) -> None:
        self.info, self.size, self.limits = info, size, limits
        self.out_width, self.out_height = output_size(info.width, info.height, size, limits)
        self._expected = info.expected_frames or info.frame_count
        self._cut_at = info.cut_at
        self._lost: set[int] = set()  # frames whose data is there but did not decode
        self._broken: set[int] = set()  # frames whose data is broken, found without decoding
        self._concealed: set[int] = set()  # frames decoded with damage hidden by the decoder

    @property
    def warning(self) -> str:
        """What of a damaged file is lost, as far as it has been read; empty for a sound file."""
        lost = self.lost_frames()
        found = damage_warning(
            expected=max(self._expected, len(self)),
            decoded=len(self) - len(lost),
            cut_at=self._cut_at,
            fragments=self.info.lost_fragments,
            lost=len(lost),
            concealed=len(self._concealed - lost),
        )
        return found or self.info.warning  # the probe's, when reading met no damage yet

    def lost_frames(self) -> set[int]:
        """Indices of the frames that do not decode (a neighbour stands in): those read so far,
        and those whose data is known broken without decoding it."""
        return self._lost | self._broken

    def frame_times(self) -> np.ndarray:
        """Presentation time of every frame, seconds from the first frame, ``float64 [N]``."""
        raise NotImplementedError

    def keyframe_indices(self) -> np.ndarray:
        """Indices of the frames that decode without others (seek points), ``int64``."""
        raise NotImplementedError

    def get_frames(self, indices: np.ndarray | list[int]) -> np.ndarray:
        """RGB uint8 ``[T, H, W, 3]`` for ``indices`` (any order, repeats allowed)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(
                f"{self.info.path}: frame indices must lie in [0, {n}), "
                f"got {idx.min()}..{idx.max()}"
            )
        if not idx.size:
            return np.zeros((0, self.out_height, self.out_width, 3), np.uint8)
        unique, inverse = np.unique(idx, return_inverse=True)
        frames = self._decode(unique, Deadline(self.info.path, self.limits.decode_timeout_s))
        if lost := self.lost_frames():
            present = len(self)
            require_share(
                self.info.path, present - len(lost), max(self._expected, present), self.warning,
                self.limits,
            )
        if len(unique) == len(idx) and (unique == idx).all():
            return frames  # asked in order without repeats: no copy
        return frames[inverse]

    def iter_frames(self, chunk: int = 32) -> Iterator[tuple[int, np.ndarray]]:
        """Every frame in order as ``(index, RGB uint8 [H, W, 3])``, decoded ``chunk`` at a time."""
        for start in range(0, len(self), chunk):
            batch = self.get_frames(np.arange(start, min(start + chunk, len(self))))
            yield from enumerate(batch, start)

    def _decode(self, unique: np.ndarray, deadline: Deadline) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.frame_times())

    def close(self) -> None:
        pass

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_video(
    source: Source,
    *,
    size: int | None = None,
    limits: IOSettings | None = None,
    backend: Backend = "auto",
) -> Reader:
    """A :class:`Reader` for ``source`` (a local path or a seekable binary file object).

    ``backend="auto"`` takes ``io.backend`` from the settings: Decord where it reads the file
    correctly, else PyAV (also for a damaged file, and for one Decord failed on before).
    ``size`` resizes on decode so the short side is ``size`` pixels. With ``io.isolate_decode`` a
    path is decoded in a child process killed at ``io.decode_timeout_s`` (``io/isolate.py``).
    """
    limits = limits or get_settings().io
    if backend == "auto":
        backend = limits.backend
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    checked = check_input(source, limits)
    if limits.isolate_decode and isinstance(checked, Path):
        from video_mm.io.isolate import IsolatedReader

        return IsolatedReader(checked, size=size, limits=limits, backend=backend)
    if limits.isolate_probe and isinstance(checked, Path):  # probed in a child process
        info = probe(checked, limits)
        return _decord_reader(checked, info, size, limits, backend) or PyAVReader(
            checked, info, size, limits
        )
    # One open for the probe, the index and the decoding: the index carries on from the packets
    # the probe read, and PyAV decodes on the same container.
    with ExitStack() as stack:
        info, scan, container, stream = stack.enter_context(probed(checked, limits, threads=True))
        if not (backend == "auto" and _pyav_is_cheaper(scan)):
            reader = _decord_reader(checked, info, size, limits, backend)
            if reader is not None:
                return reader
        index = None  # a TS whose end the probe read: indexed on an open of its own
        if scan.complete or scan.stopped or not scan.moved:
            packets = _packets(container, stream, scan, describe(checked), limits)
            index = (packets, float(stream.time_base), stream.frames)
        opened = (stack.pop_all(), container, stream)
    # A transport stream is decoded from the file as before: its seeks land a keyframe or more
    # early, and on the way a sample meets (and reports) damage an exact seek would pass by.
    in_memory, decoded = (None, None) if scan.moved else (scan.data, scan.decoded)
    return PyAVReader(
        checked, info, size, limits, index=index, opened=opened, in_memory=in_memory,
        decoded=decoded,
    )


def _pyav_is_cheaper(scan: Scan) -> bool:
    """Whether PyAV reads the file for less than Decord, from what the probe's scan saw.

    A file the scan demuxed whole (up to ``VFR_SCAN_PACKETS`` frames: a GIF, a short clip) is
    indexed already and decoded on the probe's open; Decord would open and index it again. A file
    with reordered frames (B-frames) and timestamps on every packet: PyAV does not decode the
    frames nothing refers to, unless wanted; Decord decodes every frame up to each one wanted.
    """
    if scan.complete:
        return True
    stamps = [p.pts for p in scan.packets]
    if not stamps or None in stamps:
        return False
    return bool((np.diff(np.asarray(stamps, dtype=np.int64)) < 0).any())


def _decord_reader(
    checked: Path | BinaryIO, info: VideoInfo, size: int | None, limits: IOSettings, backend: str
) -> DecordReader | None:
    """A Decord reader where it is asked for or reads the file correctly; None: read with PyAV."""
    if backend == "pyav" or (backend == "auto" and not _decord_may_read(checked, info)):
        return None
    try:
        return DecordReader(checked, info, size, limits, fallback=backend == "auto")
    except _DecordUnusable as why:
        if backend == "decord":
            raise UnsupportedCodec(info.path, f"Decord cannot read it correctly: {why}") from None
        if isinstance(checked, Path) and why.of_file:
            remember_pyav(checked, str(why))
    return None


# A file's packets with data, its stream's time base, and the frames its header promises.
Index = tuple[list[Packet], float, int]


def _packets(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    scan: Scan | None,
    name: str,
    limits: IOSettings,
) -> list[Packet]:
    """Every packet with data, in file order: those the probe's scan read (``scan``), then the rest
    of the file from where the scan stopped (from the start without one). A read error ends it:
    a damaged tail is indexed for what is there."""
    packets = list(scan.packets) if scan is not None else []
    if scan is not None and (scan.complete or scan.stopped):
        return packets
    nal = nal_length_size(stream.codec_context.name, stream.codec_context.extradata)
    deadline = Deadline(name, limits.decode_timeout_s)
    try:
        for packet in demux(container, stream):
            deadline.check()
            if packet.size:
                packets.append(Packet.of(packet, nal))
    except av.error.ExitError as exc:
        raise read_timeout(name, limits.decode_timeout_s) from exc
    except av.error.FFmpegError as exc:
        log.debug("%s: demuxing stopped early: %s", name, exc)
    return packets


def _decord_may_read(checked: Path | BinaryIO, info: VideoInfo) -> bool:
    """Decord reads sound local files it has not failed on; it would promise the frames a cut file
    lacks."""
    return isinstance(checked, Path) and not info.warning and _file_key(checked) not in _pyav_files


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def remember_pyav(path: Path, why: str) -> None:
    """Read ``path`` with PyAV from now on in this process (until it changes on disk)."""
    key = _file_key(path)
    _pyav_files[key] = why
    _pyav_files.move_to_end(key)
    while len(_pyav_files) > PYAV_MEMORY:
        _pyav_files.popitem(last=False)
    log.info("%s: read with PyAV from now on (%s)", path, why)


def output_size(width: int, height: int, size: int | None, limits: IOSettings) -> tuple[int, int]:
    """Display size after resizing the short side to ``size`` (keeping the aspect ratio).

    The long side never exceeds the frame-size limit, so a 4097x8 strip is not blown up to
    114716x224; such extreme shapes end with a short side below ``size``.
    """
    if size is None:
        return width, height
    scale = min(
        size / min(width, height), max(limits.max_width, limits.max_height) / max(width, height)
    )
    return max(1, round(width * scale)), max(1, round(height * scale))


def _coded(width: int, height: int, rotation: int) -> tuple[int, int]:
    return (height, width) if rotation in (90, 270) else (width, height)


def _import_decord() -> ModuleType:
    """Import Decord without its preload of every pip-installed NVIDIA library.

    decord2 dlopens all of ``site-packages/nvidia/*/lib/*.so*`` with RTLD_GLOBAL on import; among
    them is libnvblas, which then takes over BLAS for the whole process and makes the first CPU
    matmul in torch crash when no GPU is present. We decode on the CPU and never use Decord's CUDA
    context, so hide the ``nvidia`` namespace for the duration of the import (a ``None`` entry in
    ``sys.modules`` makes ``find_spec`` answer "not installed").
    """
    if "decord" in sys.modules:
        return sys.modules["decord"]
    hidden = "nvidia" not in sys.modules
    if hidden:
        sys.modules["nvidia"] = None  # type: ignore[assignment]
    try:
        import decord
    finally:
        if hidden:
            del sys.modules["nvidia"]
    route_decord_logs(decord)
    return decord


class _DecordUnusable(Exception):
    """Decord is not to read this source: it would return wrong frames or times, it failed on it,
    or it cannot be used at all (not installed, a file object)."""

    def __init__(self, why: str, *, of_file: bool = True) -> None:
        super().__init__(why)
        self.of_file = of_file  # about the file's content: read it with PyAV from now on


class DecordReader(Reader):
    """Decord's random access; with ``fallback``, a failure mid-file switches the reader to PyAV
    for the rest of its life, and the file is remembered."""

    backend = "decord"

    def __init__(
        self,
        checked: Path | BinaryIO,
        info: VideoInfo,
        size: int | None,
        limits: IOSettings,
        *,
        fallback: bool = False,
    ) -> None:
        super().__init__(info, size, limits)
        if not isinstance(checked, Path):
            raise _DecordUnusable("file objects are read with PyAV", of_file=False)
        if info.rotation:
            raise _DecordUnusable(
                f"rotated video ({info.rotation} degrees): Decord mis-shapes rotated frames"
            )
        self._checked, self._fallback_allowed = checked, fallback
        self._pyav: PyAVReader | None = None
        self._reported: tuple[int, int] | None = None  # frames in which Decord's decoder logged
        # errors, when PyAV may not take over (backend "decord")
        try:
            decord = _import_decord()
        except ImportError:  # an optional decoder: a machine without it reads through PyAV
            raise _DecordUnusable("Decord is not installed", of_file=False) from None
        kwargs = {"width": self.out_width, "height": self.out_height} if size is not None else {}
        seen = native_errors()
        try:
            self._vr = decord.VideoReader(str(checked), ctx=decord.cpu(0), **kwargs)
            stamps = self._vr.get_frame_timestamp(range(len(self._vr)))[:, 0].astype(np.float64)
        except (RuntimeError, decord.DECORDError) as exc:
            log.debug("Decord cannot open %s: %s", checked, exc)
            raise _DecordUnusable("it fails to open it") from None
        if native_errors() > seen:
            raise _DecordUnusable("its decoder reports damage")
        if (
            not len(stamps)
            or not np.isfinite(stamps).all()
            or stamps.min() < -1e-6
            or (np.diff(stamps) < -1e-6).any()
        ):
            raise _DecordUnusable(
                "its frames carry no usable timestamps, so its seeks land on wrong frames"
            )
        self._times = np.round(stamps - stamps[0], 6)  # Decord keeps float32 seconds

    def frame_times(self) -> np.ndarray:
        return self._times

    def keyframe_indices(self) -> np.ndarray:
        if self._pyav is not None:
            return np.unique(self._to_pyav(self._pyav.keyframe_indices(), back=True))
        return np.asarray(self._vr.get_key_indices(), dtype=np.int64)

    @property
    def warning(self) -> str:
        if self._pyav is not None:
            return self._pyav.warning
        if self._reported:
            return "Decord's decoder reported damage in frames {} to {}".format(*self._reported)
        return ""

    def lost_frames(self) -> set[int]:
        if self._pyav is None:
            return set()
        return set(self._to_pyav(np.asarray(sorted(self._pyav.lost_frames())), back=True).tolist())

    def _decode(self, unique: np.ndarray, deadline: Deadline) -> np.ndarray:
        if self._pyav is not None:
            return self._pyav._decode(self._to_pyav(unique), deadline)
        decord = _import_decord()
        chunks = []
        shape = (self.out_height, self.out_width, 3)
        for start in range(0, len(unique), DECORD_CHUNK):
            deadline.check()
            batch = unique[start : start + DECORD_CHUNK]
            seen = native_errors()
            try:
                frames = self._vr.get_batch(batch.tolist()).asnumpy()
            except (RuntimeError, decord.DECORDError) as exc:
                log.debug("Decord failed on %s: %s", self.info.path, exc)
                if not self._fallback_allowed:
                    raise CorruptVideo(
                        self.info.path,
                        f"Decord failed to decode frames {batch[0]} to {batch[-1]}: the data is "
                        "damaged or in a form Decord cannot read",
                    ) from None
                why = "Decord failed to decode it"
            else:
                # Its decoder logged errors: it concealed damage, or a cached frame stood in for
                # one that did not decode; Decord does not say which frames.
                damaged = native_errors() > seen
                if frames.shape[1:] != shape:  # checked here, not by decoding a frame on opening
                    why = f"Decord returns frames of shape {frames.shape[1:]}, expected {shape}"
                    if not self._fallback_allowed:
                        raise UnsupportedCodec(self.info.path, f"{why}: read it with PyAV")
                elif damaged and self._fallback_allowed:
                    why = "Decord's decoder reported damage"  # PyAV decodes the batch again
                else:
                    if damaged:
                        first = self._reported[0] if self._reported else int(batch[0])
                        self._reported = (first, int(batch[-1]))
                    chunks.append(frames)
                    continue
            self._switch_to_pyav(why)
            chunks.append(self._pyav._decode(self._to_pyav(unique[start:]), deadline))
            break
        return np.concatenate(chunks)

    def _switch_to_pyav(self, why: str) -> None:
        """Read the rest through PyAV: frames map by time (Decord's index may differ in count)."""
        remember_pyav(self._checked, why)
        self._pyav = PyAVReader(self._checked, self.info, self.size, self.limits)
        self._vr = None
        self.backend = "pyav"

    def _to_pyav(self, indices: np.ndarray, *, back: bool = False) -> np.ndarray:
        assert self._pyav is not None
        src, dst = (self._pyav.frame_times(), self._times) if back else (
            self._times, self._pyav.frame_times()
        )
        at = np.searchsorted(dst, src[np.asarray(indices, dtype=np.int64)] - 1e-6)
        return np.clip(at, 0, len(dst) - 1).astype(np.int64)

    def close(self) -> None:
        self._vr = None
        if self._pyav is not None:
            self._pyav.close()


class PyAVReader(Reader):
    """Seeks to the keyframe at or before each wanted frame and decodes forward to it.

    A packet that does not decode is skipped and its frame counted lost; a wanted frame that never
    comes out is stood in for by the frame decoded just before it (or, at the start, just after).
    Decoding forward, frames that no other frame refers to (most B-frames) and that are not wanted
    are not decoded at all (FFmpeg's ``skip_frame``), set packet by packet; a frame skipped so that
    a later call wants is decoded again from its keyframe.
    """

    backend = "pyav"

    def __init__(
        self,
        checked: Path | BinaryIO,
        info: VideoInfo,
        size: int | None,
        limits: IOSettings,
        *,
        index: Index | None = None,
        opened: tuple[ExitStack, av.container.InputContainer, av.video.stream.VideoStream]
        | None = None,
        in_memory: list[av.Packet] | None = None,
        decoded: tuple[int, list[av.VideoFrame]] | None = None,
    ) -> None:
        """``index``: the file's packets as :func:`open_video` demuxed them (None: demux here);
        ``opened``: the container they came from, to decode on (the reader closes it);
        ``in_memory``: with ``opened``, every one of those packets, data included (the probe's
        scan read the file whole): decoded from memory, so the file is not demuxed again and a
        seek is exact; ``decoded``: with ``in_memory``, how many of its packets the decoder was
        fed for the first frame and the frames that came out (:attr:`Scan.decoded`): decoding
        goes on from there, so the probe's first frame is not decoded again."""
        super().__init__(info, size, limits)
        self._checked = checked
        self._name = describe(checked)
        self._gif = info.container == "gif"
        self._coded_w, self._coded_h = _coded(self.out_width, self.out_height, info.rotation)
        self._turns = -info.rotation // 90  # np.rot90 turns counter-clockwise
        self._stack: ExitStack | None = None  # the decoding container (else opened on a seek)
        self._frames: Iterator[av.VideoFrame] | None = None  # None before the first frame
        self._pos = -1  # index of the last frame decoded
        self._held: av.VideoFrame | None = None  # that frame, to stand in for a lost one
        self._fresh = self._check_start = False  # see _open and _seek
        self._wanted: set[int] = set()  # timestamps of the frames the current call decodes
        self._skipped: set[int] = set()  # timestamps fed to the decoder as skippable, this run
        self._scaler = VideoReformatter()
        self._memory: list[av.Packet] | None = None
        self._start = 0  # in memory: the place of the packet decoding starts from
        self._at: dict[int, int] = {}  # in memory: timestamp -> place in self._memory
        self._pending: list[av.VideoFrame] = []  # decoded before self._start: come out first
        if opened is not None:  # at the end of the file, where indexing left it
            self._stack, self._container, self._stream = opened
            if in_memory:
                self._memory = in_memory
                self._at = {
                    p.pts if p.pts is not None else p.dts: i for i, p in enumerate(in_memory)
                }
                if decoded is not None:  # the decoder goes on from the probe's first frame
                    self._start, self._pending = decoded
                    self._frames = self._decoded()
        try:
            self._index(index)
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        self._drop_frames()
        if self._memory is not None:  # back to the first packet, with the decoder reset
            self._stream.codec_context.flush_buffers()
            self._pos, self._start = -1, 0
            self._fresh, self._check_start = True, False
            return
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        stack = ExitStack()
        self._container, _ = stack.enter_context(open_container(self._checked, self.limits))
        self._stack = stack
        self._stream = video_stream(self._container, self._checked, [])
        decode_threads(self._stream, self.limits)
        self._pos = -1
        self._fresh = True  # nothing read since opening: positioned at the very start
        self._check_start = False

    def _index(self, index: Index | None) -> None:
        """Timestamps and keyframe flags of every frame, from demuxing (no decoding)."""
        if index is None:
            with open_container(self._checked, self.limits) as (container, logs):
                stream = video_stream(container, self._checked, logs)
                packets = _packets(container, stream, None, self._name, self.limits)
                index = (packets, float(stream.time_base), stream.frames)
        packets, time_base, promised = index
        if packets and packets[-1].corrupt and self._cut_at is not None:
            packets = packets[:-1]  # the last one is cut off when the file is
        if not packets:
            raise CorruptVideo(self._name, "no video packets: the stream is empty")
        stamps = [p.pts if p.pts is not None else p.dts for p in packets]
        missing = None in stamps
        if missing:
            stamps = [i if stamp is None else stamp for i, stamp in enumerate(stamps)]
        order = np.argsort(np.asarray(stamps), kind="stable")
        pts = np.asarray(stamps, dtype=np.int64)[order]
        # A list: looked up once a decoded frame (bisect), faster there than numpy on a scalar.
        self._pts: list[int] = pts.tolist()
        if missing:  # no timestamps: frames are numbered in decode order, paced by the frame rate
            self._times = np.arange(len(stamps)) / (self.info.fps or 25.0)
        else:
            self._times = (pts - pts[0]) * time_base
        keys = np.asarray([p.key for p in packets])
        broken = np.asarray([p.broken for p in packets])
        self._keys = np.flatnonzero(keys[order]).astype(np.int64)
        self._broken = set(np.flatnonzero(broken[order]).tolist())
        self._seekable = not missing and len(self._keys) > 0
        # Skipping frames leaves gaps that only timestamps tell from losses.
        self._skippable = self._seekable and all(p.pts is not None for p in packets)
        if not len(self._keys) or self._keys[0] != 0:
            self._keys = np.union1d([0], self._keys)
        if promised > len(stamps) and self._cut_at is None:  # cut, and the probe did not see it
            step = 1.0 / self.info.fps if self.info.fps else 0.0
            self._cut_at = float(self._times[-1]) + step
        self._expected = max(self._expected, promised, len(stamps))

    def frame_times(self) -> np.ndarray:
        return self._times

    def keyframe_indices(self) -> np.ndarray:
        return self._keys

    def _decode(self, unique: np.ndarray, deadline: Deadline) -> np.ndarray:
        out = np.empty((len(unique), self.out_height, self.out_width, 3), np.uint8)
        self._wanted = {self._pts[i] for i in unique.tolist()}
        try:
            for i, target in enumerate(unique.tolist()):
                out[i] = self._frame(target, deadline)
        except av.error.ExitError as exc:  # ffmpeg's I/O interrupt callback: the read timed out
            self._open()
            raise read_timeout(self._name, self.limits.decode_timeout_s) from exc
        except av.error.FFmpegError as exc:
            self._open()
            raise CorruptVideo(
                self._name, f"decoding failed: {ffmpeg_reason(exc)}"
            ) from exc
        except VideoError:
            self._open()
            raise
        return out

    def _frame(self, target: int, deadline: Deadline) -> np.ndarray:
        key = int(self._keys[np.searchsorted(self._keys, target, side="right") - 1])
        if (
            target <= self._pos
            or (self._seekable and key > self._pos + 1)
            or self._frames is None
            or self._pts[target] in self._skipped  # fed as skippable for an earlier call
        ):
            self._seek(key if self._seekable else 0)
        return self._decode_forward(target, deadline)

    def _decode_forward(self, target: int, deadline: Deadline) -> np.ndarray:
        start = self._pos
        assert self._frames is not None
        for frame in self._frames:
            deadline.check()
            index = self._index_of(frame)
            if self._check_start and self._unskipped(0, index):  # a seek to the start landed late
                self._restart()
                return self._decode_forward(target, deadline)
            self._check_start = False
            if index > target and self._held is None and start >= 0:
                self._restart()  # a seek overshot (an inexact index, or a lost keyframe): from 0
                return self._decode_forward(target, deadline)
            if index > self._pos + 1 and (self._held is not None or self._pos < 0):
                self._lost.update(self._unskipped(self._pos + 1, index))  # they never came out
            if frame.is_corrupt:
                self._concealed.add(index)
            if index > target:  # the wanted frame did not decode: a neighbour stands in
                stand_in = self._held if self._held is not None else frame
                self._pos, self._held = index, frame
                return self._rgb(stand_in)
            self._pos, self._held = index, frame
            if index == target:
                return self._rgb(frame)
        if self._held is None and (start >= 0 or self._check_start):
            self._restart()  # a seek landed past every frame (transport streams, near the end)
            return self._decode_forward(target, deadline)
        if self._held is None:
            raise CorruptVideo(
                self._name,
                f"no frame up to frame {target} of {len(self._pts)} decodes: the data is damaged",
            )
        self._lost.update(range(self._pos + 1, len(self._pts)))  # the stream ends early
        self._pos = len(self._pts) - 1
        return self._rgb(self._held)

    def _seek(self, key: int) -> None:
        """Position the decoder just before frame ``key`` (0, or a keyframe).

        A seek to the start is checked: unless the first frame out is frame 0, the file is opened
        again (:meth:`_restart`), so lost frames at the start are counted as on a fresh open."""
        reopen = key == 0 and self._gif and not self._fresh  # faster than a GIF seeks back
        if not self._seekable or self._stack is None or reopen or self._memory is not None:
            self._open()
        if not self._seekable:
            key = 0
        elif self._memory is not None:  # exact: decoding starts at the keyframe's packet
            self._start = self._at[self._pts[key]] if key else 0
        elif key or not self._fresh:
            try:
                self._container.seek(
                    self._pts[key], stream=self._stream, backward=True, any_frame=False
                )
            except av.error.FFmpegError:
                self._open()
                key = 0
            else:
                self._fresh, self._check_start = False, key == 0
        self._pos = key - 1
        self._drop_frames()
        self._frames = self._decoded()

    def _restart(self) -> None:
        """Decode from the start of a fresh open: exact where seeking is not."""
        self._open()
        self._frames = self._decoded()

    def _unskipped(self, start: int, end: int) -> list[int]:
        """Frames in ``[start, end)`` that were not fed to the decoder as skippable."""
        return [i for i in range(start, end) if self._pts[i] not in self._skipped]

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Frames from the current position, as a player shows them: a packet that does not decode
        is skipped, and a read error ends the stream (what decoded before it is kept). A packet of
        a frame not wanted is decoded only if other frames refer to it."""
        stream = self._stream
        context = stream.codec_context
        flushed = False
        self._fresh = False
        skipping: bool | None = None  # as the codec context was left: set on the first packet
        pending, self._pending = self._pending, []
        yield from pending
        if self._memory is not None:
            packets: Iterator[av.Packet] = iter(self._memory[self._start :])
        else:
            packets = demux(self._container, stream)
        try:
            for packet in packets:
                flushed = not packet.size
                if self._skippable and packet.size:
                    skip = packet.pts not in self._wanted
                    if skip != skipping:
                        context.skip_frame = "NONREF" if skip else "DEFAULT"
                        skipping = skip
                    if skip:
                        self._skipped.add(packet.pts)
                try:
                    frames = stream.decode(packet)
                except av.error.ExitError:
                    raise
                except av.error.FFmpegError as exc:
                    log.debug("%s: a packet does not decode: %s", self._name, exc)
                    continue
                yield from frames
        except av.error.ExitError:
            raise
        except av.error.FFmpegError as exc:
            log.debug("%s: reading stopped early: %s", self._name, exc)
        if not flushed:
            try:
                yield from stream.decode(None)
            except (av.error.FFmpegError, EOFError) as exc:
                log.debug("%s: flushing the decoder failed: %s", self._name, exc)

    def _index_of(self, frame: av.VideoFrame) -> int:
        pts = frame.pts
        if pts is None or not self._seekable:
            return self._pos + 1
        return max(bisect_right(self._pts, pts) - 1, 0)

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        # One scaler for the reader, on this thread: a frame's own would set up swscale (and start
        # its threads) for every frame, which costs more than converting it.
        rgb = self._scaler.reformat(
            frame, width=self._coded_w, height=self._coded_h, format="rgb24", threads=1
        ).to_ndarray()
        return np.rot90(rgb, self._turns) if self._turns % 4 else rgb

    def _drop_frames(self) -> None:
        """Close the live decode generator now: left to the garbage collector (it refers to the
        reader, a cycle), its codec context would be freed at interpreter exit, where freeing
        FFmpeg's frame threads can deadlock."""
        if getattr(self, "_frames", None) is not None:
            self._frames.close()
        self._frames, self._held = None, None
        self._pending = []
        self._skipped = set()  # a new run of the decoder follows

    def close(self) -> None:
        self._drop_frames()
        if self._stack is not None:
            self._stack.close()
            self._stack = None

