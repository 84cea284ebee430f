"""The guard finds DASH, HLS and ffconcat manifests anywhere in a file's first kilobytes (after an
XML prolog, a BOM, comments, junk), whatever the file is called; real media passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from video_mm.errors import ForbiddenSource
from video_mm.io.guard import check_source
from video_mm.settings import IOSettings

MANIFESTS = {
    "dash-prolog.mp4": b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- made by a packager -->\n'
                       b'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">'
                       b'<Period><BaseURL>http://example.com/</BaseURL></Period></MPD>\n',
    "dash-namespaced.avi": b"\xef\xbb\xbf<?xml version='1.0'?><dash:MPD xmlns:dash='x'/>",
    "hls-after-junk.mkv": b"\x00" * 900 + b"\n#EXTM3U\n#EXTINF:2,\nhttp://example.com/a.ts\n",
    "hls-lowercase.mp4": b"\n\n#extm3u\n#ext-x-version:3\n",
    "ffconcat-comments.mp4": b"# a list of files\n# made by hand\nffconcat version 1.0\n"
                             b"file '/etc/passwd'\n",
}


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifests_are_refused_anywhere_in_the_head(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(MANIFESTS[name])
    with pytest.raises(ForbiddenSource, match="playlists"):
        check_source(path, IOSettings())


def test_real_media_passes(msvd14_videos: list[Path]) -> None:
    for video in msvd14_videos:
        assert check_source(video, IOSettings()) == video
