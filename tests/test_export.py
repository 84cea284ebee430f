"""Caption export: exact files for known cues, and hostile text that must not break a cue."""

from __future__ import annotations

import json

import pytest

from video_mm.export import Cue, render, to_json, to_srt, to_text, to_vtt

CUES = [
    Cue(10.0, 20.0, "a dog runs", model="lrcn", score=-0.5),
    Cue(0.0, 9.9996, "a man is cooking", model="lrcn", score=-0.25),
]


def test_vtt_exact() -> None:
    assert to_vtt(CUES) == (
        "WEBVTT\n\n"
        "1\n00:00:00.000 --> 00:00:10.000\n<v lrcn>a man is cooking\n\n"
        "2\n00:00:10.000 --> 00:00:20.000\n<v lrcn>a dog runs\n"
    )


def test_srt_exact() -> None:
    assert to_srt(CUES) == (
        "1\n00:00:00,000 --> 00:00:10,000\na man is cooking\n\n"
        "2\n00:00:10,000 --> 00:00:20,000\na dog runs\n"
    )


def test_hours_and_rounding() -> None:
    assert "01:01:01.500 --> 01:01:02.000" in to_vtt([Cue(3661.4996, 3662.0, "x")])


def test_hostile_text_stays_inside_its_cue() -> None:
    text = "line one\n\nline two --> 00:00:01.000 <b>&"
    vtt = to_vtt([Cue(0, 1, text)])
    body = vtt.split("\n")
    assert body[4] == "line one line two -&gt; 00:00:01.000 &lt;b&gt;&amp;"
    assert vtt.count("-->") == 1
    srt = to_srt([Cue(0, 1, text), Cue(1, 2, "")])
    assert srt.count("-->") == 2
    assert srt.split("\n\n")[1].startswith("2\n")


def test_json_round_trips() -> None:
    data = json.loads(to_json(CUES, video_id="abc"))
    assert data["video_id"] == "abc"
    assert [c["start"] for c in data["cues"]] == [0.0, 10.0]
    assert data["cues"][0] == {
        "start": 0.0, "end": 9.9996, "text": "a man is cooking", "model": "lrcn", "score": -0.25
    }


def test_text_and_render() -> None:
    assert to_text(CUES).splitlines()[0] == "[00:00:00.000 - 00:00:10.000] lrcn: a man is cooking"
    assert render(CUES, "srt") == to_srt(CUES)
    with pytest.raises(ValueError, match="unknown caption format"):
        render(CUES, "ass")


@pytest.mark.parametrize(
    "bad", [Cue(-1.0, 1.0, "x"), Cue(2.0, 1.0, "x"), Cue(float("nan"), 1, "x")]
)
def test_bad_times_are_refused(bad: Cue) -> None:
    with pytest.raises(ValueError):
        to_vtt([bad])
