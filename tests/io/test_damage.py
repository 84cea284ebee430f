"""The damage helpers: the warning's sentence, NAL lengths that do not fill a packet, and lost
fragments counted from box headers alone."""

from __future__ import annotations

import io
import struct

from video_mm.io.damage import damage_warning, lost_fragments, nal_length_size, nal_lengths_fit


def test_the_warning_names_every_loss() -> None:
    assert damage_warning(expected=100, decoded=100) == ""
    assert damage_warning(expected=100, decoded=49, cut_at=1.96) == (
        "decoded 49 of 100 frames: the file is cut at 2.0 s"
    )
    assert damage_warning(expected=100, decoded=72, fragments=1, lost=3, concealed=2) == (
        "decoded 72 of 100 frames: 1 fragment of the file is lost; 3 damaged frames did not "
        "decode; 2 frames decoded with damage concealed"
    )


def nals(*units: bytes, size: int = 4) -> memoryview:
    return memoryview(b"".join(len(u).to_bytes(size, "big") + u for u in units))


def test_nal_lengths_fill_the_packet_or_it_is_broken() -> None:
    assert nal_lengths_fit(nals(b"\x65" * 30, b"\x06" * 5), 4)
    assert nal_lengths_fit(nals(b"\x41" * 9, size=2), 2)
    broken = bytearray(nals(b"\x65" * 30))
    broken[:4] = struct.pack(">I", 0x7FFF0000)
    assert not nal_lengths_fit(memoryview(bytes(broken)), 4)
    assert not nal_lengths_fit(nals(b"\x65" * 30)[:-3], 4)  # the last unit cut short


def test_nal_length_size_comes_from_mp4_extradata_only() -> None:
    assert nal_length_size("h264", bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1])) == 4
    assert nal_length_size("hevc", bytes([1] + [0] * 20 + [0x0F])) == 4
    assert nal_length_size("h264", b"\x00\x00\x00\x01\x67") == 0  # start codes (Annex B)
    assert nal_length_size("mpeg2video", bytes([1, 2, 3, 4, 5])) == 0
    assert nal_length_size("h264", None) == 0


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def moof(number: int) -> bytes:
    return box(b"moof", box(b"mfhd", struct.pack(">II", 0, number)) + box(b"traf", b""))


def test_lost_fragments_are_gaps_in_the_moof_sequence() -> None:
    head = box(b"ftyp", b"isom\0\0\0\0") + box(b"moov", b"\0" * 20)
    frags = {n: moof(n) + box(b"mdat", b"\0" * 50) for n in range(1, 6)}
    whole = head + b"".join(frags.values())
    assert lost_fragments(io.BytesIO(whole)) == 0
    assert lost_fragments(io.BytesIO(head + frags[1] + frags[3] + frags[4])) == 1
    assert lost_fragments(io.BytesIO(head + frags[1] + frags[5])) == 3
    assert lost_fragments(io.BytesIO(head + box(b"mdat", b"\0" * 100))) == 0  # not fragmented
    assert lost_fragments(io.BytesIO(whole[:-30])) == 0  # cut: that is said elsewhere


def test_the_box_walk_keeps_to_the_time_limit() -> None:
    calls = []
    many = box(b"ftyp", b"isom") + box(b"free", b"") * 2500
    assert lost_fragments(io.BytesIO(many), lambda: calls.append(1)) == 0
    assert len(calls) == 2  # every 1000 boxes: a DecodeTimeout would stop it there
