"""The one training loop, shared by captioners and retrieval models.

It knows nothing about what is trained: the caller gives batches per epoch, a loss, an evaluation
and the metric to select on. The loop owns what every run needs the same way: AdamW with warmup and
a cosine (or constant) schedule, gradient clipping, AMP on CUDA only, deterministic seeds, a
checkpoint every epoch (``last.pt``) that resumes to the same result, the best model kept by the
selected metric (``best/``), early stopping, a progress bar and ``metrics.csv``.

Resuming gives the same weights as an uninterrupted run provided ``train_batches(epoch)`` depends
only on ``epoch`` (shuffle with a generator seeded from it): every random state the loop touches is
saved with the checkpoint.
"""

from __future__ import annotations

import csv
import math
import os
import random
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from video_mm.artifacts import resolve_device
from video_mm.errors import ConfigError


@dataclass
class TrainConfig:
    """Optimisation settings; every knob of the loop lives here."""

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0  # max global gradient norm; None disables clipping
    warmup_steps: int = 0  # linear warmup from 0 to lr over this many optimizer steps
    schedule: Literal["cosine", "constant", "linear"] = "cosine"  # after warmup, to min_lr_ratio
    min_lr_ratio: float = 0.0
    steps_per_epoch: int | None = None  # needed only when train_batches(e) has no len()
    amp: bool = True  # mixed precision; used only on CUDA
    seed: int = 0
    patience: int | None = None  # epochs without improvement before stopping; None: never stop
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    mode: Literal["max", "min"] = "max"  # whether the selected metric is better high or low
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    progress: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a config-file table, refusing keys the loop does not know."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training settings: {', '.join(unknown)}")
        values = dict(data)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        config = cls(**values)
        if config.epochs < 1 or config.lr <= 0:
            raise ConfigError("epochs must be >= 1 and lr > 0")
        return config


@dataclass
class TrainResult:
    best_metric: float | None
    best_epoch: int | None  # 1-based
    epochs_run: int  # total epochs completed, resumed ones included
    stopped_early: bool
    out_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    unvalidated: str = ""  # why the run had no validation (best/ is then the last epoch)

    @property
    def best_dir(self) -> Path:
        return self.out_dir / "best"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device``; other values pass through."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # NamedTuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def lr_lambda(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step ``step``."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        span = max(1, total_steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        shape = (
            0.5 * (1 + math.cos(math.pi * progress))
            if config.schedule == "cosine"
            else (1 - progress)
        )
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * shape

    return factor


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_state_dict(model: nn.Module, best_dir: Path) -> None:
    """Default way to keep the best model: its ``state_dict`` in ``best/model.pt``."""
    best_dir.mkdir(parents=True, exist_ok=True)
    _atomic_save(model.state_dict(), best_dir / "model.pt")


def _write_csv(path: Path, history: Sequence[dict[str, float]]) -> None:
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def param_groups(
    model: nn.Module, lr: float, lr_scales: Mapping[str, float]
) -> list[dict[str, Any]]:
    """The trainable parameters, one optimizer group per learning rate (the first matching
    prefix of ``lr_scales`` scales ``lr``; the rest train at ``lr``)."""
    groups: dict[float, list[Tensor]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = next((s for prefix, s in lr_scales.items() if name.startswith(prefix)), 1.0)
            groups.setdefault(lr * scale, []).append(p)
    return [{"params": ps, "lr": group_lr} for group_lr, ps in groups.items()]


def _is_better(value: float, best: float | None, config: TrainConfig) -> bool:
    if best is None:
        return True
    if config.mode == "max":
        return value > best + config.min_delta
    return value < best - config.min_delta


def fit(
    model: nn.Module,
    *,
    train_batches: Callable[[int], Iterable[Any]],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    evaluate: Callable[[nn.Module], dict[str, float]] | None,
    select_metric: str,
    out_dir: Path,
    config: TrainConfig,
    resume: bool = True,
    save_best: Callable[[nn.Module, Path], None] = save_state_dict,
    unvalidated: str = "",
    lr_scales: Mapping[str, float] | None = None,
) -> TrainResult:
    """Train ``model`` for ``config.epochs`` epochs (``train_batches`` gets the 0-based epoch).

    ``loss_fn(model, batch)`` gets the batch already moved to the model's device and returns a
    scalar. ``evaluate(model)`` runs in eval mode under ``torch.no_grad()`` and returns metrics that
    must include ``select_metric``. ``save_best(model, out_dir / "best")`` writes the best model
    (a state dict by default; captioners pass their ``save_pretrained``).

    ``lr_scales`` (parameter-name prefix -> multiplier of ``config.lr``) gives parts of the model
    their own learning rate, e.g. a pretrained or randomly initialised CNN trained end to end,
    which Adam at the head's rate would move by a large share of its weights at every step.

    ``evaluate=None`` trains without validation (``unvalidated`` says why, and is printed): every
    epoch's model is saved as ``best/``, so it holds the last one, and nothing stops early.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    use_amp = config.amp and device.type == "cuda"
    seed_everything(config.seed)
    model.to(device)

    steps_per_epoch = config.steps_per_epoch
    if steps_per_epoch is None:
        first = train_batches(0)
        if not hasattr(first, "__len__"):
            raise ConfigError("train_batches(epoch) has no len(); set steps_per_epoch")
        steps_per_epoch = len(first)  # type: ignore[arg-type]
    total_steps = max(1, steps_per_epoch * config.epochs)

    optimizer = torch.optim.AdamW(
        param_groups(model, config.lr, lr_scales or {}),
        lr=config.lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config, total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best, best_epoch, bad_epochs = 0, None, None, 0
    history: list[dict[str, float]] = []
    last_path = out_dir / "last.pt"
    if resume and last_path.exists():
        ckpt = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        start_epoch, best, best_epoch = ckpt["epoch"], ckpt["best"], ckpt["best_epoch"]
        bad_epochs, history = ckpt["bad_epochs"], ckpt["history"]

    if evaluate is None and config.progress:
        tqdm.write(f"no validation: {unvalidated}", file=sys.stderr)
    stopped_early = config.patience is not None and bad_epochs >= config.patience
    for epoch in range(start_epoch, config.epochs):
        if stopped_early:
            break
        model.train()
        total, count = 0.0, 0
        batches = train_batches(epoch)
        bar = tqdm(
            batches,
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not config.progress,
            leave=False,
        )
        for batch in bar:
            batch = to_device(batch, device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                loss = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total += float(loss.detach())
            count += 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()

        model.eval()
        with torch.no_grad():
            metrics = evaluate(model) if evaluate is not None else {}
        if evaluate is not None and select_metric not in metrics:
            raise ConfigError(f"evaluate() returned no {select_metric!r}: {sorted(metrics)}")
        row = {
            "epoch": epoch + 1,
            "train_loss": total / max(count, 1),
            "lr": max(scheduler.get_last_lr()),  # the configured rate, not a scaled group's
            **{k: float(v) for k, v in metrics.items()},
        }
        history.append(row)
        if evaluate is None:  # nothing to select on: the latest epoch is the one kept
            best_epoch = epoch + 1
            save_best(model, out_dir / "best")
        elif _is_better(value := float(metrics[select_metric]), best, config):
            best, best_epoch, bad_epochs = value, epoch + 1, 0
            save_best(model, out_dir / "best")
        else:
            bad_epochs += 1
        if config.progress:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
            tqdm.write(f"epoch {epoch + 1}: {shown}", file=sys.stderr)
        _write_csv(out_dir / "metrics.csv", history)
        _atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(),
                "epoch": epoch + 1,
                "best": best,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "history": history,
                "config": asdict(config),
                "select_metric": select_metric,
            },
            last_path,
        )
        stopped_early = config.patience is not None and bad_epochs >= config.patience

    return TrainResult(
        best_metric=best,
        best_epoch=best_epoch,
        epochs_run=len(history),
        stopped_early=stopped_early,
        out_dir=out_dir,
        history=history,
        unvalidated=unvalidated if evaluate is None else "",
    )
