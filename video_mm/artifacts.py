"""A saved model: the one owner of its folder format, where to find it, and what it reads.

Captioners and retrieval models are saved the same way, as a folder that needs nothing else::

    config.json        format, the model's config, the backbone it expects, data and scores
    model.safetensors  the weights
    vocab.json         the vocabulary (when the model has one)
    features.json      the feature recipe: how its input features are computed (sampling,
                       pooling, the training set's normalisation, the precision they had);
                       absent in hand-made folders
    README.md          the model card: YAML metadata (``provenance.front_matter``: frame encoder,
                       data, metrics and the command, date) then a short description, so the
                       folder can be pushed to the Hugging Face hub unchanged

A training run folder (``last.pt``, ``metrics.csv``, ``best/``) works wherever a model is
expected: :func:`model_folder` resolves it to its ``best/``. The model kinds (``models.factory``,
``retrieval.model``) build their networks from what :func:`read_saved` returns and write through
:func:`write_saved`; training, evaluation and the pipeline only ever see those.

This module sits below every model kind (no ``models``, ``data`` or ``train`` imports), so the
feature layer can share :func:`resolve_device` too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file, save_model
from torch import Tensor, nn

from video_mm import provenance
from video_mm.errors import ConfigError, ModelError, WeightsNotFound
from video_mm.settings import FeatureSettings, SamplingSettings, Settings

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
FEATURES_FILE = "features.json"
CARD_FILE = "README.md"
BEST = "best"  # a training run keeps its best model here

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    """The features a model was trained on: the pipeline must compute the same ones."""

    name: str
    weights: str  # what create_backbone was given
    weights_id: str = ""  # what it resolved to (a sha256, or the random seed)
    dim: int = 0
    grid: bool = False  # the model also needs the CNN grid
    input: str = "features"  # features | frames (end-to-end LRCN: preprocessed frames)


@dataclass
class FeatureRecipe:
    """How per-frame features are computed; saved with the model so eval, explain and the
    pipeline redo it exactly."""

    backbone: str = "resnet18"
    weights: str = "none"
    n_frames: int = 8
    size: int = 112
    grid_pool: int = 1  # 1: globally pooled features; k > 1: k x k cells concatenated
    normalize: bool = True  # standardise each dimension with the training set's statistics
    mean: list[float] | None = None  # filled in by training when normalize is on
    std: list[float] | None = None
    # the features.precision training computed them in (float32 | int8 | bfloat16). Folders saved
    # before it was recorded load as float32, which they were unless int8 or bfloat16 was set.
    precision: str = "float32"

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(sampler="uniform", n_frames=self.n_frames, size=self.size)

    def feature_settings(self, base: FeatureSettings | None = None) -> FeatureSettings:
        """``base`` (the configured features: device, batch size, precision) computing this
        recipe's backbone and weights."""
        return (base or FeatureSettings()).model_copy(
            update={"backbone": self.backbone, "weights": self.weights})

    def fit_normalization(self, feats: Sequence[np.ndarray]) -> None:
        """Per-dimension mean and std over every training frame."""
        if self.normalize:
            frames = np.concatenate(list(feats)).astype(np.float64)
            self.mean = frames.mean(0).astype(np.float32).tolist()
            self.std = (frames.std(0) + 1e-4).astype(np.float32).tolist()

    def apply(self, feats: np.ndarray) -> np.ndarray:
        """Raw backbone output ``[T, D]`` -> what the model reads."""
        if self.mean is None or self.std is None:
            return feats.astype(np.float32)
        return ((feats - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)


_precision_warned: set[tuple[str, str]] = set()


def warn_precision(
    model: str | Path, recipe: FeatureRecipe | None, settings: FeatureSettings | None
) -> None:
    """Say (once per model and served precision, per process) that the model saved in ``model``
    is served features (``settings``; None: the defaults) of another precision than it was
    trained on. Not refused: int8 serving of a float32 model is the intended speed option, but
    its cost in quality should be a choice, not silent."""
    name, served = model_name(model), (settings or FeatureSettings()).precision
    if recipe is None or recipe.precision == served or (name, served) in _precision_warned:
        return
    _precision_warned.add((name, served))
    log.warning(
        "%s was trained on %s features but is served %s ones (features.precision): int8 is "
        "faster on CPU at a measured cost in quality (BENCHMARKS.md, 'int8 features: caption and "
        "search quality'); set features.precision = %r to serve what it was trained on",
        name, recipe.precision, served, recipe.precision,
    )


def pool_grid(grid: np.ndarray, k: int) -> np.ndarray:
    """``[T, C, h, w]`` -> ``[T, C * k * k]``: the feature map averaged over a k x k layout
    (the recipe's ``grid_pool``)."""
    pooled = F.adaptive_avg_pool2d(torch.from_numpy(np.ascontiguousarray(grid)).float(), k)
    return pooled.flatten(1).numpy()


# -- running a model ------------------------------------------------------------------------------


def resolve_device(device: str | None) -> torch.device:
    """``None``/``auto``: the first GPU when there is one, else the CPU; a named device that
    cannot be used is a clear ``ConfigError``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"bad device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device is {device!r} but no CUDA device is available")
    return dev


def pad_features(clips: Sequence[np.ndarray | Tensor]) -> tuple[Tensor, Tensor]:
    """Clips of different lengths ``[T, ...]`` -> ``feats [B, T, ...]`` (float32, zero-padded)
    and ``mask [B, T]`` (True on real frames)."""
    tensors = [torch.as_tensor(np.asarray(c) if not isinstance(c, Tensor) else c).float()
               for c in clips]
    if not tensors or any(t.dim() < 2 or len(t) == 0 or t.shape[1:] != tensors[0].shape[1:]
                          for t in tensors):
        raise ModelError("every clip needs a non-empty [T, ...] array of the same shape")
    T = max(len(t) for t in tensors)
    feats = torch.zeros(len(tensors), T, *tensors[0].shape[1:])
    mask = torch.zeros(len(tensors), T, dtype=torch.bool)
    for i, t in enumerate(tensors):
        feats[i, : len(t)], mask[i, : len(t)] = t, True
    return feats, mask


# -- the folder -----------------------------------------------------------------------------------


def model_folder(path: str | Path) -> Path:
    """The saved model at ``path``: the folder itself, or a training run's ``best/``."""
    folder = Path(path).expanduser()
    if not (folder / CONFIG_FILE).is_file() and (folder / BEST / CONFIG_FILE).is_file():
        return folder / BEST
    return folder


def named_folder(path: str | Path) -> Path:
    """The folder a model is known by: a training run for its ``best/``, else the folder itself."""
    folder = Path(path).expanduser()
    return folder.parent if folder.name == BEST else folder


def model_name(path: str | Path) -> str:
    """The name a saved model is served and recorded under (catalog rows, search hits, notes):
    its folder's name, or its run's name for a run folder and the run's ``best/`` alike."""
    return named_folder(path).name


class _Saveable(Protocol):
    def save(self, path: Path) -> None: ...


@dataclass(frozen=True)
class SavedModel:
    """What a saved model folder holds, read and checked once."""

    folder: Path
    config: dict[str, Any]
    weights: Path
    recipe: FeatureRecipe | None  # features.json, None when the folder has none

    @property
    def vocab_path(self) -> Path | None:
        name = self.config.get("vocab")
        return self.folder / name if name else None

    @property
    def backbone(self) -> BackboneSpec | None:
        b = self.config.get("backbone")
        return BackboneSpec(**b) if b else None

    def feature_recipe(self) -> FeatureRecipe:
        """The recipe; for folders saved without one, the defaults on the model's backbone."""
        if self.recipe is not None:
            return self.recipe
        b = self.config.get("backbone") or {}
        return FeatureRecipe(backbone=b.get("name", "resnet18"), weights=b.get("weights", "none"))


def _read_recipe(path: Path) -> FeatureRecipe | None:
    if not path.is_file():
        return None
    try:
        return FeatureRecipe(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a feature recipe ({exc})") from exc


def read_saved(path: str | Path, *, kind: str, fmt: str | None = None) -> SavedModel:
    """The config, weights path and recipe of a saved model (or run) folder, with a clear error
    for each way the folder can be wrong; ``fmt`` checks the config's ``format``."""
    folder = model_folder(path)
    config_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file():
        raise ConfigError(f"{path} is not a saved {kind}: config.json is missing")
    if not weights.is_file():
        raise WeightsNotFound(weights, f"A saved {kind} holds model.safetensors.")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{config_path}: not valid JSON ({exc})") from exc
    if fmt is not None and config.get("format") != fmt:
        raise ConfigError(f"{config_path}: format {config.get('format')!r}, expected {fmt!r}")
    return SavedModel(folder, config, weights, _read_recipe(folder / FEATURES_FILE))


def load_recipe(path: str | Path) -> FeatureRecipe:
    """The features a saved model (or run) expects; defaults for folders saved without a recipe."""
    folder = model_folder(path)
    recipe = _read_recipe(folder / FEATURES_FILE)
    if recipe is not None:
        return recipe
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not a saved model ({exc})") from exc
    return SavedModel(folder, config, folder / WEIGHTS_FILE, None).feature_recipe()


def write_saved(
    directory: str | Path, *, config: dict[str, Any], weights: nn.Module | dict[str, Tensor],
    card: str, vocab: _Saveable | None = None, recipe: FeatureRecipe | None = None,
) -> Path:
    """Write a model folder: ``config`` (its ``vocab`` key is set here), the weights (a module, or
    a state dict of what to keep), the vocabulary, the recipe and the card; returns it."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = provenance.stamp({**config, "vocab": VOCAB_FILE if vocab is not None else None})
    if isinstance(weights, nn.Module):
        save_model(weights, str(out / WEIGHTS_FILE))
    else:
        save_file(weights, str(out / WEIGHTS_FILE))
    if vocab is not None:
        vocab.save(out / VOCAB_FILE)
    if recipe is not None:
        (out / FEATURES_FILE).write_text(json.dumps(asdict(recipe), indent=2))
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    (out / CARD_FILE).write_text(provenance.card(config, card))
    return out


# -- where the served models are ------------------------------------------------------------------


def models_root(settings: Settings) -> Path:
    """Where ``vmm demo`` saves the models the pipeline serves when none are configured."""
    return settings.data_dir / "models"


def model_dirs(settings: Settings) -> tuple[list[Path], Path | None]:
    """The captioner and retrieval model folders (or runs) the pipeline serves."""
    return captioner_dirs(settings), retrieval_dir(settings)


def captioner_dirs(settings: Settings) -> list[Path]:
    """The captioners to serve: ``models.captioners``, else every folder ``vmm demo`` saved under
    ``data_dir/models/captioners``. Each is a saved model or a training run."""
    if settings.models.captioners:
        paths = [Path(p).expanduser() for p in settings.models.captioners]
    else:
        found = models_root(settings) / "captioners"
        paths = sorted(p for p in found.iterdir() if p.is_dir()) if found.is_dir() else []
    for path in paths:
        _check_dir(path, "captioner")
    return paths


def retrieval_dir(settings: Settings) -> Path | None:
    """The retrieval model to embed and search with: ``models.retrieval``, else the one
    ``vmm demo`` saved under ``data_dir/models/retrieval`` (None when there is none)."""
    if settings.models.retrieval:
        return _check_dir(Path(settings.models.retrieval).expanduser(), "retrieval")
    default = models_root(settings) / "retrieval"
    return default if default.is_dir() else None


def reranker_dir(settings: Settings) -> Path | None:
    """The re-ranker search uses when ``search.rerank_k > 0``: ``models.reranker``, else the one
    saved under ``data_dir/models/reranker`` (None when there is none)."""
    if settings.models.reranker:
        return _check_dir(Path(settings.models.reranker).expanduser(), "re-ranker")
    default = models_root(settings) / "reranker"
    return default if default.is_dir() else None


def _check_dir(path: Path, kind: str) -> Path:
    if not path.is_dir():
        raise ConfigError(f"{kind} model directory not found: {path}")
    return path
