"""``vmm train retrieval`` and ``vmm eval retrieval``: the joint video-text embedding."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from video_mm.cli._groups import eval_app, train_app
from video_mm.settings import get_settings

METRIC_ORDER = ("R@1", "R@5", "R@10", "MedR", "MeanR")


def _cache_dir() -> Path | None:
    settings = get_settings()
    if not settings.features.cache:
        return None
    return Path(settings.features.cache_url or settings.data_dir / "features")


def train_retrieval_cmd(
    data: Annotated[Path, typer.Option(help="Dataset folder: videos + an annotation file.")],
    out: Annotated[Path, typer.Option(help="Run folder: last.pt, metrics.csv, best/.")],
    text_tower: Annotated[str, typer.Option(help="learned | minilm")] = "learned",
    init: Annotated[
        str | None,
        typer.Option(help="hf:<repo id or folder> of a CLIP/SigLIP: fine-tune a projection and "
                     "the video pooling on its frozen zero-shot space (ignores --text-tower)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Training TOML (default: configs/train/retrieval.toml).")
    ] = None,
    model_config: Annotated[
        str | None,
        typer.Option(
            help="Model config name in configs/models or a JSON file (default: the tower's)."
        ),
    ] = None,
    pooling: Annotated[
        str | None, typer.Option(help="Video pooling: mean | attention | transformer.")
    ] = None,
    tune_layers: Annotated[
        int | None, typer.Option(min=0, help="MiniLM only: top layers to train (0: frozen).")
    ] = None,
    hard_negatives: Annotated[
        bool | None,
        typer.Option(help="Add a caption of the most similar other clip as a negative."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Training epochs (overrides the TOML).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (overrides the TOML).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=2, help="Clips per step (overrides the TOML).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (overrides the TOML).")] = None,
    train_split: Annotated[str | None, typer.Option(help="train | all | ...")] = None,
    val_split: Annotated[str | None, typer.Option(help="val | test | all | ...")] = None,
    n_frames: Annotated[int | None, typer.Option(min=1, help="Frames sampled per video.")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore OUT/last.pt; start over.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train a video-text retrieval model (symmetric InfoNCE, learnable temperature); resumes from
    OUT/last.pt unless --fresh. The best epoch by validation rsum (t2v + v2t R@1/5/10) is saved
    as OUT/best (load with video_mm.retrieval.from_pretrained)."""
    from video_mm.retrieval.training import RetrievalTrainConfig, train_on_dataset

    run = RetrievalTrainConfig.load(
        config, epochs=epochs, lr=lr, seed=seed, device=device, batch_size=batch_size,
        train_split=train_split, val_split=val_split, n_frames=n_frames,
        hard_negatives=hard_negatives, progress=not as_json,
    )  # fmt: skip
    if pooling is not None:
        run.model["video"] = {**run.model.get("video", {}), "pooling": pooling}
    if tune_layers is not None:
        run.model["text"] = {**run.model.get("text", {}), "tune_layers": tune_layers}
    model, result = train_on_dataset(
        data, text_tower, out, run, model_config=model_config,
        feature_settings=get_settings().features, cache_dir=_cache_dir(), resume=not fresh,
        init=init,
    )  # fmt: skip
    summary = {"out": str(out), "best": str(result.best_dir), "best_epoch": result.best_epoch,
               "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
               "unvalidated": result.unvalidated, **model.scores}  # fmt: skip
    if result.unvalidated:
        print(f"note: no validation: {result.unvalidated}", file=sys.stderr)
    if as_json:
        print(json.dumps(summary))
    elif result.best_metric is None:
        print(f"trained {result.epochs_run} epochs without validation; model in {result.best_dir}")
    else:
        print(f"best val rsum {result.best_metric:.1f} at epoch {result.best_epoch} "
              f"(t2v R@1 {model.scores.get('val_t2v_R@1', 0):.1f}); model in {result.best_dir}")


def eval_retrieval_cmd(
    model: Annotated[Path, typer.Option(help="A saved retrieval model folder (RUN/best).")],
    data: Annotated[Path, typer.Option(help="Dataset folder: videos + an annotation file.")],
    split: Annotated[str, typer.Option(help="train | val | test | compositional | all")] = "test",
    queries: Annotated[
        Path | None,
        typer.Option(
            help="Query with this annotation file's captions instead (e.g. held-out ones)."
        ),
    ] = None,
    rerank: Annotated[
        Path | None,
        typer.Option(help="A saved re-ranker: also re-rank the top --rerank-k and compare."),
    ] = None,
    rerank_k: Annotated[int, typer.Option(min=1, help="Candidates the re-ranker re-scores.")] = 20,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Text->video and video->text R@1/5/10, median and mean rank of a retrieval model over every
    caption and clip of a dataset split. With --rerank: text->video with and without re-ranking
    the top-k, and the share of order-swapped caption pairs each ranks the right way round."""
    if rerank is not None:
        _eval_rerank(model, rerank, data, split, queries, rerank_k, device, as_json)
        return
    from video_mm.retrieval.training import evaluate_on_dataset

    scores = evaluate_on_dataset(
        model, data, split, queries=queries, feature_settings=get_settings().features,
        cache_dir=_cache_dir(), device=device, progress=not as_json,
    )  # fmt: skip
    if as_json:
        print(json.dumps(scores))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{model} on {data} ({split}): {int(scores['n_clips'])} clips, "
                  f"{int(scores['n_queries'])} captions")  # fmt: skip
    table.add_column("direction")
    for name in METRIC_ORDER:
        table.add_column(name, justify="right")
    for direction in ("t2v", "v2t"):
        table.add_row(direction, *(f"{scores[f'{direction}_{m}']:.1f}" for m in METRIC_ORDER))
    table.add_row("t2v, shared", *_shared_cells(scores, ""))
    Console().print(table)
    _print_ceiling(scores, "")


def _shared_cells(scores: dict[str, float], stage: str) -> list[str]:
    """The shared-sentence text->video row (no mean rank: only the first holder's is kept)."""
    return [f"{scores[f'{stage}t2v_shared_{m}']:.1f}" if m != "MeanR" else "-"
            for m in METRIC_ORDER]  # fmt: skip


def _print_ceiling(scores: dict[str, float], stage: str) -> None:
    print(f"shared: a hit is any clip the query's sentence was written for. R@1 can be at most "
          f"{scores[f'{stage}t2v_R@1_ceiling']:.1f} here (sentences written for several clips).")


def _eval_rerank(
    model: Path, rerank: Path, data: Path, split: str, queries: Path | None, k: int,
    device: str | None, as_json: bool,
) -> None:  # fmt: skip
    from video_mm.rerank.training import evaluate_on_dataset

    scores = evaluate_on_dataset(
        model, rerank, data, split, k=k, queries=queries, feature_settings=get_settings().features,
        cache_dir=_cache_dir(), device=device, progress=not as_json,
    )  # fmt: skip
    if as_json:
        print(json.dumps(scores))
        return
    from rich.console import Console
    from rich.table import Table

    n_clips, n_queries = int(scores["n_clips"]), int(scores["n_queries"])
    table = Table(title=f"{model} + {rerank} (top {k}) on {data} ({split}): "
                  f"{n_clips} clips, {n_queries} captions")  # fmt: skip
    table.add_column("t2v")
    for name in (*METRIC_ORDER, "order pairs right"):
        table.add_column(name, justify="right")
    for stage, label in (("dual", "retrieval model"), ("rerank", "re-ranked")):
        row = [f"{scores[f'{stage}_t2v_{m}']:.1f}" for m in METRIC_ORDER]
        right = scores.get(f"order_right_{stage}")
        pairs = int(scores.get("order_pairs", 0))
        row.append("-" if right is None or not pairs else f"{right:.1f}% of {pairs}")
        table.add_row(label, *row)
    for stage, label in (("dual", "retrieval model, shared"), ("rerank", "re-ranked, shared")):
        table.add_row(label, *_shared_cells(scores, f"{stage}_"), "")
    Console().print(table)
    _print_ceiling(scores, "dual_")


def register(app: typer.Typer) -> None:
    train_app.command("retrieval")(train_retrieval_cmd)
    eval_app.command("retrieval")(eval_retrieval_cmd)
