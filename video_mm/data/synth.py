"""A synthetic captioning benchmark whose captions need temporal order to be right.

Each clip shows one to three coloured shapes on a noisy, textured background with camera jitter,
doing things over time. Three kinds of clip:

- ``single``: one object does one thing ("a big red circle moves left");
- ``order``: one object acts in the first half, another in the second ("a red circle moves left
  and then a blue square appears"); the same two events in the other order is a different caption,
  so averaging frames over time cannot tell them apart;
- ``count``: two or three identical objects do the same thing ("three green squares grow").

Splits are train / val / test, plus ``compositional``: every clip there uses at least one
(colour, shape, action) combination that never occurs in the other splits (e.g. a green triangle
spinning). Everything is drawn from ``numpy.random.default_rng(seed)``, so a seed fixes the
benchmark; the videos are real H.264 mp4 files written by ffmpeg, and the annotations use the
MSR-VTT format (``videos`` with ``video_id``/``split``, ``sentences`` with
``video_id``/``caption``), plus a ``synth`` entry per video with the events that were drawn.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from video_mm.errors import ConfigError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 200, 55),
    "blue": (40, 70, 235),
    "yellow": (235, 215, 30),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.12, "big": 0.18}  # radius as a fraction of the frame side
# action -> (singular verb phrases, plural verb phrases); the first of each is the canonical one.
ACTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "left": (("moves left", "moves to the left", "slides left"), ("move left", "slide left")),
    "right": (("moves right", "moves to the right", "slides right"), ("move right", "slide right")),
    "up": (("moves up", "goes up", "rises"), ("move up", "go up", "rise")),
    "down": (("moves down", "goes down", "falls"), ("move down", "go down", "fall")),
    "bounces": (("bounces", "is bouncing", "hops"), ("bounce", "are bouncing", "hop")),
    "grows": (("grows", "gets bigger", "expands"), ("grow", "get bigger", "expand")),
    "shrinks": (("shrinks", "gets smaller", "becomes smaller"), ("shrink", "get smaller")),
    "spins": (("spins", "rotates", "is spinning"), ("spin", "rotate", "are spinning")),
    "appears": (("appears", "shows up", "comes into view"), ("appear", "show up")),
    "disappears": (("disappears", "vanishes", "goes away"), ("disappear", "vanish")),
}
# Combinations kept out of train/val/test; every compositional clip contains one of them.
HELD_OUT: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("green", "triangle", "spins"),
        ("blue", "circle", "bounces"),
        ("yellow", "square", "shrinks"),
        ("red", "triangle", "up"),
        ("blue", "square", "appears"),
        ("yellow", "circle", "left"),
    }
)
NUMBERS = {2: "two", 3: "three"}
SPLIT_FRACTIONS = (("train", 0.7), ("val", 0.1), ("test", 0.1), ("compositional", 0.1))


@dataclass(frozen=True)
class SynthConfig:
    """Size of the benchmark; the defaults train each model on a 2-core CPU in minutes."""

    size: int = 112  # frame side in pixels (decord misreads 96-pixel H.264 frames)
    frames: int = 24
    fps: int = 8
    captions_per_video: int = 5
    kinds: tuple[tuple[str, float], ...] = (("single", 0.35), ("order", 0.45), ("count", 0.2))
    crf: int = 18  # H.264 quality: low enough that colours survive for the tests


@dataclass(frozen=True)
class Obj:
    colour: str
    shape: str
    size: str
    x: float  # centre, fraction of the frame
    y: float


@dataclass(frozen=True)
class Event:
    """``actors`` (one object, or identical ones for counting) do ``action`` over [start, end)."""

    action: str
    actors: tuple[int, ...]
    start: int
    end: int


def _spin_ok(shape: str, action: str) -> bool:
    return not (shape == "circle" and action == "spins")  # a spinning circle looks still


def _sample_obj(rng: np.random.Generator, action: str, taken: list[Obj]) -> Obj:
    """A new object placed so its action stays inside the frame and it does not overlap others."""
    while True:
        colour = str(rng.choice(list(COLOURS)))
        shape = str(rng.choice(SHAPES))
        if not _spin_ok(shape, action):
            continue
        if any((o.colour, o.shape) == (colour, shape) for o in taken):
            continue  # two different actors must be told apart by their description
        size = str(rng.choice(list(SIZES)))
        x, y = rng.uniform(0.3, 0.7, size=2)
        if action == "left":
            x = rng.uniform(0.62, 0.72)
        elif action == "right":
            x = rng.uniform(0.28, 0.38)
        elif action == "up" or action == "bounces":
            y = rng.uniform(0.62, 0.72)
        elif action == "down":
            y = rng.uniform(0.28, 0.38)
        return Obj(colour, shape, size, float(x), float(y))


def _triples(objs: list[Obj], events: list[Event]) -> set[tuple[str, str, str]]:
    return {(objs[a].colour, objs[a].shape, e.action) for e in events for a in e.actors}


def sample_clip(rng: np.random.Generator, kind: str, frames: int) -> tuple[list[Obj], list[Event]]:
    """Draw the objects and events of one clip of the given kind."""
    actions = list(ACTIONS)
    if kind == "single":
        action = str(rng.choice(actions))
        return [_sample_obj(rng, action, [])], [Event(action, (0,), 0, frames)]
    if kind == "order":
        a1, a2 = (str(a) for a in rng.choice(actions, size=2, replace=True))
        o1 = _sample_obj(rng, a1, [])
        o2 = _sample_obj(rng, a2, [o1])
        # Keep them apart, one per half, the vertical motion has the room. The side of the first
        # actor is random: were it always the left one, where an object sits would say when it
        # acts and averaging frames would describe order after all.
        side = int(rng.integers(0, 2))
        o1 = Obj(o1.colour, o1.shape, o1.size, _half_x(rng, a1, side), o1.y)
        o2 = Obj(o2.colour, o2.shape, o2.size, _half_x(rng, a2, 1 - side), o2.y)
        half = frames // 2
        return [o1, o2], [Event(a1, (0,), 0, half), Event(a2, (1,), half, frames)]
    if kind == "count":
        n = int(rng.choice([2, 3]))
        action = str(rng.choice([a for a in actions if a not in ("left", "right")]))
        proto = _sample_obj(rng, action, [])
        size = "small" if n == 3 or action == "grows" else proto.size  # room for all of them
        objs = [
            Obj(proto.colour, proto.shape, size, 0.2 + 0.6 * i / (n - 1), proto.y) for i in range(n)
        ]
        return objs, [Event(action, tuple(range(n)), 0, frames)]
    raise ConfigError(f"unknown clip kind {kind!r}")


def _half_x(rng: np.random.Generator, action: str, side: int) -> float:
    """x centre in the left (side 0) or right (side 1) half, leaving room for sideways moves."""
    lo = 0.25 if side == 0 else 0.75
    if action == "left":
        return lo + 0.1
    if action == "right":
        return lo - 0.1
    return lo + float(rng.uniform(-0.03, 0.03))


def state_at(
    obj: Obj, events: list[Event], index: int, t: int
) -> tuple[float, float, float, float, bool]:
    """(x, y, radius, angle in degrees, visible) of object ``index`` at frame ``t``."""
    x, y, r, angle, visible = obj.x, obj.y, SIZES[obj.size], 0.0, True
    for e in events:
        if index not in e.actors:
            continue
        p = float(np.clip((t - e.start) / max(1, e.end - e.start - 1), 0.0, 1.0))
        travel = 0.2
        if e.action == "left":
            x -= travel * p
        elif e.action == "right":
            x += travel * p
        elif e.action == "up":
            y -= travel * p
        elif e.action == "down":
            y += travel * p
        elif e.action == "bounces":
            y -= 0.22 * abs(np.sin(2 * np.pi * p))
        elif e.action == "grows":
            r *= 0.65 + 0.65 * p
        elif e.action == "shrinks":
            r *= 1.3 - 0.65 * p
        elif e.action == "spins":
            angle = 360.0 * p
        elif e.action == "appears":
            visible = t >= e.start + (e.end - e.start) // 2
        elif e.action == "disappears":
            visible = t < e.start + (e.end - e.start) // 2
    return x, y, r, angle, visible


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A low-saturation gradient with soft blobs: varied, but never mistaken for an object."""
    margin = 8
    side = size + 2 * margin
    base = rng.uniform(70, 170)
    tint = rng.uniform(-12, 12, size=3)
    gy, gx = np.mgrid[0:side, 0:side] / side
    angle = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(angle) * gx + np.sin(angle) * gy) * rng.uniform(-40, 40)
    img = base + grad[..., None] + tint
    for _ in range(int(rng.integers(3, 8))):
        cx, cy = rng.uniform(0, side, size=2)
        rad = rng.uniform(4, side / 4)
        blob = np.exp(-((gx * side - cx) ** 2 + (gy * side - cy) ** 2) / (2 * rad**2))
        img += blob[..., None] * rng.uniform(-25, 25)
    return img.astype(np.float32)


def _shape_points(
    shape: str, cx: float, cy: float, r: float, angle: float
) -> list[tuple[float, float]]:
    corners = {"square": 4, "triangle": 3}[shape]
    start = {"square": 45.0, "triangle": -90.0}[shape]
    theta = np.deg2rad(start + angle + np.arange(corners) * 360.0 / corners)
    return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in theta]


def render(
    objs: list[Obj], events: list[Event], config: SynthConfig, rng: np.random.Generator
) -> np.ndarray:
    """The clip's frames, uint8 ``[T, size, size, 3]``."""
    size, margin = config.size, 8
    background = _background(rng, size)
    jitter = np.cumsum(rng.normal(0, 0.8, size=(config.frames, 2)), axis=0).clip(-margin, margin)
    out = np.empty((config.frames, size, size, 3), np.uint8)
    for t in range(config.frames):
        dx, dy = (round(v) for v in jitter[t])
        view = background[margin + dy : margin + dy + size, margin + dx : margin + dx + size]
        frame = view + rng.normal(0, 6, size=view.shape)
        img = Image.fromarray(frame.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for i, obj in enumerate(objs):
            x, y, r, angle, visible = state_at(obj, events, i, t)
            if not visible:
                continue
            cx, cy, rad = x * size - dx, y * size - dy, r * size
            colour = COLOURS[obj.colour]
            if obj.shape == "circle":
                draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=colour)
            else:
                draw.polygon(_shape_points(obj.shape, cx, cy, rad, angle), fill=colour)
        out[t] = np.asarray(img)
    return out


def _noun(obj: Obj, rng: np.random.Generator, with_size: bool) -> str:
    size = f"{obj.size} " if with_size and rng.random() < 0.5 else ""
    return f"{size}{obj.colour} {obj.shape}"


def _phrase(obj: Obj, action: str, rng: np.random.Generator) -> str:
    """ "a red circle moves left"; size is left out when the action changes it."""
    verb = str(rng.choice(ACTIONS[action][0]))
    with_size = action not in ("grows", "shrinks")
    return f"a {_noun(obj, rng, with_size)} {verb}"


def captions_for(
    kind: str, objs: list[Obj], events: list[Event], rng: np.random.Generator, n: int
) -> list[str]:
    """``n`` distinct paraphrases (or as many as exist) describing the clip."""
    out: list[str] = []
    for _ in range(n * 10):
        if len(out) == n:
            break
        if kind == "single":
            e = events[0]
            text = _phrase(objs[0], e.action, rng)
            if rng.random() < 0.3:
                text = text.replace("a ", "the ", 1)
        elif kind == "order":
            first = _phrase(objs[0], events[0].action, rng)
            second = _phrase(objs[1], events[1].action, rng)
            template = int(rng.integers(0, 4))
            if template == 0:
                text = f"{first} and then {second}"
            elif template == 1:
                text = f"first {first} then {second}"
            elif template == 2:
                text = f"{first} and after that {second}"
            else:
                text = f"{second} after {first}"
        else:
            e, obj = events[0], objs[0]
            verb = str(rng.choice(ACTIONS[e.action][1]))
            count = NUMBERS[len(objs)]
            with_size = e.action not in ("grows", "shrinks")
            noun = f"{_noun(obj, rng, with_size)}s"
            text = (
                f"{count} {noun} {verb}"
                if rng.random() < 0.6
                else f"there are {count} {noun} that {verb}"
            )
        if text not in out:
            out.append(text)
    return out


def _choose(rng: np.random.Generator, options: tuple[tuple[str, float], ...]) -> str:
    names = [n for n, _ in options]
    weights = np.array([w for _, w in options])
    return str(rng.choice(names, p=weights / weights.sum()))


def _ffmpeg() -> str:
    try:
        from video_mm.io.ffmpeg import ffmpeg_exe
    except ImportError:  # the io room's helper; imageio-ffmpeg's binary is what it returns here
        from imageio_ffmpeg import get_ffmpeg_exe as ffmpeg_exe
    return ffmpeg_exe()


def write_mp4(frames: np.ndarray, path: Path, fps: int, crf: int = 18) -> None:
    """Encode RGB frames to H.264 mp4 with the bundled ffmpeg binary."""
    _, h, w, _ = frames.shape
    cmd = [
        _ffmpeg(), "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)


def generate(
    out: Path, n_videos: int, seed: int, config: SynthConfig | None = None, progress: bool = True
) -> Path:
    """Write ``out/videos/*.mp4`` and ``out/annotations.json``; returns the annotation file."""
    config = config or SynthConfig()
    if n_videos < 1:
        raise ConfigError("n_videos must be >= 1")
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    videos, sentences = [], []
    for i in tqdm(range(n_videos), desc="synth", disable=not progress):
        split = _choose(rng, SPLIT_FRACTIONS)
        kind = _choose(rng, config.kinds)
        while True:  # rejection: compositional clips need a held-out combination, others none
            objs, events = sample_clip(rng, kind, config.frames)
            if bool(_triples(objs, events) & HELD_OUT) == (split == "compositional"):
                break
        video_id = f"synth{i:05d}"
        write_mp4(
            render(objs, events, config, rng),
            out / "videos" / f"{video_id}.mp4",
            config.fps,
            config.crf,
        )
        videos.append({
            "video_id": video_id,
            "split": split,
            "id": i,
            "start time": 0.0,
            "end time": config.frames / config.fps,
            "synth": {"kind": kind, "objects": [asdict(o) for o in objs],
                      "events": [asdict(e) for e in events]},
        })  # fmt: skip
        for caption in captions_for(kind, objs, events, rng, config.captions_per_video):
            sentences.append({"video_id": video_id, "caption": caption, "sen_id": len(sentences)})
    annotations = {
        "info": {"description": f"video-mm synthetic benchmark, seed {seed}",
                 "config": asdict(config), "held_out": sorted(HELD_OUT)},
        "videos": videos,
        "sentences": sentences,
    }  # fmt: skip
    path = out / "annotations.json"
    path.write_text(json.dumps(annotations, indent=1))
    return path
