"""Browser copies: real AVI and GIF clips become H.264 MP4 that decodes to the same motion, capped
in height; what ffmpeg cannot read, or must not open, is a typed error."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from video_mm.errors import CorruptVideo, ForbiddenSource
from video_mm.io.probe import probe
from video_mm.io.transcode import browser_playable, to_browser_mp4
from video_mm.settings import IOSettings


@pytest.mark.parametrize("suffix", [".avi", ".gif"])
def test_real_clips_become_h264_mp4(msvd14_videos: list[Path], tmp_path: Path,
                                    suffix: str) -> None:
    src = next(p for p in msvd14_videos if p.suffix == suffix)
    out = to_browser_mp4(src, tmp_path / "copy.mp4", IOSettings(), max_height=240)
    before, after = probe(src), probe(out)
    assert browser_playable(after.container, after.codec)
    assert after.codec == "h264" and after.pix_fmt == "yuv420p"
    assert after.height == min(240, before.height - before.height % 2) and after.width % 2 == 0
    assert after.width / after.height == pytest.approx(before.width / before.height, rel=0.03)
    assert after.duration == pytest.approx(before.duration, abs=0.2)
    with av.open(str(out)) as c:  # the moov atom comes first: a browser starts before the end
        assert c.streams.video[0].frames > 0
    assert out.read_bytes()[4:8] == b"ftyp" and b"moov" in out.read_bytes()[:4096]


def test_playable_formats() -> None:
    assert browser_playable("mov,mp4,m4a,3gp,3g2,mj2", "h264")
    assert not browser_playable("avi", "mpeg4")
    assert not browser_playable("gif", "gif")
    assert not browser_playable("mov,mp4,m4a,3gp,3g2,mj2", "hevc")


def test_unreadable_and_forbidden_sources_are_typed_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"RIFF" + bytes(range(256)) * 64)
    with pytest.raises(CorruptVideo):
        to_browser_mp4(junk, tmp_path / "out.mp4", IOSettings())
    assert not (tmp_path / "out.mp4").exists()
    playlist = tmp_path / "list.bin"
    playlist.write_text("#EXTM3U\n#EXTINF:1,\nhttp://example.com/a.ts\n")
    with pytest.raises(ForbiddenSource):
        to_browser_mp4(playlist, tmp_path / "out.mp4", IOSettings())
