"""``vmm synth``, ``vmm train captioner``, ``vmm eval captioner`` and ``vmm explain``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from video_mm.cli._decoding import DecodingOptions, decoding, decoding_options
from video_mm.cli._groups import eval_app, train_app
from video_mm.settings import get_settings

# The keys of train.captioning.ARCH_CONFIGS, named here so `vmm --help` need not import torch.
ARCHS = ("meanpool", "lrcn", "attention", "attention-spatial")


def _cache_dir() -> Path | None:
    settings = get_settings()
    if not settings.features.cache:
        return None
    return Path(settings.features.cache_url or settings.data_dir / "features")


def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write videos/*.mp4 and annotations.json.")],
    n_videos: Annotated[int, typer.Option(min=1, help="How many clips.")] = 1000,
    seed: Annotated[int, typer.Option(help="The same seed gives the same benchmark.")] = 0,
    size: Annotated[int, typer.Option(min=32, help="Frame side in pixels.")] = 112,
    frames: Annotated[int, typer.Option(min=4, help="Frames per clip.")] = 24,
    fps: Annotated[int, typer.Option(min=1, help="Frame rate of the mp4 files.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Write the synthetic captioning benchmark: shapes moving, growing, spinning, appearing, in
    order ("a red circle moves left and then a blue square appears"), with MSR-VTT-format
    captions and train / val / test / compositional splits."""
    from video_mm.data.synth import SynthConfig, generate

    path = generate(out, n_videos, seed, SynthConfig(size=size, frames=frames, fps=fps))
    data = json.loads(path.read_text())
    splits: dict[str, int] = {}
    for v in data["videos"]:
        splits[v["split"]] = splits.get(v["split"], 0) + 1
    summary = {"annotations": str(path), "videos": len(data["videos"]),
               "captions": len(data["sentences"]), "splits": splits}  # fmt: skip
    print(json.dumps(summary) if as_json else
          f"wrote {summary['videos']} videos, {summary['captions']} captions to {out} {splits}")


def train_captioner_cmd(
    data: Annotated[Path, typer.Option(help="Dataset folder: videos + an annotation file.")],
    arch: Annotated[str, typer.Option(help=" | ".join(ARCHS))],
    out: Annotated[Path, typer.Option(help="Run folder: last.pt, metrics.csv, best/.")],
    config: Annotated[Path | None, typer.Option(help="Training TOML (default: "
                                                "configs/train/captioner.toml).")] = None,
    model_config: Annotated[str | None, typer.Option(
        help="Model config name in configs/models or a JSON file (default: the arch's); "
        "lrcn_e2e trains the CNN on the frames too.")] = None,
    conditioning: Annotated[str | None, typer.Option(
        help="LRCN only: input | init | both.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override [train] epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Override [train] lr.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Override [train] batch_size (clips per step).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override [train] seed.")] = None,
    train_split: Annotated[str | None, typer.Option(help="train | all | ...")] = None,
    val_split: Annotated[str | None, typer.Option(help="val | test | all | ...")] = None,
    scst_epochs: Annotated[int | None, typer.Option(
        min=0, help="Self-critical (CIDEr) epochs after cross-entropy.")] = None,
    n_frames: Annotated[int | None, typer.Option(min=1, help="Frames sampled per video.")] = None,
    grid_pool: Annotated[int | None, typer.Option(
        min=1, help="k: keep a k x k layout of the CNN map per frame (1: global pooling).")] = None,
    backbone: Annotated[str | None, typer.Option(
        help="Frame encoder (override [features]): a torchvision name, or hf:<repo id or "
        "folder> (CLIP, SigLIP, DINOv2, ViT, ConvNeXt, ResNet).")] = None,
    weights: Annotated[str | None, typer.Option(
        help="Its weights: none | a file | a torchvision name (DEFAULT, IMAGENET1K_V1...); "
        "for hf: the hub revision.")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore OUT/last.pt; start over.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train a captioner; resumes from OUT/last.pt unless --fresh. The best epoch by validation
    CIDEr-D is saved as OUT/best (load with video_mm.models.from_pretrained)."""
    from video_mm.errors import ConfigError
    from video_mm.train.captioning import CaptionTrainConfig, train_captioner

    if arch not in ARCHS:
        raise ConfigError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    cfg = CaptionTrainConfig.load(
        config, epochs=epochs, lr=lr, seed=seed, device=device, batch_size=batch_size,
        train_split=train_split, val_split=val_split, scst_epochs=scst_epochs,
        n_frames=n_frames, grid_pool=grid_pool, backbone=backbone, weights=weights,
    )  # fmt: skip
    if conditioning is not None:
        if arch != "lrcn":
            raise ConfigError("--conditioning applies to --arch lrcn only")
        cfg.model["conditioning"] = conditioning
    result = train_captioner(data, arch, out, cfg, model_config=model_config,
                             feature_settings=get_settings().features, cache_dir=_cache_dir(),
                             resume=not fresh)  # fmt: skip
    summary = {"out": str(out), "best": str(result.best_dir), "best_epoch": result.best_epoch,
               "val_CIDEr": result.best_metric, "epochs_run": result.epochs_run,
               "stopped_early": result.stopped_early,
               "unvalidated": result.unvalidated}  # fmt: skip
    if result.unvalidated:
        print(f"note: no validation: {result.unvalidated}", file=sys.stderr)
    print(json.dumps(summary) if as_json else
          f"best val CIDEr {result.best_metric:.3f} at epoch {result.best_epoch}; "
          f"model in {result.best_dir}" if result.best_metric is not None else
          f"trained {result.epochs_run} epochs without validation; model in {result.best_dir}")


@decoding_options()
def eval_captioner_cmd(
    model: Annotated[Path, typer.Option(help="A saved captioner folder (RUN/best).")],
    data: Annotated[Path, typer.Option(help="Dataset folder: videos + an annotation file.")],
    split: Annotated[str, typer.Option(help="train | val | test | compositional | all")] = "test",
    subset: Annotated[str | None, typer.Option(
        help="order: only the synthetic clips whose captions describe order.")] = None,
    references: Annotated[Path | None, typer.Option(
        help="Score against this annotation file's captions instead (e.g. held-out ones).")] = None,
    options: DecodingOptions = DecodingOptions(),
    predictions: Annotated[Path | None, typer.Option(
        help="Where per-video predictions go (default: MODEL/predictions_SPLIT.json).")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D (coco-caption) of a captioner on a dataset split,
    decoded with the `[models]` settings (options override them); per-video predictions are saved
    beside the model."""
    from video_mm.train.captioning import evaluate_captioner

    name = f"predictions_{split}" + (f"_{subset}" if subset else "") + ".json"
    scores = evaluate_captioner(
        model, data, split, subset_name=subset, references=references,
        decoding=decoding(get_settings(), options),
        predictions_out=predictions or model / name, feature_settings=get_settings().features,
        cache_dir=_cache_dir(), device=device, progress=not as_json,
    )  # fmt: skip
    if as_json:
        print(json.dumps(scores))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{model} on {data} ({split}{', ' + subset if subset else ''})")
    for key in scores:
        table.add_column(key, justify="right")
    table.add_row(*(f"{v:.4f}" if k != "n_videos" else str(int(v)) for k, v in scores.items()))
    Console().print(table)


@decoding_options()
def explain(
    video: Annotated[Path, typer.Argument(help="A video file.")],
    model: Annotated[Path, typer.Option(help="A saved captioner or re-ranker folder.")],
    out: Annotated[Path | None, typer.Option(help="PNG to write (VIDEO.explain.png).")] = None,
    query: Annotated[str | None, typer.Option(
        help="Re-ranker only: the sentence whose co-attention over the frames is drawn.")] = None,
    options: DecodingOptions = DecodingOptions(),
    as_json: Annotated[bool, typer.Option("--json", help="Print caption, path as JSON.")] = False,
) -> None:
    """Draw what the captioner looked at: the sampled frames, the caption, and for each word its
    attention over the frames (and over the grid cells with spatial attention). With a re-ranker
    and --query: each query word's co-attention over the frames, and the match probability."""
    from video_mm.rerank.model import is_reranker
    from video_mm.train.explain import explain_video

    out = out or video.with_suffix(".explain.png")
    if is_reranker(model):
        from video_mm.rerank.explain import explain_match

        probability, _ = explain_match(video, model, query or "", out,
                                       feature_settings=get_settings().features)  # fmt: skip
        print(json.dumps({"query": query, "match": probability, "png": str(out)}) if as_json
              else f"{query!r}: match p = {probability:.3f}\nwrote {out}")  # fmt: skip
        return
    caption = explain_video(
        video, model, out, feature_settings=get_settings().features,
        decoding=decoding(get_settings(), options),
    )
    print(json.dumps({"caption": caption.text, "png": str(out)}) if as_json else
          f"{caption.text}\nwrote {out}")


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
    app.command("explain")(explain)
    train_app.command("captioner")(train_captioner_cmd)
    eval_app.command("captioner")(eval_captioner_cmd)
