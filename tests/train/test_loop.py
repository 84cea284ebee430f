"""The generic loop: it learns, resumes to the same state, keeps the best and stops early."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from video_mm.train.loop import TrainConfig, fit


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
    return x, y


def _run(
    out: Path,
    *,
    epochs: int = 4,
    crash_at: int | None = None,
    patience: int | None = None,
    target_noise: bool = False,
    lr_scales: dict[str, float] | None = None,
):
    x, y = _data()

    def batches(epoch: int):
        if epoch == crash_at:
            raise KeyboardInterrupt("simulated interruption")
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        return [(x[order[i : i + 16]], y[order[i : i + 16]]) for i in range(0, len(x), 16)]

    torch.manual_seed(123)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))

    def loss_fn(m: nn.Module, batch) -> torch.Tensor:
        xb, yb = batch
        return nn.functional.mse_loss(m(xb).squeeze(-1), yb)

    def evaluate(m: nn.Module) -> dict[str, float]:
        mse = float(nn.functional.mse_loss(m(x).squeeze(-1), y))
        return {"val_loss": mse if not target_noise else 1.0}

    config = TrainConfig(
        epochs=epochs,
        lr=0.05,
        warmup_steps=2,
        mode="min",
        patience=patience,
        progress=False,
        seed=7,
    )
    return model, fit(
        model,
        train_batches=batches,
        loss_fn=loss_fn,
        evaluate=evaluate,
        select_metric="val_loss",
        out_dir=out,
        config=config,
        lr_scales=lr_scales,
    )


def test_lr_scales_give_parts_of_the_model_their_own_rate(tmp_path: Path) -> None:
    """A prefix scaled to 0 keeps its weights; the rest learn at the configured rate."""
    torch.manual_seed(123)
    start = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1)).state_dict()
    model, result = _run(tmp_path, lr_scales={"0.": 0.0})
    assert torch.equal(model[0].weight, start["0.weight"])
    assert not torch.equal(model[2].weight, start["2.weight"])
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    assert sorted(g["initial_lr"] for g in ckpt["optimizer"]["param_groups"]) == [0.0, 0.05]
    _, unscaled = _run(tmp_path / "unscaled")
    assert [h["lr"] for h in result.history] == [h["lr"] for h in unscaled.history]  # logged: lr


def test_fit_learns_and_logs(tmp_path: Path) -> None:
    _, result = _run(tmp_path)
    losses = [row["val_loss"] for row in result.history]
    assert losses[-1] < losses[0] * 0.5
    assert (tmp_path / "last.pt").exists() and (tmp_path / "best" / "model.pt").exists()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert result.best_metric == min(losses)


def test_resume_after_interruption_matches_uninterrupted(tmp_path: Path) -> None:
    straight, _ = _run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", crash_at=2)
    resumed, result = _run(tmp_path / "b")
    assert result.epochs_run == 4
    for p, q in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    assert len(list(csv.DictReader((tmp_path / "b" / "metrics.csv").open()))) == 4


def test_early_stopping(tmp_path: Path) -> None:
    _, result = _run(tmp_path, epochs=10, patience=2, target_noise=True)
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
