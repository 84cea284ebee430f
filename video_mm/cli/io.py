"""``vmm probe`` and ``vmm frames``: look inside a video and pull frames out of it."""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from video_mm.io.probe import probe as probe_video
from video_mm.io.sampling import sample_frames
from video_mm.io.thumbnail import write_jpeg
from video_mm.settings import get_settings


class SamplerName(StrEnum):
    uniform = "uniform"
    fps = "fps"
    keyframes = "keyframes"


def probe(
    path: Annotated[str, typer.Argument(help="A local video file.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show what a video is, from its metadata (no full decode): duration, frame rate, frame
    count, display size, rotation, codec, pixel format, audio. A bad file exits 2 with one line."""
    info = probe_video(path, get_settings().io)
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(info)))
        return
    fps = f"{info.fps:.3f}" + (" (variable)" if info.variable_fps else "")
    rows = [
        ("file", info.path),
        ("container", info.container),
        ("codec", f"{info.codec} ({info.pix_fmt})"),
        (
            "size",
            f"{info.width}x{info.height}" + (f" rotated {info.rotation}°" if info.rotation else ""),
        ),
        ("duration", f"{info.duration:.3f} s"),
        ("fps", fps),
        ("frames", str(info.frame_count)),
        ("audio", "yes" if info.has_audio else "no"),
        ("bytes", str(info.size_bytes)),
    ]
    if info.warning:
        rows.append(("warning", info.warning))
    for key, value in rows:
        typer.echo(f"{key:<10} {value}")


def frames(
    path: Annotated[str, typer.Argument(help="A local video file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Folder for the JPEGs and frames.json.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Frames to take (uniform sampler).")] = 16,
    sampler: Annotated[SamplerName, typer.Option(help="Which frames.")] = SamplerName.uniform,
    fps: Annotated[float, typer.Option(min=0.001, help="Frames per second (fps sampler).")] = 1.0,
    size: Annotated[
        int | None, typer.Option(min=1, help="Resize on decode so the short side is SIZE px.")
    ] = None,
) -> None:
    """Sample frames and write DIR/000000.jpg, 000001.jpg, ... in display orientation, and
    DIR/frames.json: a list of {"index": frame number, "time": seconds}.

    Samplers: uniform (N frames evenly spread, first and last included); fps (one frame
    every 1/F seconds); keyframes (keyframes only: fast, approximate)."""
    batch = sample_frames(
        path, sampler=sampler.value, n=n, fps=fps, size=size, limits=get_settings().io
    )
    out.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(batch.frames):
        write_jpeg(frame, str(out / f"{i:06d}.jpg"))
    listing = [
        {"index": int(idx), "time": round(float(t), 6)}
        for idx, t in zip(batch.indices, batch.times, strict=True)
    ]
    (out / "frames.json").write_text(json.dumps(listing, indent=1) + "\n")
    if batch.warning:
        typer.echo(f"warning: {path}: {batch.warning}", err=True)
    typer.echo(f"wrote {len(batch)} frames to {out}", err=True)


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
    app.command("frames")(frames)
