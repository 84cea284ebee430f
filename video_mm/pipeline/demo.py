"""`vmm demo`: the whole system on one machine with no servers, in a few minutes on 2 cores.

1. A small synthetic archive (``data_dir/demo/synth``), generated once.
2. Small models trained briefly on it (an LRCN and a temporal-attention captioner, a retrieval
   model), saved under ``data_dir/models`` where the pipeline finds them; reused when present.
3. The archive and the real clips of ``$VMM_SHARED_DATA/msvd14`` (default ``../shared/data``, from
   the working directory; when present) indexed in-process.
4. Captions of a few videos and a few text searches printed, each naming its model and what the
   model's output is worth ("trained on synthetic shapes: not for real video").

Offline it uses the configured frame encoder, by default a randomly initialised ResNet-18: the
plumbing is real, the captions of real clips are not. ``VMM_FEATURES__WEIGHTS=DEFAULT`` trains on
ImageNet ResNet-18 features (read from ``$TORCH_HOME``, downloaded there when online), and
``--zero-shot hf:openai/clip-vit-base-patch32`` searches with a pretrained CLIP (from the
Hugging Face cache, downloaded when online) instead of the synthetic retrieval model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from video_mm import provenance
from video_mm.artifacts import captioner_dirs, models_root, read_saved, retrieval_dir
from video_mm.errors import VideoMMError
from video_mm.settings import Settings

# The models only know the synthetic world: search for what it shows.
QUERIES = (
    "a red triangle moves down",
    "a blue square appears",
    "two circles",
    "a small green square",
)
# With a pretrained CLIP (--zero-shot) the real clips can be searched for what they show too.
REAL_QUERIES = ("a man is playing a guitar", "a cat is playing the piano", "people are running")
# Small and quick: trained in a minute or two on 2 CPU cores, good enough to show the system work.
CAPTIONERS = {
    "lrcn": {"embed_dim": 64, "hidden_dim": 128},
    "attention": {"embed_dim": 64, "hidden_dim": 128, "attn_dim": 64},
}


def real_clips(settings: Settings) -> Path:
    """The real MSVD clips shown beside the synthetic archive: ``shared_data/msvd14/videos``
    (``VMM_SHARED_DATA``; ``../shared/data`` by default, as for the tests)."""
    return settings.shared_data / "msvd14" / "videos"


def _train_models(settings: Settings, data: Path, epochs: int, console: Console) -> None:
    from video_mm.retrieval.training import RetrievalTrainConfig, train_on_dataset
    from video_mm.train.captioning import CaptionTrainConfig, train_captioner

    models = models_root(settings)
    runs = settings.data_dir / "demo" / "runs"
    cache = settings.data_dir / "features"
    # Every video trains; the best epoch is picked on a few of them (a demo, not a benchmark:
    # `vmm train` and `vmm eval` do it properly with held-out splits).
    overrides = dict(epochs=epochs, warmup_steps=20, patience=epochs, train_split="all",
                     val_split="all", n_frames=8, size=112, **_encoder(settings))
    for arch, model in CAPTIONERS.items():
        console.print(f"[bold]training captioner {arch}[/bold] ({epochs} epochs)")
        cfg = CaptionTrainConfig.load(**overrides, batch_size=32, eval_max_videos=16)
        cfg.model.update(model)
        result = train_captioner(data, arch, runs / arch, cfg, cache_dir=cache, resume=False,
                                 feature_settings=settings.features)
        shutil.copytree(result.best_dir, models / "captioners" / arch, dirs_exist_ok=True)
    console.print(f"[bold]training retrieval model[/bold] ({epochs} epochs)")
    run = RetrievalTrainConfig.load(**overrides, batch_size=32)
    run.model.update({"embed_dim": 128, "video": {"pooling": "attention", "hidden": 128},
                      "text": {"word_dim": 64, "hidden": 128}})
    _, result = train_on_dataset(data, "learned", runs / "retrieval", run, cache_dir=cache,
                                 feature_settings=settings.features, resume=False)
    shutil.copytree(result.best_dir, models / "retrieval", dirs_exist_ok=True)


def _encoder(settings: Settings) -> dict[str, str]:
    """The frame encoder the demo trains on: the configured one (random ResNet-18 by default)."""
    return {"backbone": settings.features.backbone, "weights": settings.features.weights}


def _have_models(settings: Settings) -> bool:
    """Models a previous demo trained on the same frame encoder."""
    root = models_root(settings)
    folders = [root / "captioners" / a for a in CAPTIONERS] + [root / "retrieval"]
    want = _encoder(settings)
    for folder in folders:
        try:
            backbone = read_saved(folder, kind="model").backbone
        except VideoMMError:
            return False
        if backbone is None or {"backbone": backbone.name, "weights": backbone.weights} != want:
            return False
    return True


def _show_models(settings: Settings, console: Console) -> dict[str, list[str]]:
    """Print each served model with its frame encoder and warnings; returns name -> notes."""
    retrieval = retrieval_dir(settings)
    folders = [*captioner_dirs(settings), *([retrieval] if retrieval else [])]
    notes = provenance.notes_by_name(folders)
    for folder in folders:
        info = provenance.describe(folder)
        if info is None:
            continue
        console.print(f"  model [bold]{info.name}[/bold] ({info.kind}): frame encoder "
                      f"{info.frame_encoder} ({info.weights}), trained on "
                      f"{info.trained_on or 'not recorded'}", highlight=False)
        for note in info.notes:
            console.print(f"    [yellow]warning:[/yellow] {note}", highlight=False)
    return notes


def run_demo(
    settings: Settings,
    *,
    n_videos: int = 48,
    epochs: int = 30,
    retrain: bool = False,
    console: Console | None = None,
    zero_shot: str | None = None,
) -> None:
    from video_mm.data.synth import generate
    from video_mm.export import to_text, video_cues
    from video_mm.pipeline.dispatch import index_paths
    from video_mm.pipeline.runner import context
    from video_mm.search import search

    console = console or Console()
    synth = settings.data_dir / "demo" / "synth"
    if not (synth / "annotations.json").is_file():
        console.print(f"[bold]generating {n_videos} synthetic videos[/bold] in {synth}")
        generate(synth, n_videos=n_videos, seed=0)
    enc = _encoder(settings)
    console.print(f"[bold]frame encoder[/bold] {enc['backbone']} (weights {enc['weights']})",
                  highlight=False)
    if enc["weights"] == "none" and not enc["backbone"].startswith("hf:"):
        console.print("  [yellow]random weights:[/yellow] fine for the plumbing, meaningless on "
                      "real video; VMM_FEATURES__WEIGHTS=DEFAULT uses ImageNet weights, "
                      "--zero-shot hf:openai/clip-vit-base-patch32 a pretrained CLIP (README)")
    if retrain or not _have_models(settings):
        _train_models(settings, synth, epochs, console)
    else:
        console.print(f"[bold]using the models a previous demo trained[/bold] in "
                      f"{models_root(settings)} (--retrain to train again)")
    if zero_shot:
        from video_mm.retrieval.model import save_pretrained
        from video_mm.retrieval.zeroshot import zero_shot as make_zero_shot

        model = make_zero_shot(zero_shot, offline=settings.features.offline)
        folder = save_pretrained(models_root(settings) / "zero-shot" / model.name, model)
        # its own index collection: one per embedding space (CLIP's is not the demo model's)
        settings = settings.model_copy(update={
            "models": settings.models.model_copy(update={"retrieval": str(folder)}),
            "index": settings.index.model_copy(update={"collection": f"clips-{model.name}"}),
        })
        console.print(f"[bold]zero-shot retrieval[/bold] with {zero_shot} -> {folder} (serve "
                      f"it: VMM_MODELS__RETRIEVAL={folder} "
                      f"VMM_INDEX__COLLECTION=clips-{model.name} vmm serve)", highlight=False)
    console.print("[bold]models[/bold]")
    notes = _show_models(settings, console)

    real = real_clips(settings)
    paths = [synth / "videos"] + ([real] if real.is_dir() else [])
    console.print(f"[bold]indexing[/bold] {', '.join(str(p) for p in paths)} (in-process)")
    rows = index_paths(paths, settings, queue=False)
    done = [r for r in rows if r["state"] == "done"]
    console.print(f"{len(done)} of {len(rows)} videos indexed"
                  + "".join(f"\n  failed: {r['path']}: {r['error']}" for r in rows
                            if r["state"] != "done"))

    shown = done[:3] + [r for r in done if not Path(r["path"]).name.startswith("synth")][:3]
    for r in shown:
        console.print(f"\n[bold]{Path(r['path']).name}[/bold]")
        cues = video_cues(context(settings).catalog, r["video_id"])
        console.print(to_text(cues), end="", markup=False)
        for note in dict.fromkeys(n for c in cues for n in notes.get(c.model, [])):
            console.print(f"  [yellow]warning:[/yellow] {note}", highlight=False)

    queries = QUERIES + (REAL_QUERIES if zero_shot else ())
    for query in queries:
        hits = search(query, k=5, settings=settings)
        table = Table("score", "file", "clip", "caption", title=f"search: {query!r}")
        for hit in hits:
            table.add_row(f"{hit.score:.3f}", hit.extra.get("filename", hit.video_id[:12]),
                          f"{hit.start:.1f}-{hit.end:.1f}s", hit.caption)
        model = hits[0].extra.get("embedding_model") if hits else None
        table.caption = (f"search model: {model or 'none (caption text only)'}"
                         + "".join(f"; {n}" for n in dict.fromkeys(
                             n for h in hits for n in h.extra.get("notes", []))))
        console.print(table)
