"""``vmm models adapt-bn``: a random frame encoder's batch norms estimated on a dataset's frames,
written as weights a feature recipe loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from video_mm.artifacts import FeatureRecipe
from video_mm.cli import app
from video_mm.data.datasets import by_split, load_dataset
from video_mm.data.frames import sample_dataset_frames
from video_mm.errors import ConfigError
from video_mm.features.backbones import create_backbone
from video_mm.features.batchnorm import batchnorms, estimate_batchnorm


def test_adapt_bn_writes_weights_a_recipe_loads(synth: Path, isolated: Path) -> None:
    out = isolated / "resnet18_bn.safetensors"
    args = ["models", "adapt-bn", "--data", str(synth), "--out", str(out), "--n-frames", "4",
            "--size", "64", "--batch-size", "16", "--json"]  # fmt: skip

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # --json: nothing else on stdout
    train = by_split(load_dataset(synth), "train")
    assert summary["videos"] == len(train) and summary["frames"] == 4 * len(train)
    assert summary["batchnorm_layers"] == 20 and summary["weights"] == str(out)

    adapted = create_backbone("resnet18", str(out))  # what [features] weights = OUT builds
    assert adapted.weights_id.startswith("sha256:")
    # The same statistics as estimating directly on the same frames, in the same batches.
    recipe = FeatureRecipe(n_frames=4, size=64)
    frames = np.concatenate(list(sample_dataset_frames(train, recipe, progress=False).values()))
    direct = create_backbone("resnet18")
    estimate_batchnorm(direct, frames, batch_size=16)
    for a, b in zip(batchnorms(adapted), batchnorms(direct), strict=True):
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)
    assert batchnorms(adapted)[0].running_mean.abs().sum() > 0


def test_adapt_bn_on_a_split_the_dataset_lacks_says_so(synth: Path, isolated: Path) -> None:
    args = ["models", "adapt-bn", "--data", str(synth), "--out", str(isolated / "x.safetensors"),
            "--split", "val"]  # fmt: skip

    result = CliRunner().invoke(app, args)

    assert isinstance(result.exception, ConfigError)  # main() prints it as one line, exit 2
    assert "no 'val' videos" in str(result.exception)
    assert not (isolated / "x.safetensors").exists()
