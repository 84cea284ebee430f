"""What of a damaged video was lost, said in one sentence, and whether enough is left to use it.

A file cut by a failed copy, or with bytes flipped by a flaky upload, still holds frames a player
shows; they are read, and the loss is reported as a warning ("decoded 49 of 100 frames: the file
is cut at 2.0 s") instead of failing the whole file. Only when less than ``io.min_decoded_share``
of its frames is left does the file fail, with a :class:`CorruptVideo` that says the same.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import BinaryIO

from video_mm.errors import CorruptVideo
from video_mm.settings import IOSettings

# Transport-stream packet sizes (plain, with a 4-byte timecode, with Reed-Solomon parity): a file
# that ends inside a packet was cut.
TS_PACKET_SIZES = (188, 192, 204)


def damage_warning(
    *,
    expected: int,
    decoded: int,
    cut_at: float | None = None,
    fragments: int = 0,
    lost: int = 0,
    concealed: int = 0,
) -> str:
    """The warning for a file: empty when nothing was lost.

    ``expected`` frames the header promises (or that were found), ``decoded`` of them decode,
    ``cut_at`` seconds is where the data ends early, ``fragments`` of a fragmented MP4 are gone,
    ``lost`` frames have data that does not decode, ``concealed`` decoded with errors the decoder
    hid.
    """
    why = []
    if cut_at is not None:
        why.append(f"the file is cut at {cut_at:.1f} s")
    if fragments:
        why.append(
            "1 fragment of the file is lost" if fragments == 1
            else f"{fragments} fragments of the file are lost"
        )  # fmt: skip
    if lost:
        why.append(f"{lost} damaged {_frames(lost)} did not decode")
    if concealed:
        why.append(f"{concealed} {_frames(concealed)} decoded with damage concealed")
    if not why:
        return ""
    head = f"decoded {decoded} of {expected}" if expected > decoded else f"decoded {decoded}"
    return f"{head} frames: {'; '.join(why)}"


def require_share(name: str, decoded: int, expected: int, warning: str, limits: IOSettings) -> None:
    """Fail the file when under ``io.min_decoded_share`` of its ``expected`` frames are left."""
    if expected > 0 and decoded < limits.min_decoded_share * expected:
        raise CorruptVideo(
            name,
            f"{warning or f'decoded {decoded} of {expected} frames'}, under the "
            f"{limits.min_decoded_share:.0%} needed to use it (io.min_decoded_share)",
        )


def _frames(n: int) -> str:
    return "frame" if n == 1 else "frames"


def nal_length_size(codec: str, extradata: bytes | None) -> int:
    """Bytes of the length before each NAL unit in an H.264/HEVC packet stored as in MP4
    (``avcC``/``hvcC`` extradata); 0 for start-code streams (transport streams) and other codecs."""
    if not extradata or extradata[0] != 1:
        return 0
    if codec == "h264" and len(extradata) > 4:
        return (extradata[4] & 3) + 1
    if codec == "hevc" and len(extradata) > 21:
        return (extradata[21] & 3) + 1
    return 0


def nal_lengths_fit(data: memoryview, length_size: int) -> bool:
    """Whether a packet's NAL units, each led by its length, fill the packet exactly: a broken
    length makes FFmpeg drop the packet ("Invalid NAL unit size"), so its frame does not decode.
    Read without decoding, so it is known for every packet the index demuxes."""
    at, end = 0, len(data)
    while at + length_size <= end:
        at += length_size + int.from_bytes(data[at : at + length_size], "big")
    return at == end


def lost_fragments(source: BinaryIO, check: Callable[[], None] = lambda: None) -> int:
    """How many fragments of a fragmented MP4 are gone: gaps in the sequence numbers of its
    ``moof`` boxes (``mfhd``, which counts up by one). Only box headers are read; ``check`` is
    called every 1000 boxes (a time limit: a hostile file may hold millions of tiny boxes)."""
    source.seek(0)
    at, last, lost, boxes = 0, None, 0, 0
    while header := source.read(16):
        boxes += 1
        if not boxes % 1000:
            check()
        if len(header) < 8:
            break
        size, kind = struct.unpack(">I4s", header[:8])
        if size == 1 and len(header) == 16:
            (size,) = struct.unpack(">Q", header[8:16])
        if kind == b"moof":
            source.seek(at + 8)
            mfhd = source.read(16)
            if len(mfhd) == 16 and mfhd[4:8] == b"mfhd":
                (number,) = struct.unpack(">I", mfhd[12:16])
                if last is not None and number > last + 1:
                    lost += number - last - 1
                last = number
        if size < 8:  # 0: the box runs to the end of the file
            break
        at += size
        source.seek(at)
    return lost
