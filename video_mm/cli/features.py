"""``vmm features``: per-frame CNN features of videos, one safetensors file per video."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from tqdm import tqdm

from video_mm.errors import ConfigError
from video_mm.settings import FeatureSettings, SamplingSettings, get_settings

VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mpg", ".mpeg", ".ts", ".flv",
    ".wmv", ".3gp",
}


def expand(paths: list[Path]) -> list[Path]:
    """Files as given; folders become their video files (by suffix), sorted, recursively."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in VIDEO_SUFFIXES)
        else:
            out.append(p)
    return out


def _set(options: dict) -> dict:
    """The options given on the command line (the rest come from the settings)."""
    return {k: v for k, v in options.items() if v is not None}


def features(
    paths: Annotated[list[Path] | None, typer.Argument(help="Videos or folders of them.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for VIDEO_ID.safetensors.")] = None,
    backbone: Annotated[str | None, typer.Option(help="Backbone; see --list-backbones.")] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="none (random), a state-dict file, or a torchvision weights name "
                     "(ResNet18_Weights.IMAGENET1K_V1, DEFAULT): read from $TORCH_HOME, else "
                     "downloaded there (features.weights_mirror; features.offline or "
                     "HF_HUB_OFFLINE=1 forbid it)."),
    ] = None,
    grid: Annotated[bool | None, typer.Option(help="Also save the spatial grid [T,C,h,w].")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Frames per forward pass.")] = None,
    sampler: Annotated[str | None, typer.Option(help="uniform | fps | keyframes")] = None,
    n_frames: Annotated[int | None, typer.Option(min=1, help="Frames per video (uniform).")] = None,
    fps: Annotated[float | None, typer.Option(help="Frames per second (fps sampler).")] = None,
    size: Annotated[int | None, typer.Option(help="Short side frames are decoded at.")] = None,
    cache: Annotated[bool, typer.Option(help="Read and fill the feature cache.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    list_backbones: Annotated[
        bool, typer.Option("--list-backbones", help="Print the backbone names and exit.")
    ] = False,
) -> None:
    """Extract per-frame CNN features: DIR/VIDEO_ID.safetensors holds `features` [T, D] and
    `timestamps` [T] (seconds); the video id is the file name without its suffix. A bad video is
    reported and skipped; the exit code is 1 if any video failed."""
    from video_mm.features import backbones
    from video_mm.features.cache import FeatureCache, dumps, file_sha256
    from video_mm.features.extract import FeatureExtractor, extract_videos

    if list_backbones:
        print("\n".join(backbones.list_backbones()))
        return
    if not paths or out is None:
        raise ConfigError("give at least one PATH and --out DIR (see vmm features --help)")

    settings = get_settings()
    given = {"backbone": backbone, "weights": weights, "device": device, "batch_size": batch_size,
             "grid": grid}  # fmt: skip
    sampling = {"sampler": sampler, "n_frames": n_frames, "fps": fps, "size": size}
    try:
        f = FeatureSettings.model_validate({**settings.features.model_dump(), **_set(given)})
        s = SamplingSettings.model_validate({**settings.sampling.model_dump(), **_set(sampling)})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"bad option {err['loc'][0]}: {err['msg']}") from None
    extractor = FeatureExtractor(f)
    store = FeatureCache.from_settings(settings) if cache and f.cache else None

    videos = expand(paths)
    if not videos:
        raise ConfigError(f"no video files in {', '.join(map(str, paths))}")
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    report: list[dict] = []
    runs = extract_videos(videos, s, extractor, cache=store, limits=settings.io)
    bar = tqdm(runs, total=len(videos), unit="video", disable=as_json, file=sys.stderr)
    for source, result in bar:
        vid = Path(source).stem
        row: dict = {"source": str(source), "id": vid}
        if isinstance(result, Exception):
            row["error"] = str(result)
            tqdm.write(f"skipped {source}: {result}", file=sys.stderr)
        elif vid in seen:
            row["error"] = f"another input already has video id {vid!r}"
            tqdm.write(f"skipped {source}: {row['error']}", file=sys.stderr)
        else:
            seen.add(vid)
            meta = {
                "source": str(source),
                "video_sha256": file_sha256(source),
                "weights": extractor.weights_id,
                "sampling": json.dumps(s.model_dump()),
            }
            target = out / f"{vid}.safetensors"
            target.write_bytes(dumps(result, meta))
            row.update(out=str(target), frames=len(result.times), dim=int(result.features.shape[1]))
            if result.warning:
                row["warning"] = result.warning
                tqdm.write(f"warning: {source}: {result.warning}", file=sys.stderr)
        report.append(row)

    failed = [r for r in report if "error" in r]
    if as_json:
        hits = store.hits if store else 0
        print(json.dumps({"videos": report, "failed": len(failed), "cache_hits": hits}, indent=2))
    else:
        print(f"{len(report) - len(failed)} of {len(report)} videos -> {out}"
              + (f" ({store.hits} from the cache)" if store else ""))
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command(name="features")(features)
