"""The synthetic benchmark: deterministic for a seed, and its captions say what the frames show."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from video_mm.data.synth import COLOURS, HELD_OUT, SynthConfig, generate
from video_mm.io.decode import open_video

CONFIG = SynthConfig(size=112, frames=16, fps=8)
N = 24


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, N, seed=5, config=CONFIG, progress=False)
    return out


def _digest(folder: Path) -> str:
    h = hashlib.sha256((folder / "annotations.json").read_bytes())
    for video in sorted((folder / "videos").iterdir()):
        h.update(video.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(bench: Path, tmp_path: Path) -> None:
    generate(tmp_path / "again", N, seed=5, config=CONFIG, progress=False)
    generate(tmp_path / "other", N, seed=6, config=CONFIG, progress=False)
    assert _digest(tmp_path / "again") == _digest(bench)
    assert _digest(tmp_path / "other") != _digest(bench)


def test_msrvtt_format_and_splits(bench: Path) -> None:
    data = json.loads((bench / "annotations.json").read_text())
    assert len(data["videos"]) == N and len(list((bench / "videos").glob("*.mp4"))) == N
    ids = {v["video_id"] for v in data["videos"]}
    assert {s["video_id"] for s in data["sentences"]} == ids
    assert {v["split"] for v in data["videos"]} <= {"train", "val", "test", "compositional"}
    for v in data["videos"]:
        objs, events = v["synth"]["objects"], v["synth"]["events"]
        triples = {(objs[a]["colour"], objs[a]["shape"], e["action"])
                   for e in events for a in e["actors"]}
        # the compositional split, and only it, holds combinations never seen in training
        assert bool(triples & HELD_OUT) == (v["split"] == "compositional")
    kinds = {v["synth"]["kind"] for v in data["videos"]}
    assert kinds == {"single", "order", "count"}
    order = [s["caption"] for s in data["sentences"] if "then" in s["caption"]]
    assert order and len({s["caption"] for s in data["sentences"]}) > N * 3  # paraphrases


def _mask(frame: np.ndarray, colour: str) -> np.ndarray:
    diff = frame.astype(np.int32) - np.array(COLOURS[colour])
    return (np.abs(diff).max(-1) < 60)


def _track(frames: np.ndarray, colour: str) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: centroid (x, y) of the colour's pixels (nan when absent) and their area."""
    cents, areas = [], []
    for f in frames:
        ys, xs = np.nonzero(_mask(f, colour))
        areas.append(len(xs))
        cents.append((xs.mean(), ys.mean()) if len(xs) > 20 else (np.nan, np.nan))
    return np.array(cents), np.array(areas)


def _check_event(frames: np.ndarray, colour: str, action: str, start: int, end: int) -> None:
    cents, areas = _track(frames[start:end], colour)
    dx, dy = cents[-1] - cents[0]
    shift = 0.2 * CONFIG.size * 0.6  # the object travels 0.2 of the frame; jitter is small
    if action == "left":
        assert dx < -shift
    elif action == "right":
        assert dx > shift
    elif action == "up":
        assert dy < -shift
    elif action == "down":
        assert dy > shift
    elif action == "grows":
        assert areas[-1] > 1.8 * areas[0]
    elif action == "shrinks":
        assert areas[-1] < 0.55 * areas[0]
    elif action == "appears":
        assert areas[0] < 20 and areas[-1] > 100
    elif action == "disappears":
        assert areas[0] > 100 and areas[-1] < 20
    elif action == "bounces":
        assert np.nanmin(cents[:, 1]) < cents[0, 1] - shift  # it goes up and comes back
        assert abs(cents[-1, 1] - cents[0, 1]) < shift
    elif action == "spins":
        assert abs(dx) < shift and abs(dy) < shift and areas.min() > 100


def test_captions_match_the_decoded_frames(bench: Path) -> None:
    """Decode every clip and check each event of each uniquely coloured actor: the object said
    to move left moves left, the one said to appear is absent and then present, and so on."""
    data = json.loads((bench / "annotations.json").read_text())
    captions = {}
    for s in data["sentences"]:
        captions.setdefault(s["video_id"], []).append(s["caption"])
    checked = 0
    for v in data["videos"]:
        objs, events = v["synth"]["objects"], v["synth"]["events"]
        with open_video(bench / "videos" / f"{v['video_id']}.mp4") as reader:
            frames = reader.get_frames(list(range(CONFIG.frames)))
        for e in events:
            actor = objs[e["actors"][0]]
            others = [o for i, o in enumerate(objs) if i not in e["actors"]]
            if any(o["colour"] == actor["colour"] for o in others):
                continue  # two objects of one colour: the colour mask cannot separate them
            _check_event(frames, actor["colour"], e["action"], e["start"], e["end"])
            # and every caption names the actor
            for caption in captions[v["video_id"]]:
                assert actor["colour"] in caption and actor["shape"] in caption
            checked += 1
        if v["synth"]["kind"] == "order":
            first, second = (objs[e["actors"][0]] for e in events)
            for caption in captions[v["video_id"]]:
                words = caption.split()
                a = words.index(first["colour"])
                b = len(words) - 1 - words[::-1].index(second["colour"])
                # "A and then B" / "first A then B" / "B after A": the order survives paraphrase
                assert (a < b) != (" after " in caption and "after that" not in caption) or (
                    first["colour"] == second["colour"])
    assert checked >= N


def test_cli_prints_only_its_json_summary(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from video_mm.cli import app

    res = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--n-videos", "4", "--size",
                                   "32", "--frames", "4", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)  # all of it: the progress bar goes to stderr
    assert summary["videos"] == 4 and sum(summary["splits"].values()) == 4
