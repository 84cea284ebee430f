"""Caption datasets: videos on disk plus one annotation file in a standard format.

Every loader returns ``list[VideoRecord]``; splits are normalised to ``train`` / ``val`` / ``test``
(MSR-VTT's ``validate`` becomes ``val``) and other names (``compositional``) pass through.

A record's ``start``/``end`` are the window *within the file on disk* that its captions describe
(None: the whole file); features and frames are sampled within it. Times that locate a clip in its
source YouTube video are not that: the standard datasets ship their clips already cut, so those
times are kept as ``extra["source_span"]`` (seconds in the source video) and the file is read whole.

Formats:

- MSR-VTT ``videodatainfo.json``: ``videos`` (``video_id``, ``split``, ``start time``,
  ``end time``) and ``sentences`` (``video_id``, ``caption``); our synthetic benchmark uses it too.
  ``start time``/``end time`` are in the source video; ``video<N>.mp4`` is already cut to them:
  ``source_span``, whole file.
- MSVD ``AllVideoDescriptions.txt``: ``<clip id> <caption>`` per line, ``#`` comments; the clip id
  is ``<youtube id>_<start>_<end>``. No split in the file: the standard 1200/100/670 split is
  applied in sorted clip-id order unless a split file says otherwise.
- MSVD TSV (``MSVD_{train,val,test}.tsv``): captions joined by ``", "``, a tab, the clip id; the
  split is in the file name. For both MSVD formats the file named by the clip id (YouTubeClips)
  is the cut clip: the id's span is ``source_span``, whole file.
- VATEX JSON: a list of ``{"videoID": "<ytid>_<start>_<end>", "enCap": [...]}``; the split is in the
  file name (``vatex_training``, ``vatex_validation``, ``vatex_public_test``). The file found is the
  one named by the id, i.e. the cut clip: the id's span is ``source_span``, whole file. To caption
  spans of uncut source videos, write a JSONL manifest with ``start``/``end``.
- JSON manifest (``captions.json``): ``{"videos": [{"video_id", "file"?, "captions", "split"?,
  "start"?, "end"?}]}``; ``start``/``end``: seconds within the file.
- JSONL manifest: one ``{"video": path, "captions": [...], "split"?, "start"?, "end"?, "id"?}``
  per line; ``start``/``end``: seconds within ``video``, so several lines may caption spans of one
  long file. A line with a window and no ``id`` gets ``<file stem>_<start>_<end>`` (its spans would
  otherwise share one id, and features are kept by id). In both manifests a clip listed twice
  under one id (same file, window and split) is one record with both lines' captions; one id for
  two different clips is a ``ConfigError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from video_mm.errors import ConfigError, NotFound

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif", ".m4v", ".mpg", ".mpeg")
SPLIT_ALIASES = {"validate": "val", "validation": "val", "valid": "val", "training": "train",
                 "public_test": "test", "testing": "test"}  # fmt: skip
MSVD_STANDARD_SPLIT = (1200, 100, 670)


@dataclass
class VideoRecord:
    """One video (or a time span of one) with its reference captions."""

    video_id: str
    path: Path | None  # None when the video file is not on disk (annotation-only datasets)
    captions: list[str]
    split: str = "train"
    # The window of ``path`` the captions describe, seconds within that file (None: from its
    # start / to its end). Not a clip's time in its source video: that is extra["source_span"].
    start: float | None = None
    end: float | None = None
    extra: dict = field(default_factory=dict)


def normalise_split(name: str) -> str:
    name = name.strip().lower()
    return SPLIT_ALIASES.get(name, name)


def find_video(root: Path, video_id: str) -> Path | None:
    """The file for ``video_id`` under ``root`` or ``root/videos``, any common suffix."""
    for folder in (root / "videos", root / "video", root):
        for suffix in VIDEO_SUFFIXES:
            candidate = folder / f"{video_id}{suffix}"
            if candidate.is_file():
                return candidate
        nested = folder / video_id / f"{video_id}.mp4"  # e.g. msrvtt/video8560/video8560.mp4
        if nested.is_file():
            return nested
    return None


def _window(item: dict, where: str) -> tuple[float | None, float | None]:
    """A manifest entry's ``start``/``end`` in seconds, checked: a window must be a span."""
    try:
        start, end = (None if item.get(k) is None else float(item[k]) for k in ("start", "end"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: 'start'/'end' must be seconds ({exc})") from exc
    if (start is not None and start < 0) or (end is not None and end <= (start or 0.0)):
        raise ConfigError(f"{where}: the window {start}-{end} s is not a span of the video")
    return start, end


def _window_id(stem: str, start: float | None, end: float | None) -> str:
    if start is None and end is None:
        return stem
    return f"{stem}_{start or 0:g}_{'end' if end is None else format(end, 'g')}"


def _one_record_per_id(records: list[VideoRecord], where: Path) -> list[VideoRecord]:
    """A manifest's entries by id: the same clip listed again (same file, window and split) adds
    its captions to the first entry; the same id for another file, window or split is refused,
    since features, predictions and metrics are all kept by id and would be silently shared."""
    first: dict[str, VideoRecord] = {}
    for r in records:
        seen = first.setdefault(r.video_id, r)
        if seen is r:
            continue
        if (seen.path, seen.start, seen.end, seen.split) != (r.path, r.start, r.end, r.split):
            raise ConfigError(
                f"{where}: id {r.video_id!r} names two different clips ({seen.path} "
                f"{seen.start}-{seen.end} s, {seen.split}; {r.path} {r.start}-{r.end} s, "
                f"{r.split}): give each its own id"
            )
        seen.captions.extend(c for c in r.captions if c not in seen.captions)
    return list(first.values())


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc})") from exc


def load_msrvtt(path: Path, video_root: Path | None = None) -> list[VideoRecord]:
    data = _read_json(path)
    if not isinstance(data, dict) or "videos" not in data or "sentences" not in data:
        raise ConfigError(f"{path}: not MSR-VTT format (needs 'videos' and 'sentences')")
    root = video_root or path.parent
    captions: dict[str, list[str]] = {}
    for s in data["sentences"]:
        captions.setdefault(str(s["video_id"]), []).append(str(s["caption"]).strip())
    records = []
    for v in data["videos"]:
        vid = str(v["video_id"])
        extra = {k: v[k] for k in ("synth", "category") if k in v}
        if "start time" in v and "end time" in v:
            extra["source_span"] = (float(v["start time"]), float(v["end time"]))
        records.append(VideoRecord(vid, find_video(root, vid), captions.get(vid, []),
                                   normalise_split(str(v.get("split", "train"))),
                                   extra=extra))  # fmt: skip
    return records


def _source_span(clip_id: str) -> dict:
    """``{"source_span": (start, end)}`` of a ``<youtube id>_<start>_<end>`` clip id, or nothing."""
    match = re.fullmatch(r".+_(\d+)_(\d+)", clip_id)
    return {"source_span": (float(match[1]), float(match[2]))} if match else {}


def _standard_msvd_split(ids: list[str]) -> dict[str, str]:
    train, val, _ = MSVD_STANDARD_SPLIT
    ordered = sorted(ids)
    return {vid: "train" if i < train else "val" if i < train + val else "test"
            for i, vid in enumerate(ordered)}  # fmt: skip


def load_msvd_descriptions(path: Path, video_root: Path | None = None) -> list[VideoRecord]:
    """``AllVideoDescriptions.txt``: every line ``<clip id> <caption>``."""
    captions: dict[str, list[str]] = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        clip_id, _, caption = line.partition(" ")
        if caption:
            captions.setdefault(clip_id, []).append(caption.strip())
    if not captions:
        raise ConfigError(f"{path}: no '<clip id> <caption>' lines")
    root = video_root or path.parent
    splits = _standard_msvd_split(list(captions))
    return [VideoRecord(vid, find_video(root, vid), caps, splits[vid], extra=_source_span(vid))
            for vid, caps in captions.items()]  # fmt: skip


def load_msvd_tsv(paths: Iterable[Path], video_root: Path | None = None) -> list[VideoRecord]:
    """``MSVD_<split>.tsv``: ``caption, caption, ...<TAB>clip id`` per line."""
    records = []
    for path in paths:
        split = normalise_split(path.stem.rsplit("_", 1)[-1])
        root = video_root or path.parent
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            text, sep, clip_id = line.rpartition("\t")
            if not sep:
                raise ConfigError(f"{path}:{n}: expected '<captions>\\t<clip id>'")
            caps = [c.strip() for c in text.split(", ") if c.strip()]
            clip_id = clip_id.strip()
            records.append(VideoRecord(clip_id, find_video(root, clip_id), caps, split,
                                       extra=_source_span(clip_id)))  # fmt: skip
    return records


def load_vatex(path: Path, video_root: Path | None = None) -> list[VideoRecord]:
    data = _read_json(path)
    if not isinstance(data, list) or (data and "videoID" not in data[0]):
        raise ConfigError(f"{path}: not VATEX format (a list of objects with 'videoID')")
    stem = path.stem.lower()
    split = "val" if "val" in stem else "test" if "test" in stem else "train"
    root = video_root or path.parent
    records = []
    for item in data:
        vid = str(item["videoID"])
        records.append(VideoRecord(vid, find_video(root, vid), list(item.get("enCap", [])),
                                   split, extra=_source_span(vid)))  # fmt: skip
    return records


def load_json_manifest(path: Path, video_root: Path | None = None) -> list[VideoRecord]:
    """``{"videos": [{"video_id", "file"?, "captions", "split"?, "start"?, "end"?}]}`` (msvd14
    captions.json); ``start``/``end`` are seconds within the file."""
    data = _read_json(path)
    if not isinstance(data, dict) or not all("captions" in v for v in data.get("videos", [])):
        raise ConfigError(f"{path}: not a caption manifest ('videos' with 'captions')")
    root = video_root or path.parent
    records = []
    for v in data["videos"]:
        vid = str(v["video_id"])
        file = root / v["file"] if v.get("file") else find_video(root, vid)
        split = normalise_split(str(v.get("split", v.get("msvd_split", "train"))))
        records.append(VideoRecord(vid, file, list(v["captions"]), split,
                                   *_window(v, f"{path}: {vid}")))  # fmt: skip
    return _one_record_per_id(records, path)


def load_jsonl(path: Path, video_root: Path | None = None) -> list[VideoRecord]:
    """One record a line; ``start``/``end`` are seconds within ``video`` (spans of one file)."""
    root = video_root or path.parent
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            video = Path(item["video"])
            caps = [str(c) for c in item.get("captions", [])]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{n}: expected {{'video': ..., 'captions': [...]}}") from exc
        video = video if video.is_absolute() else root / video
        start, end = _window(item, f"{path}:{n}")
        records.append(VideoRecord(str(item.get("id", _window_id(video.stem, start, end))), video,
                                   caps, normalise_split(str(item.get("split", "train"))),
                                   start, end))  # fmt: skip
    return _one_record_per_id(records, path)


def load_dataset(folder: Path | str, *, annotation: Path | str | None = None) -> list[VideoRecord]:
    """Find the annotation file in ``folder`` (or take ``annotation``) and load it."""
    folder = Path(folder)
    if annotation is not None:
        return load_annotation_file(Path(annotation), video_root=folder)
    if not folder.is_dir():
        if folder.is_file():
            return load_annotation_file(folder)
        raise NotFound(f"dataset folder not found: {folder}")
    tsv = sorted(folder.glob("MSVD_*.tsv"))
    if tsv:
        return load_msvd_tsv(tsv, folder)
    candidates = ["annotations.json", "videodatainfo.json", "train_val_videodatainfo.json",
                  "captions.json", "manifest.jsonl", "AllVideoDescriptions.txt"]  # fmt: skip
    for name in candidates:
        if (folder / name).is_file():
            records = load_annotation_file(folder / name)
            if (
                name == "train_val_videodatainfo.json"
                and (folder / "test_videodatainfo.json").is_file()
            ):
                records += load_annotation_file(folder / "test_videodatainfo.json")
            return records
    found = sorted([*folder.glob("*.jsonl"), *folder.glob("*vatex*.json")])
    if found:
        return [r for p in found for r in load_annotation_file(p)]
    raise NotFound(f"no annotation file in {folder} (looked for {', '.join(candidates)}, "
                   "MSVD_*.tsv, *.jsonl, *vatex*.json)")  # fmt: skip


def load_annotation_file(path: Path, video_root: Path | None = None) -> list[VideoRecord]:
    """Load one annotation file, telling the format from its name and content."""
    if not path.is_file():
        raise NotFound(f"annotation file not found: {path}")
    name = path.name.lower()
    if name.endswith(".jsonl"):
        return load_jsonl(path, video_root)
    if name.endswith(".tsv"):
        return load_msvd_tsv([path], video_root)
    if name.endswith(".txt"):
        return load_msvd_descriptions(path, video_root)
    data = _read_json(path)
    if isinstance(data, list):
        return load_vatex(path, video_root)
    if isinstance(data, dict) and "sentences" in data:
        return load_msrvtt(path, video_root)
    return load_json_manifest(path, video_root)


def by_split(records: Iterable[VideoRecord], split: str) -> list[VideoRecord]:
    """The records of ``split`` (its aliases too: ``validate`` is ``val``); ``"all"``: every one."""
    if split == "all":
        return list(records)
    split = normalise_split(split)
    return [r for r in records if r.split == split]


def describe_training_data(folder: Path | str, split: str) -> str:
    """What a model trained on ``folder``'s ``split`` says it was trained on; the synthetic
    benchmark (its annotations say so) is named as such, so the model's output is labelled."""
    folder = Path(folder)
    label = f"{folder.name} ({split})"
    annotations = folder / "annotations.json"
    try:
        info = json.loads(annotations.read_text()).get("info", {}) if annotations.is_file() else {}
    except (OSError, ValueError):
        info = {}
    if str(info.get("description", "")).startswith("video-mm synthetic"):
        return f"synthetic shapes benchmark: {label}"
    return label
