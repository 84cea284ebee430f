"""``vmm models zero-shot | list | pull`` as a user runs them: real processes, a pre-populated
Hugging Face cache under a temporary HF_HOME, the network off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import hub_cache_entry

REPO = Path(__file__).resolve().parents[2]
REV = "feedfacefeedfacefeedfacefeedfacefeedface"


def vmm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "video_mm", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **env},
    )


@pytest.mark.integration
def test_zero_shot_list_pull_and_load_from_the_hub_cache(
    tiny_hf: dict[str, Path], tmp_path: Path
) -> None:
    maker = {"VMM_DATA_DIR": str(tmp_path / "maker")}
    made = vmm("models", "zero-shot", f"hf:{tiny_hf['clip']}", "--out", str(tmp_path / "zs"),
               "--json", env=maker)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["kind"] == "retrieval"
    card = (tmp_path / "zs" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["video_mm"]["metrics_command"].startswith("python -m video_mm models zero-shot")

    # published: the folder as it is, in a hub cache another machine filled
    hf_home = tmp_path / "hf"
    hub_cache_entry(hf_home, "tiny-org/clip-zs", tmp_path / "zs", REV)
    user = {"VMM_DATA_DIR": str(tmp_path / "user"), "HF_HOME": str(hf_home)}
    empty = vmm("models", "list", "--json", env=user)
    assert empty.returncode == 0, empty.stderr and json.loads(empty.stdout) == []
    pulled = vmm("models", "pull", "tiny-org/clip-zs", "--json", env=user)
    assert pulled.returncode == 0, pulled.stderr
    info = json.loads(pulled.stdout)
    dest = tmp_path / "user" / "models" / "pulled" / "tiny-org--clip-zs"
    assert info["path"] == str(dest) and info["revision"] == REV
    assert info["serve"] == {"VMM_MODELS__RETRIEVAL": str(dest)}
    assert not any(p.is_symlink() for p in dest.rglob("*"))  # bytes copied out of the cache

    served = vmm("models", "list", "--json", env={**user, "VMM_MODELS__RETRIEVAL": str(dest)})
    [row] = json.loads(served.stdout)
    assert row["served"] and row["frame_encoder"] == f"hf:{tiny_hf['clip']}"
    assert row["notes"] == ["zero-shot: pretrained image-text model, not trained on video"]
    table = vmm("models", "list", env=user)
    assert table.returncode == 0 and "tiny-org--clip-zs" in table.stdout

    # from_pretrained takes the repo id itself, through the cache
    code = ("from video_mm.retrieval.model import from_pretrained\n"
            "m = from_pretrained('tiny-org/clip-zs')\n"
            "print(m.name, m.embed_texts(['a dog']).shape)\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(REPO),
                                              "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)})
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split()[0].endswith("zeroshot") and "(1, 24)" in loaded.stdout

    missing = vmm("models", "pull", "tiny-org/nothing", env=user)
    assert missing.returncode == 2 and "hf download tiny-org/nothing" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_freeze_splits_an_end_to_end_captioner(shared_data: Path, msvd14_captions: dict,
                                               tmp_path: Path) -> None:
    """`vmm models freeze`: the end-to-end captioner becomes a frame encoder that other models
    take as [features] weights (retrieval training reads features through extract_features) and
    a captioner the pipeline serves on that encoder's features."""
    import torch

    from video_mm.artifacts import BackboneSpec, FeatureRecipe
    from video_mm.data.datasets import load_dataset
    from video_mm.data.features import extract_features
    from video_mm.data.vocab import Vocabulary
    from video_mm.models import create_model, from_pretrained, load_config, save_pretrained
    from video_mm.pipeline.stages import feature_spec
    from video_mm.settings import Settings

    vocab = Vocabulary.build([c for cs in msvd14_captions.values() for c in cs])
    torch.manual_seed(0)
    model = create_model(load_config("lrcn_e2e") | {"frame_size": 64}, len(vocab), 0)
    e2e = save_pretrained(tmp_path / "e2e", model, vocab,
                          BackboneSpec("resnet18", "none", model.cnn.weights_id, 512,
                                       input="frames"),
                          recipe=FeatureRecipe(n_frames=2, size=64))
    done = vmm("models", "freeze", str(e2e), "--out", str(tmp_path / "frozen"), "--json", env={})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    weights = Path(summary["weights"])
    assert weights == tmp_path / "frozen" / "backbone.safetensors" and weights.is_file()

    records = load_dataset(shared_data / "msvd14")[:2]
    recipe = FeatureRecipe(backbone="resnet18", weights=str(weights), n_frames=2, size=64)
    feats = extract_features(records, recipe, progress=False)
    assert {f.shape for f in feats.values()} == {(2, 512)}
    served = from_pretrained(summary["captioner"])
    spec = feature_spec(served, tmp_path / "frozen", Settings(data_dir=tmp_path / "vmm"))
    assert spec.features.weights == str(weights.resolve())
    again = vmm("models", "freeze", summary["captioner"], "--out", str(tmp_path / "x"), env={})
    assert again.returncode != 0 and "already reads features" in again.stderr
