"""Attention pictures: what a captioner looked at while saying each word.

The figure has the sampled frames in a strip (with their times), the generated caption as the
title, and a heat map with one row per word and one column per frame: the temporal attention
weights the model used to predict that word. With spatial attention, a second block overlays each
word's weights over the grid cells on the frame it attended to most. Weights are read from a
teacher-forced pass over the generated caption, which reproduces the decoding steps exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from video_mm.artifacts import load_recipe, pool_grid, warn_precision
from video_mm.errors import ModelError
from video_mm.models.decoding import Decoding
from video_mm.records import Caption, FrameBatch
from video_mm.settings import FeatureSettings

MAX_WORDS = 20


def explain_video(
    video: Path | str, model_dir: Path | str, out: Path | str, *, decoding: Decoding | None = None,
    feature_settings: FeatureSettings | None = None,
) -> Caption:
    """Caption ``video`` with the captioner in ``model_dir`` and write the attention PNG."""
    from video_mm.features.extract import FeatureExtractor
    from video_mm.io.sampling import sample_frames
    from video_mm.models.factory import from_pretrained

    captioner = from_pretrained(model_dir)
    recipe = captioner.recipe or load_recipe(model_dir)
    sampling = recipe.sampling()
    batch = sample_frames(video, sampler=sampling.sampler, n=sampling.n_frames,
                          size=sampling.size)  # fmt: skip
    grid = None
    if captioner.model.takes_frames:  # an end-to-end model reads the frames themselves
        feats = batch.frames
    else:
        settings = recipe.feature_settings(feature_settings)
        warn_precision(model_dir, recipe, settings)
        use_grid = recipe.grid_pool > 1 or captioner.model.uses_grid
        extractor = FeatureExtractor(settings, grid=use_grid)
        clip = next(iter(extractor.extract([batch])))
        feats = recipe.apply(pool_grid(clip.grid, recipe.grid_pool) if recipe.grid_pool > 1
                             else clip.features)
        grid = clip.grid if captioner.model.uses_grid else None
    caption = captioner.caption([feats], decoding, grids=[grid] if grid is not None else None)[0]

    words = caption.text.split()[:MAX_WORDS]
    temporal, spatial = _attention(captioner, feats, grid, words)
    draw(batch, caption.text, words, temporal, spatial, Path(out), captioner.name)
    return caption


def _attention(captioner, feats: np.ndarray, grid: np.ndarray | None,
               words: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-word frame weights ``[W, T]`` and cell weights ``[W, T, h*w]`` (or None)."""
    vocab = captioner.vocab
    ids = [vocab.bos_id, *(vocab.stoi.get(w, vocab.unk_id) for w in words), vocab.eos_id]
    f, mask, g = captioner.batch([feats], [grid] if grid is not None else None)
    tokens = torch.tensor([ids], device=f.device)
    with torch.no_grad():
        out = captioner.model(f, mask, tokens, g)
    temporal = out.attention[0, : len(words)].float().cpu().numpy() if out.attention is not None \
        else None  # fmt: skip
    spatial = out.spatial[0, : len(words)].float().cpu().numpy() if out.spatial is not None \
        else None  # fmt: skip
    return temporal, spatial


def draw(batch: FrameBatch, text: str, words: list[str], temporal: np.ndarray | None,
         spatial: np.ndarray | None, out: Path, model_name: str) -> None:
    """Lay out frames, caption and heat maps; readable at 100 % zoom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = batch.frames
    T = len(frames)
    if temporal is not None and temporal.shape[1] != T:
        raise ModelError(f"attention covers {temporal.shape[1]} frames, the clip has {T}")
    n_spatial = min(len(words), 6) if spatial is not None and words else 0
    heat_rows = max(len(words), 1) if temporal is not None else 1
    width = max(8.0, 1.2 * T + 2.0)
    strip_height = 0.8 * width / T + 0.3  # square frames across the figure, plus their times
    heights = [strip_height, 0.35 * heat_rows + 0.8] + [1.6] * (1 if n_spatial else 0)
    fig = plt.figure(figsize=(width, sum(heights) + 0.8), dpi=110)
    grid = fig.add_gridspec(len(heights), 1, height_ratios=heights, hspace=0.35)
    fig.suptitle(f'"{text}"', fontsize=15, fontweight="bold")
    fig.text(0.5, 0.005, f"model: {model_name}", ha="center", fontsize=9, color="0.4")

    strip = grid[0].subgridspec(1, T, wspace=0.04)
    for t in range(T):
        ax = fig.add_subplot(strip[t])
        ax.imshow(frames[t])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{batch.times[t]:.1f}s", fontsize=9)

    ax = fig.add_subplot(grid[1])
    if temporal is None or not words:
        ax.axis("off")
        note = ("the caption is empty" if not words
                else "this model has no attention: every word sees the whole clip")
        ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=11)
    else:
        top = max(float(temporal.max()), 2.0 / T)  # uniform weights stay mid-scale, not "hot"
        im = ax.imshow(temporal, aspect="auto", cmap="magma", vmin=0.0, vmax=top)
        ax.set_yticks(range(len(words)), words, fontsize=11)
        ax.set_xticks(range(T), [f"frame {t + 1}" for t in range(T)], fontsize=9)
        ax.set_xlim(-0.5, T - 0.5)
        for w in range(len(words)):
            for t in range(T):
                value = temporal[w, t]
                ax.text(t, w, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if value > 0.6 * top else "white")
        ax.set_title("attention over frames, per word", fontsize=11)
        fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01)

    if n_spatial:
        cells = grid[2].subgridspec(1, n_spatial, wspace=0.05)
        side = round(float(np.sqrt(spatial.shape[-1])))
        for i in range(n_spatial):
            t = int(temporal[i].argmax()) if temporal is not None else 0
            ax = fig.add_subplot(cells[i])
            ax.imshow(frames[t])
            h, w = frames[t].shape[:2]
            weights = spatial[i, t].reshape(side, side)
            ax.imshow(weights, cmap="magma", alpha=0.55, extent=(0, w, h, 0),
                      interpolation="bilinear")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f'"{words[i]}" @ frame {t + 1}', fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)


