"""What of a damaged video was lost, said in one sentence, and whether enough is left to use it.

A file cut by a failed copy, or with bytes flipped by a flaky upload, still holds frames a player
shows; they are read, and the loss is reported as a warning ("decoded 49 of 100 frames: the file
is cut at 2.0 s") instead of failing the whole file. Only when less than ``io.min_decoded_share``
of its frames is left does the file fail, with a :class:`CorruptVideo` that says the same.
"""

from __future__ import annotations

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
    lost: int = 0,
    concealed: int = 0,
) -> str:
    """The warning for a file: empty when nothing was lost.

    ``expected`` frames the header promises (or that were found), ``decoded`` of them decode,
    ``cut_at`` seconds is where the data ends early, ``lost`` frames have data that does not
    decode, ``concealed`` decoded with errors the decoder hid.
    """
    why = []
    if cut_at is not None:
        why.append(f"the file is cut at {cut_at:.1f} s")
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
