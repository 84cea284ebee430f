"""The README's flow, run as written on a small synthetic set: `vmm train captioner` for every
architecture (grid models included) and `vmm train retrieval` into run folders, `vmm eval` on those
run folders, then the pipeline serving all of them (run folders as configured models): every
captioner's stored caption of a clip is the caption `vmm eval` gives the same video."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from video_mm.settings import Settings, get_settings

pytestmark = pytest.mark.integration

BACKBONE = "mobilenet_v3_small"  # random weights; the cheapest backbone
# name -> (arch, features.grid_pool): every arch `vmm train captioner` makes, pooled and gridded
CAPTIONERS = {
    "meanpool": ("meanpool", 1),
    "lrcn": ("lrcn", 2),
    "attention": ("attention", 2),
    "attention-spatial": ("attention-spatial", 2),
}


@pytest.fixture(scope="module")
def runs(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folders trained through the CLI, 1-2 epochs each, without validation (there is no
    val split), which the trainers say."""
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("VMM_DATA_DIR", str(root / "vmm"))
    get_settings.cache_clear()
    from video_mm.cli import app

    runner = CliRunner()
    for name, (arch, k) in CAPTIONERS.items():
        config = root / f"{name}.toml"
        config.write_text(
            "batch_size = 16\n[train]\nepochs = 2\nlr = 3e-3\nprogress = false\n"
            f"[features]\nn_frames = 4\nsize = 64\nbackbone = '{BACKBONE}'\ngrid_pool = {k}\n"
            "[model]\nembed_dim = 16\nhidden_dim = 32\n"
        )
        res = runner.invoke(app, ["train", "captioner", "--data", str(synth), "--arch", arch,
                                  "--out", str(root / name), "--config", str(config), "--json"])
        assert res.exit_code == 0, res.output
        assert "no validation" in res.stderr
        assert json.loads(res.stdout)["best_epoch"] == 2
    config = root / "retrieval.toml"
    config.write_text(
        "batch_size = 8\n[train]\nepochs = 1\nprogress = false\n"
        f"[features]\nn_frames = 4\nsize = 64\nbackbone = '{BACKBONE}'\n"
        "[model]\nembed_dim = 32\n"
    )
    res = runner.invoke(app, ["train", "retrieval", "--data", str(synth), "--out",
                              str(root / "retrieval"), "--config", str(config), "--json"])
    assert res.exit_code == 0, res.output
    assert "no validation" in res.stderr and "--val-split" in res.stderr
    yield root
    mp.undo()
    get_settings.cache_clear()


def test_readme_flow_evaluates_run_folders_and_the_pipeline_serves_every_arch(
    synth: Path, runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from video_mm.cli import app
    from video_mm.pipeline.dispatch import index_paths
    from video_mm.pipeline.runner import context

    monkeypatch.setenv("VMM_DATA_DIR", str(runs / "vmm"))
    get_settings.cache_clear()
    runner = CliRunner()
    expected: dict[str, dict[str, str]] = {}
    for name in CAPTIONERS:  # `vmm eval captioner --model RUN`: the run folder, as the README
        res = runner.invoke(app, ["eval", "captioner", "--model", str(runs / name), "--data",
                                  str(synth), "--split", "all", "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["n_videos"] == 16
        rows = json.loads((runs / name / "predictions_all.json").read_text())["predictions"]
        expected[name] = {r["video_id"]: r["caption"] for r in rows}
    res = runner.invoke(app, ["eval", "retrieval", "--model", str(runs / "retrieval"), "--data",
                              str(synth), "--split", "all", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_clips"] == 16

    settings = Settings(
        data_dir=tmp_path / "vmm",
        segment={"method": "fixed", "window_s": 60.0, "stride_s": 60.0},  # one clip a video
        features={"backbone": BACKBONE, "weights": "none"},
        models={"captioners": [str(runs / n) for n in CAPTIONERS],
                "retrieval": str(runs / "retrieval")},
    )
    videos = sorted((synth / "videos").glob("*.mp4"))[:4]
    rows = index_paths(videos, settings, queue=False, progress=False)
    assert [r["state"] for r in rows] == ["done"] * len(videos), rows
    catalog = context(settings).catalog
    for video, row in zip(videos, rows, strict=True):
        stored = {c.model: c.text for c in catalog.get_captions(video_id=row["video_id"])}
        assert stored == {name: expected[name][video.stem] for name in CAPTIONERS}
    assert len(catalog.get_captions()) == len(videos) * len(CAPTIONERS)
