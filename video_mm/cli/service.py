"""`vmm caption`, `vmm index`, `vmm status`, `vmm demo`: the pipeline as a service (`vmm worker`
comes from the workers package, see ``workers/cli.py``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from video_mm.cli._decoding import DecodingOptions, decoding_options, with_decoding
from video_mm.errors import ConfigError, NotFound, VideoMMError
from video_mm.settings import get_settings

console = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)


class JobFailed(VideoMMError):
    code = "job_failed"


@decoding_options(n_best=True)
def caption(
    video: Annotated[Path, typer.Argument(help="A video file.", exists=True, dir_okay=False)],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="text | json | vtt | srt")
    ] = "text",
    model: Annotated[
        str | None, typer.Option(help="Only this captioner, by name (see `vmm models list`).")
    ] = None,
    decoding: DecodingOptions = DecodingOptions(),
) -> None:
    """Caption a video in this process and print one caption per clip with its timestamps,
    decoded with the `[models]` settings (options override them); with --n-best N, the N best
    captions of each clip with their scores (mean log-probability per word)."""
    from video_mm.artifacts import model_dirs
    from video_mm.export import FORMATS, render, video_cues
    from video_mm.pipeline.dispatch import index_paths
    from video_mm.pipeline.runner import context

    if fmt not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
    settings = with_decoding(get_settings(), decoding)
    captioners, _ = model_dirs(settings)
    if not captioners:
        raise ConfigError(
            "no captioner configured: set models.captioners (VMM_MODELS__CAPTIONERS) or run "
            "`vmm demo` once to train small ones under data_dir/models"
        )
    (row,) = index_paths([video], settings, queue=False, progress=False)
    if row["state"] != "done":
        raise JobFailed(f"{video}: {row['error']}")
    if row["warning"]:
        sys.stderr.write(f"warning: {video}: {row['warning']}\n")
    cues = video_cues(context(settings).catalog, row["video_id"], model)
    from video_mm import provenance

    notes = provenance.notes_by_name(captioners)  # what each captioner's output is worth
    for name in dict.fromkeys(c.model for c in cues):
        for note in notes.get(name, []):
            sys.stderr.write(f"warning: {name}: {note}\n")
    sys.stdout.write(render(cues, fmt, n_best=decoding.n_best or 1, video_id=row["video_id"],
                            filename=video.name))


def index(
    paths: Annotated[
        list[Path], typer.Argument(help="Video files or folders of videos.", metavar="PATH...")
    ],
    queue: Annotated[
        bool | None,
        typer.Option(
            "--queue/--here",
            help="Send jobs to workers (`vmm worker`) or run them in this process. "
            "Default: queue when broker.url is set, else here.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per file.")] = False,
) -> None:
    """Index videos: store them, caption and embed every clip, make them searchable."""
    from video_mm.pipeline.dispatch import index_paths
    from video_mm.pipeline.stages import gap_messages

    settings = get_settings()
    for message in gap_messages(settings):
        print(f"note: {message}", file=sys.stderr)
    rows = index_paths(paths, settings, queue=queue, progress=not as_json)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        table = Table("file", "video", "job", "state", "error, warning or notes")
        for r in rows:
            table.add_row(Path(r["path"]).name, r["video_id"][:12], r["job_id"][:8], r["state"],
                          r["error"] or r["warning"] or "; ".join(r["notes"]))
        out.print(table)
    if any(r["state"] == "failed" for r in rows):
        raise typer.Exit(1)


def status(
    job: Annotated[str | None, typer.Argument(help="A job id (or its first characters).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Most recent jobs to list.")] = 20,
) -> None:
    """Jobs with their state, stage, progress and error; one job in detail when given."""
    from video_mm.pipeline.runner import context

    cat = context(get_settings()).catalog
    if job:
        jobs = [j for j in cat.list_jobs(limit=100_000) if j.id.startswith(job)]
        if len(jobs) != 1:
            raise NotFound(f"{len(jobs)} jobs match {job!r}")
    else:
        jobs = cat.list_jobs(limit=limit)
    rows = [
        dict(id=j.id, video_id=j.video_id, state=j.state, stage=j.stage,
             progress=round(j.progress, 3), attempts=j.attempts, error=j.error,
             created_at=j.created_at.isoformat(), updated_at=j.updated_at.isoformat())
        for j in jobs
    ]
    if as_json:
        sys.stdout.write(json.dumps(rows[0] if job else rows, indent=2) + "\n")
        return
    table = Table("job", "video", "state", "stage", "progress", "tries", "updated", "error")
    for r in rows:
        table.add_row(r["id"][:8], r["video_id"][:12], r["state"], r["stage"],
                      f"{r['progress']:.0%}", str(r["attempts"]), r["updated_at"][:19],
                      r["error"] or "")
    out.print(table)


def demo(
    n_videos: Annotated[int, typer.Option(help="Synthetic videos to generate.")] = 48,
    epochs: Annotated[int, typer.Option(help="Training epochs when models are trained.")] = 30,
    retrain: Annotated[
        bool, typer.Option(help="Train again even if the demo's models exist.")
    ] = False,
    zero_shot: Annotated[
        str | None,
        typer.Option(help="Search with this pretrained CLIP/SigLIP instead (hf:<repo id or "
                     "folder>, e.g. hf:openai/clip-vit-base-patch32; from the HF cache, "
                     "downloaded when online)."),
    ] = None,
) -> None:
    """The main job on embedded defaults: synthesise an archive, train small models (once), index
    it with the real clips in ../shared/data/msvd14, print captions, run searches.
    """
    from video_mm.pipeline.demo import run_demo

    started = time.monotonic()
    run_demo(get_settings(), n_videos=n_videos, epochs=epochs, retrain=retrain, console=out,
             zero_shot=zero_shot)
    out.print(f"[bold]demo finished in {time.monotonic() - started:.0f} s[/bold]")


def register(app: typer.Typer) -> None:
    app.command()(caption)
    app.command()(index)
    app.command()(status)
    app.command()(demo)
