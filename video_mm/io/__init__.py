"""Video I/O: the only part of video-mm that touches video bytes (no torch here).

``probe`` reads metadata, ``open_video`` gives a frame reader (Decord, or PyAV where Decord is
wrong), ``sample_frames`` picks and decodes frames, ``segment`` cuts clips, ``thumbnail_jpeg``
renders a frame. Every input passes the guard first: local files and file objects only.
"""

from video_mm.io.decode import Reader, open_video
from video_mm.io.ffmpeg import ffmpeg_exe
from video_mm.io.guard import check_source
from video_mm.io.probe import probe
from video_mm.io.sampling import sample_frames
from video_mm.io.segment import segment
from video_mm.io.thumbnail import thumbnail_jpeg

__all__ = [
    "Reader",
    "check_source",
    "ffmpeg_exe",
    "open_video",
    "probe",
    "sample_frames",
    "segment",
    "thumbnail_jpeg",
]
