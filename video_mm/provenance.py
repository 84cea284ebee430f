"""Where a saved model came from, and what that means for its output.

Every saved model's ``config.json`` says which frame encoder (and weights) it reads, what it was
trained on, its scores and, since this module, when and by which command it was made. From that:

- :func:`notes` gives the warnings shown wherever the model's output is (captions, search hits,
  the API, the page, ``vmm models list``): a model trained on the synthetic benchmark, or on a
  randomly initialised frame encoder, says so, because its output on real video means nothing;
- :func:`front_matter` gives the model card's YAML metadata (the Hugging Face model-card format:
  ``library_name``, ``tags``, ``base_model``, ``datasets`` plus a ``video_mm`` block), so a saved
  folder can be pushed to the hub unchanged and read back by :func:`describe`.

No torch here: surfaces read provenance without loading a model.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

SYNTHETIC = "trained on synthetic shapes: not for real video"
RANDOM_ENCODER = "frame encoder has random weights: not for real video"
ZERO_SHOT = "zero-shot: pretrained image-text model, not trained on video"
KINDS = {"video-mm-captioner": "captioner", "video-mm-retrieval": "retrieval"}
_SYNTH = re.compile(r"\bsynth", re.IGNORECASE)


def stamp(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``provenance`` (creation date and the command line that made it) added
    when it has none yet (a model copied or exported keeps its own)."""
    if "provenance" in config:
        return config
    command = ""
    if sys.argv and sys.argv[0]:
        command = " ".join([_program(sys.argv[0]), shlex.join(sys.argv[1:])]).strip()
    return {**config, "provenance": {
        "created": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "command": command,
    }}


def _program(argv0: str) -> str:
    """``vmm`` for the console script, ``python -m pkg`` for ``python -m pkg``."""
    path = Path(argv0)
    return f"python -m {path.parent.name}" if path.name == "__main__.py" else path.name


def kind_of(config: dict[str, Any]) -> str:
    return KINDS.get(str(config.get("format", "")).split("/")[0], "model")


def frame_encoder(config: dict[str, Any]) -> tuple[str, str]:
    """(backbone name, weights) the model's input features come from."""
    b = config.get("backbone") or {}
    return str(b.get("name", "?")), str(b.get("weights", "?"))


def notes(config: dict[str, Any]) -> list[str]:
    """The warnings this model's output carries wherever it is shown (empty: none)."""
    out = []
    trained_on = str(config.get("trained_on", ""))
    if config.get("synthetic") or _SYNTH.search(trained_on):
        out.append(SYNTHETIC)
    name, weights = frame_encoder(config)
    if weights == "none" and not name.startswith("hf:") and name != "?":
        out.append(RANDOM_ENCODER)
    if trained_on.startswith("zero-shot"):
        out.append(ZERO_SHOT)
    return out


def front_matter(config: dict[str, Any]) -> str:
    """The YAML block (between ``---`` lines) that opens the model card."""
    name, weights = frame_encoder(config)
    kind = kind_of(config)
    prov = config.get("provenance", {})
    base = name.removeprefix("hf:") if name.startswith("hf:") and "/" in name else None
    meta: dict[str, Any] = {
        "library_name": "video-mm",
        "tags": ["video-mm", "video-captioning" if kind == "captioner" else
                 "video-text-retrieval", *(["synthetic-data"] if SYNTHETIC in notes(config)
                                           else [])],
    }
    if base and not Path(base).is_absolute():
        meta["base_model"] = base
    if config.get("trained_on") and not str(config["trained_on"]).startswith("zero-shot"):
        meta["datasets"] = [str(config["trained_on"])]
    meta["video_mm"] = {
        "kind": kind,
        "format": config.get("format"),
        "name": (config.get("model") or {}).get("name"),
        "frame_encoder": {"backbone": name, "weights": weights,
                          "weights_id": (config.get("backbone") or {}).get("weights_id", "")},
        "trained_on": config.get("trained_on", ""),
        "metrics": config.get("scores", {}),
        "metrics_command": prov.get("command", ""),
        "created": prov.get("created", ""),
        "notes": notes(config),
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"


def card(config: dict[str, Any], body: str) -> str:
    """A model card: YAML metadata, the body, then the warnings in words."""
    warn = notes(config)
    tail = "" if not warn else "\n## Warnings\n\n" + "".join(f"- {w}\n" for w in warn)
    return front_matter(config) + body.rstrip("\n") + "\n" + tail


@dataclass
class ModelInfo:
    """One installed model as ``vmm models list`` shows it."""

    name: str
    kind: str
    path: str
    frame_encoder: str
    weights: str
    trained_on: str
    precision: str = ""  # of the frame encoder's features in training ("": no features.json)
    scores: dict[str, float] = field(default_factory=dict)
    created: str = ""
    command: str = ""
    notes: list[str] = field(default_factory=list)
    served: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(folder: Path, *, served: bool = False) -> ModelInfo | None:
    """The provenance of the saved model in ``folder`` (a run's ``best/`` too); None when the
    folder holds no video-mm model."""
    # artifacts stamps and writes cards through this module: read folders through its rule here
    from video_mm.artifacts import (
        CONFIG_FILE,
        FEATURES_FILE,
        FeatureRecipe,
        model_folder,
        model_name,
    )

    config_file = model_folder(folder) / CONFIG_FILE
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None
    if kind_of(config) == "model":
        return None
    name, weights = frame_encoder(config)
    prov = config.get("provenance", {})
    try:
        recipe = json.loads((config_file.parent / FEATURES_FILE).read_text())
        precision = str(recipe.get("precision", FeatureRecipe.precision))
    except (OSError, ValueError, AttributeError):
        precision = ""
    return ModelInfo(
        name=model_name(folder), kind=kind_of(config), path=str(folder), frame_encoder=name,
        weights=weights, trained_on=str(config.get("trained_on", "")), precision=precision,
        scores=dict(config.get("scores", {})), created=prov.get("created", ""),
        command=prov.get("command", ""), notes=notes(config), served=served,
    )


def notes_by_name(folders: list[Path]) -> dict[str, list[str]]:
    """Model name (``artifacts.model_name``, as the catalog records it) -> its warnings."""
    out = {}
    for folder in folders:
        info = describe(folder)
        if info is not None:
            out[info.name] = info.notes
    return out
