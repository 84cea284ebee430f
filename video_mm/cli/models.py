"""``vmm models``: the installed models with their provenance; pull one from the Hugging Face hub;
make a zero-shot retrieval model from a CLIP or SigLIP; freeze an end-to-end captioner into the
frame encoder and feature-reading captioner the pipeline serves; estimate a frame encoder's
batch-norm statistics on a dataset's frames."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Annotated

import typer

from video_mm.settings import get_settings

models_app = typer.Typer(
    help="Installed models (with provenance), pulled from the Hugging Face hub or made zero-shot.",
    no_args_is_help=True,
)


def _installed(root: Path) -> list[Path]:
    """Saved model folders (and run folders) under ``root``, a few levels deep."""
    from video_mm.artifacts import named_folder

    if not root.is_dir():
        return []
    found = []
    for config in sorted(root.glob("**/config.json")):
        folder = config.parent
        rel = folder.relative_to(root)
        if len(rel.parts) <= 3 and "runs" not in rel.parts:
            found.append(named_folder(folder))
    return list(dict.fromkeys(found))


@models_app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The models the pipeline serves (models.captioners, models.retrieval, else those under
    DATA_DIR/models) and every other model installed there, each with its frame encoder, training
    data, scores, the command that made it, and its warnings."""
    from video_mm.artifacts import captioner_dirs, models_root, retrieval_dir
    from video_mm.provenance import describe

    settings = get_settings()
    served = [*captioner_dirs(settings), *filter(None, [retrieval_dir(settings)])]
    served_keys = {p.resolve() for p in served}
    infos = []
    for folder in [*served, *_installed(models_root(settings))]:
        if folder.resolve() in {Path(i.path).resolve() for i in infos}:
            continue
        info = describe(folder, served=folder.resolve() in served_keys)
        if info is not None:
            infos.append(info)
    if as_json:
        print(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    if not infos:
        print(f"no models installed under {models_root(settings)} and none configured: "
              "`vmm models pull REPO_ID`, `vmm models zero-shot hf:REPO_ID`, or `vmm demo`")
        return
    for i in infos:
        print(f"{i.name}  {i.kind}{'  [served]' if i.served else ''}  {i.path}")
        features = f"; {i.precision} features" if i.precision else ""
        print(f"  frame encoder: {i.frame_encoder} (weights {i.weights}{features})")
        print(f"  trained on: {i.trained_on or 'not recorded'}")
        if i.scores:
            print("  scores: " + ", ".join(f"{k} {v:.4g}" for k, v in i.scores.items()))
        if i.created or i.command:
            print(f"  made {i.created or '?'} by: {i.command or '?'}")
        for note in i.notes:
            print(f"  warning: {note}")


@models_app.command("pull")
def pull_cmd(
    repo_id: Annotated[str, typer.Argument(help="Hugging Face repo id (org/name) of a video-mm "
                                           "captioner or retrieval model.")],
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
    name: Annotated[str | None, typer.Option(help="Folder name (default: org--name).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Fetch a model into DATA_DIR/models/pulled/ through the Hugging Face cache (offline with
    HF_HUB_OFFLINE=1 or features.offline: from the cache only), then say how to serve it."""
    from video_mm.artifacts import models_root
    from video_mm.errors import ConfigError
    from video_mm.features.hub import resolve
    from video_mm.provenance import describe

    settings = get_settings()
    source = resolve(repo_id, revision=revision, offline=settings.features.offline)
    info = describe(source.folder)
    if info is None:
        raise ConfigError(f"{repo_id} holds no video-mm captioner or retrieval model (for an "
                          f"image encoder use features.backbone = \"hf:{repo_id}\")")
    dest = models_root(settings) / "pulled" / (name or repo_id.replace("/", "--"))
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    shutil.copytree(source.folder, tmp, symlinks=False)  # the cache links blobs: copy the bytes
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    info = describe(dest)
    assert info is not None
    key = "VMM_MODELS__RETRIEVAL" if info.kind == "retrieval" else "VMM_MODELS__CAPTIONERS"
    value = str(dest) if info.kind == "retrieval" else json.dumps([str(dest)])
    if as_json:
        print(json.dumps({**info.to_dict(), "revision": source.revision, "serve": {key: value}}))
        return
    print(f"{info.kind} {info.name} from {repo_id}@{source.revision or 'local'} -> {dest}")
    for note in info.notes:
        print(f"warning: {note}")
    print(f"serve it: {key}='{value}' (or models.{key.split('__')[1].lower()} in the config file)")


@models_app.command("zero-shot")
def zero_shot_cmd(
    ref: Annotated[str, typer.Argument(help="hf:<repo id or folder> of a CLIP or SigLIP, e.g. "
                                       "hf:openai/clip-vit-base-patch32")],
    out: Annotated[Path | None, typer.Option(help="Folder to save it in (default: "
                                             "DATA_DIR/models/zero-shot/<name>).")] = None,
    n_frames: Annotated[int, typer.Option(min=1, help="Frames per clip (mean-pooled).")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """A retrieval model that needs no training: clip vector = mean of its frames' CLIP/SigLIP
    image embeddings, query = the text tower's. Serve it with VMM_MODELS__RETRIEVAL=<folder>."""
    from video_mm.artifacts import models_root
    from video_mm.provenance import describe
    from video_mm.retrieval.model import save_pretrained
    from video_mm.retrieval.zeroshot import zero_shot

    settings = get_settings()
    model = zero_shot(ref, n_frames=n_frames, offline=settings.features.offline)
    folder = save_pretrained(out or models_root(settings) / "zero-shot" / model.name, model)
    info = describe(folder)
    assert info is not None
    if as_json:
        print(json.dumps(info.to_dict()))
        return
    print(f"zero-shot retrieval model {info.name} ({info.frame_encoder}) -> {folder}")
    print(f"serve it: VMM_MODELS__RETRIEVAL='{folder}'")


@models_app.command("freeze")
def freeze_cmd(
    model: Annotated[Path, typer.Argument(help="An end-to-end captioner (a saved folder or a "
                                          "training run, e.g. from --model-config lrcn_e2e).")],
    out: Annotated[Path, typer.Option(help="Folder for the frozen pair.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Split an end-to-end captioner into its fine-tuned CNN (OUT/backbone.safetensors: a frame
    encoder any model can use as [features] weights) and a captioner that reads that CNN's
    features (OUT itself, servable with VMM_MODELS__CAPTIONERS). Captions stay the same."""
    from video_mm.models.factory import BACKBONE_FILE, export_frozen, from_pretrained

    captioner = from_pretrained(model, device="cpu")
    folder = export_frozen(captioner, out)
    backbone = folder / BACKBONE_FILE
    summary = {"captioner": str(folder), "backbone": captioner.backbone.name,
               "weights": str(backbone)}  # fmt: skip
    if as_json:
        print(json.dumps(summary))
        return
    print(f"frame encoder {summary['backbone']} -> {backbone}\n"
          f"  use it: [features] backbone = \"{summary['backbone']}\", weights = \"{backbone}\"\n"
          f"captioner on its features -> {folder}\n"
          f"  serve it: VMM_MODELS__CAPTIONERS='[\"{folder}\"]'")


@models_app.command("adapt-bn")
def adapt_bn_cmd(
    data: Annotated[Path, typer.Option(help="Dataset folder whose frames the statistics are "
                                       "estimated on (videos + an annotation file).")],
    out: Annotated[Path, typer.Option(help="Weights file to write (.safetensors).")],
    backbone: Annotated[str, typer.Option(help="torchvision frame encoder.")] = "resnet18",
    weights: Annotated[str, typer.Option(help="Its weights: none (random), a state-dict file or "
                                         "a torchvision weights name.")] = "none",
    n_frames: Annotated[int, typer.Option(min=1, help="Frames sampled per video, as the "
                                          "training recipe samples them.")] = 8,
    size: Annotated[int, typer.Option(min=16, help="Short side of the sampled frames.")] = 112,
    split: Annotated[str, typer.Option(help="Split to read (train | all | ...).")] = "train",
    max_frames: Annotated[int, typer.Option(min=1, help="At most this many frames, spread over "
                                            "the videos.")] = 4096,
    batch_size: Annotated[int, typer.Option(min=2, help="Frames per forward pass; each batch's "
                                            "statistics are averaged.")] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Estimate a frame encoder's batch-norm statistics on a dataset's frames (AdaBN) and write
    the result as a weights file for [features] weights: random weights (none) get the
    normalisation they never had; pretrained ones are adapted to videos unlike their images."""
    from video_mm.artifacts import FeatureRecipe
    from video_mm.features.backbones import fetch_settings
    from video_mm.train.batchnorm import adapt_batchnorm

    settings = get_settings()
    recipe = FeatureRecipe(backbone=backbone, weights=weights, n_frames=n_frames, size=size)
    done = adapt_batchnorm(data, recipe, out, split=split, max_frames=max_frames,
                           batch_size=batch_size,
                           cache_dir=settings.data_dir / "features",
                           fetch=fetch_settings(settings.features), progress=not as_json)
    summary = {"backbone": done.backbone, "weights_from": done.weights_from,
               "weights": str(done.path), "videos": done.videos, "frames": done.frames,
               "batchnorm_layers": done.layers}  # fmt: skip
    if as_json:
        print(json.dumps(summary))
        return
    print(f"{done.backbone}: {done.layers} batch norms estimated on {done.frames} frames of "
          f"{done.videos} videos -> {done.path}\n"
          f"  use it: [features] backbone = \"{done.backbone}\", weights = \"{done.path}\"")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
