"""Each loader reads its format; the MSR-VTT and MSVD ones read the real files in ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from video_mm.data.datasets import by_split, load_annotation_file, load_dataset
from video_mm.errors import ConfigError, NotFound


def test_msrvtt_real_annotations(shared_data: Path) -> None:
    records = load_dataset(shared_data / "msrvtt")  # train_val + test files
    assert len(records) == 10_000
    assert len(by_split(records, "train")) == 6513
    assert len(by_split(records, "val")) == 497  # MSR-VTT's "validate"
    assert len(by_split(records, "test")) == 2990
    assert sum(len(r.captions) for r in records) == 200_000
    clip = next(r for r in records if r.video_id == "video8560")
    assert clip.split == "test" and len(clip.captions) == 20
    assert "a black lamborghini turns on a road" in clip.captions
    assert clip.path is not None and clip.path.name == "video8560.mp4"  # the one video on disk
    first = next(r for r in records if r.video_id == "video0")
    # times in the YouTube source; video0.mp4 is already cut to them, so it is read whole
    assert (first.start, first.end, first.extra["source_span"]) == (None, None, (137.72, 149.44))


def test_msvd_tsv_real_files(shared_data: Path) -> None:
    records = load_dataset(shared_data / "msvd")
    assert [len(by_split(records, s)) for s in ("train", "val", "test")] == [1200, 100, 670]
    clip = next(r for r in records if r.video_id == "eyhzdC936uk_15_27")
    assert clip.split == "test"
    assert clip.captions[0] == "a boy playing with dog"
    assert (clip.start, clip.end, clip.extra["source_span"]) == (None, None, (15.0, 27.0))


def test_msvd14_manifest_real_videos(shared_data: Path) -> None:
    records = load_dataset(shared_data / "msvd14")
    assert len(records) == 14 and all(r.path is not None and r.path.is_file() for r in records)
    held = load_annotation_file(shared_data / "msvd14" / "heldout_captions.json")
    assert {r.video_id for r in held} == {r.video_id for r in records}


def test_msvd_all_video_descriptions(tmp_path: Path) -> None:
    lines = ["# MSVD descriptions", "mv89psg6zh4_33_46 A bird is bathing in a sink.",
             "mv89psg6zh4_33_46 a bird splashes", "60x_yxy7Sfw_1_7 a cat plays"]
    (tmp_path / "AllVideoDescriptions.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "60x_yxy7Sfw_1_7.avi").write_bytes(b"")
    records = {r.video_id: r for r in load_dataset(tmp_path)}
    assert records["mv89psg6zh4_33_46"].captions == ["A bird is bathing in a sink.",
                                                     "a bird splashes"]
    assert records["mv89psg6zh4_33_46"].extra["source_span"] == (33.0, 46.0)
    assert records["60x_yxy7Sfw_1_7"].start is None  # a YouTubeClips file is the cut clip
    assert records["60x_yxy7Sfw_1_7"].path == tmp_path / "videos" / "60x_yxy7Sfw_1_7.avi"
    assert records["mv89psg6zh4_33_46"].path is None
    assert all(r.split == "train" for r in records.values())  # the first 1200 in id order


def test_vatex_json(tmp_path: Path) -> None:
    items = [{"videoID": "Ptf_2VRj-V0_000122_000132", "enCap": ["a man plays", "someone plays"],
              "chCap": ["..."]}]
    path = tmp_path / "vatex_validation_v1.0.json"
    path.write_text(json.dumps(items))
    (record,) = load_dataset(tmp_path)
    assert record.video_id == "Ptf_2VRj-V0_000122_000132" and record.split == "val"
    assert record.captions == ["a man plays", "someone plays"]
    assert (record.start, record.end, record.extra["source_span"]) == (None, None, (122.0, 132.0))


def test_jsonl_manifest(tmp_path: Path) -> None:
    rows = [{"video": "a.mp4", "captions": ["x y"], "split": "validate", "start": 1.5, "end": 3},
            {"video": "a.mp4", "captions": ["x z"], "start": 3},
            {"video": "/abs/b.mp4", "captions": ["z"], "id": "bee"}]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    a, a2, b = load_dataset(tmp_path)
    # windows within the file; spans of one file without ids get ids of their own
    assert (a.video_id, a.path, a.split, a.start, a.end) == (
        "a_1.5_3", tmp_path / "a.mp4", "val", 1.5, 3.0)
    assert (a2.video_id, a2.start, a2.end) == ("a_3_end", 3.0, None)
    assert (b.video_id, b.path, b.split, b.start, b.end) == (
        "bee", Path("/abs/b.mp4"), "train", None, None)


def test_a_manifest_id_names_one_clip(tmp_path: Path) -> None:
    """Features, predictions and metrics are kept by id: one id, one clip."""
    again = [{"video": "a.mp4", "captions": ["x y"], "start": 1, "end": 2},
             {"video": "b.mp4", "captions": ["z"]},
             {"video": "a.mp4", "captions": ["x z", "x y"], "start": 1, "end": 2}]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in again) + "\n")
    a, b = load_dataset(tmp_path)  # the same clip listed twice: one record, all its captions
    assert (a.video_id, a.captions, b.video_id) == ("a_1_2", ["x y", "x z"], "b")

    clash = [{"video": "a.mp4", "captions": ["x"], "id": "clip"},
             {"video": "a.mp4", "captions": ["y"], "id": "clip", "start": 2}]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in clash) + "\n")
    with pytest.raises(ConfigError, match="id 'clip' names two different clips"):
        load_dataset(tmp_path)
    (tmp_path / "manifest.jsonl").unlink()
    (tmp_path / "captions.json").write_text(json.dumps({"videos": [
        {"video_id": "v", "file": "a.mp4", "captions": ["x"], "split": "train"},
        {"video_id": "v", "file": "a.mp4", "captions": ["x"], "split": "test"}]}))  # fmt: skip
    with pytest.raises(ConfigError, match="id 'v' names two different clips"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("window", [{"start": 3, "end": 2}, {"start": -1}, {"end": 0},
                                    {"start": "soon"}])  # fmt: skip
def test_a_manifest_window_that_is_not_a_span_is_a_config_error(
    tmp_path: Path, window: dict
) -> None:
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"video": "a.mp4", "captions": ["x"],
                                                         **window}) + "\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"manifest\.jsonl:1"):
        load_dataset(tmp_path)
    (tmp_path / "manifest.jsonl").unlink()
    (tmp_path / "captions.json").write_text(json.dumps({"videos": [
        {"video_id": "a", "file": "a.mp4", "captions": ["x"], **window}]}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"captions\.json: a"):
        load_dataset(tmp_path)


def test_bad_inputs_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_dataset(tmp_path / "missing")
    with pytest.raises(NotFound):
        load_dataset(tmp_path)  # a folder without any annotation file
    (tmp_path / "manifest.jsonl").write_text('{"captions": ["no video key"]}\n')
    with pytest.raises(ConfigError):
        load_dataset(tmp_path)
