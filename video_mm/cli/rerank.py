"""``vmm train reranker``: the co-attention re-ranker of a retrieval model's top-k."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from video_mm.cli._groups import train_app
from video_mm.settings import get_settings


def _cache_dir() -> Path | None:
    settings = get_settings()
    if not settings.features.cache:
        return None
    return Path(settings.features.cache_url or settings.data_dir / "features")


def train_reranker_cmd(
    data: Annotated[Path, typer.Option(help="Dataset folder: videos + an annotation file.")],
    retrieval: Annotated[Path, typer.Option(
        help="The saved retrieval model (RUN/best) whose top-k it re-ranks: its features are "
        "used and its top-k give the hard negatives.")],
    out: Annotated[Path, typer.Option(help="Run folder: last.pt, metrics.csv, best/.")],
    config: Annotated[Path | None, typer.Option(
        help="Training TOML (default: configs/train/reranker.toml).")] = None,
    model_config: Annotated[str | None, typer.Option(
        help="Model config name in configs/models or a JSON file (default: reranker).")] = None,
    variant: Annotated[str | None, typer.Option(
        help="two_stream (ViLBERT co-attention) | single_stream (VL-BERT).")] = None,
    negatives: Annotated[str | None, typer.Option(
        help="Comma-separated: in_batch,hard,swapped (default: the TOML's).")] = None,
    mlm_weight: Annotated[float | None, typer.Option(
        min=0.0, help="Masked-word loss weight (0: off).")] = None,
    pairs_per_clip: Annotated[int | None, typer.Option(
        min=1, help="Matched pairs per clip and epoch (a small dataset wants more).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override [train] epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Override [train] lr.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=2, help="Override [train] batch_size (pairs per step).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override [train] seed.")] = None,
    train_split: Annotated[str | None, typer.Option(help="train | all | ...")] = None,
    val_split: Annotated[str | None, typer.Option(help="val | test | all | ...")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore OUT/last.pt; start over.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train a re-ranker: matched vs mismatched clip-caption pairs, with in-batch, hard (the
    retrieval model's top-k) and order- / object-swapped negatives; resumes from OUT/last.pt
    unless --fresh. The best epoch by validation t2v R@1 after re-ranking is saved as OUT/best
    (load with video_mm.rerank.from_pretrained; serve with [search] rerank_k and
    [models] reranker)."""
    from video_mm.rerank.training import RerankTrainConfig, train_on_dataset

    run = RerankTrainConfig.load(
        config, epochs=epochs, lr=lr, seed=seed, device=device, batch_size=batch_size,
        train_split=train_split, val_split=val_split, mlm_weight=mlm_weight,
        pairs_per_clip=pairs_per_clip,
        negatives=[n.strip() for n in negatives.split(",") if n.strip()] if negatives else None,
        progress=not as_json,
    )  # fmt: skip
    if variant is not None:
        run.model["variant"] = variant
    model, result = train_on_dataset(
        data, retrieval, out, run, model_config=model_config,
        feature_settings=get_settings().features, cache_dir=_cache_dir(), resume=not fresh,
    )  # fmt: skip
    summary = {"out": str(out), "best": str(result.best_dir), "best_epoch": result.best_epoch,
               "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
               **model.scores}  # fmt: skip
    print(json.dumps(summary) if as_json else
          f"best val t2v R@1 after re-ranking {result.best_metric:.1f} at epoch "
          f"{result.best_epoch} (dual encoder alone {model.scores.get('val_dual_t2v_R@1', 0):.1f});"
          f" model in {result.best_dir}")  # fmt: skip


def register(app: typer.Typer) -> None:
    train_app.command("reranker")(train_reranker_cmd)
