"""Captioners on the synthetic benchmark: test, compositional test and the order subset.

    VMM_DATA_DIR=/tmp/vmmdata .venv/bin/python benchmarks/captioning_synth.py \
        --data /tmp/bench --runs /tmp/bench_runs

Writes the benchmark first if DATA is empty (``vmm synth DATA --n-videos 800 --seed 0``), trains
each model with ``configs/train/synth.toml`` (a finished run in RUNS/<name> is reused: training
resumes from its last.pt), evaluates with beam search 3 and prints one table; the ratio column is
CIDEr-D on the order subset relative to mean-pool, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from video_mm.data.synth import generate
from video_mm.settings import get_settings
from video_mm.train.captioning import CaptionTrainConfig, evaluate_captioner, train_captioner

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train" / "synth.toml"
MODELS: dict[str, tuple[str, dict, dict]] = {  # name -> (arch, trainer overrides, model overrides)
    "meanpool": ("meanpool", {}, {}),
    "lrcn-input": ("lrcn", {}, {"conditioning": "input"}),
    "lrcn-init": ("lrcn", {}, {"conditioning": "init"}),
    "lrcn-both": ("lrcn", {}, {"conditioning": "both"}),
    "attention": ("attention", {}, {}),
    "attention-no-motion": ("attention", {}, {"motion_dim": 0}),  # ablation: frames alone
    "attention-dot": ("attention", {}, {"attention": "dot"}),  # 256-d values, not 2,304-d
    "attention-spatial": ("attention-spatial", {}, {}),
    "attention-ss": ("attention", {"scheduled_sampling": 0.25}, {}),
    "attention-scst": ("attention", {"scst_epochs": 3}, {}),
}
EVALS = (("test", None), ("compositional", None), ("test", "order"), ("compositional", "order"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/bench"))
    parser.add_argument("--runs", type=Path, default=Path("/tmp/bench_runs"))
    parser.add_argument("--n-videos", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=None, help="Override the config's epochs.")
    parser.add_argument("--suffix", default="", help="Run folder suffix, e.g. --suffix=-20ep.")
    parser.add_argument("--train-seed", type=int, default=None,
                        help="Override the config's training seed (run-to-run spread).")
    args = parser.parse_args()
    if not (args.data / "annotations.json").exists():
        generate(args.data, args.n_videos, args.seed)
    settings = get_settings()
    cache = Path(settings.features.cache_url or settings.data_dir / "features")
    rows = {}
    for name in args.models:
        arch, overrides, model_overrides = MODELS[name]
        config = CaptionTrainConfig.load(CONFIG, epochs=args.epochs, seed=args.train_seed,
                                         **overrides)
        config.model |= model_overrides
        start = time.process_time()
        result = train_captioner(
            args.data,
            arch,
            args.runs / f"{name}{args.suffix}",
            config,
            cache_dir=cache,
            feature_settings=settings.features,
        )
        row = {
            "val_CIDEr": result.best_metric,
            "epochs": result.epochs_run,
            "train_cpu_s": time.process_time() - start,
        }
        for split, subset in EVALS:
            key = split + (f"/{subset}" if subset else "")
            scores = evaluate_captioner(
                result.best_dir,
                args.data,
                split,
                subset_name=subset,
                cache_dir=cache,
                feature_settings=settings.features,
                progress=False,
                predictions_out=result.best_dir / f"predictions_{key.replace('/', '_')}.json",
            )
            row[key] = scores
        rows[name] = row
        results = args.runs / f"results{args.suffix}_{'_'.join(args.models)}.json"
        results.write_text(json.dumps(rows, indent=1))

    base = rows.get("meanpool", {}).get("test/order", {}).get("CIDEr")
    header = [
        "model",
        "test B4",
        "test METEOR",
        "test CIDEr",
        "comp B4",
        "comp CIDEr",
        "order B4",
        "order METEOR",
        "order CIDEr",
        "x meanpool",
        "comp-order CIDEr",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, r in rows.items():
        t, c, o, co = r["test"], r["compositional"], r["test/order"], r["compositional/order"]
        ratio = f"{o['CIDEr'] / base:.2f}" if base else "-"
        cells = [
            name,
            t["Bleu_4"],
            t["METEOR"],
            t["CIDEr"],
            c["Bleu_4"],
            c["CIDEr"],
            o["Bleu_4"],
            o["METEOR"],
            o["CIDEr"],
            ratio,
            co["CIDEr"],
        ]
        print(
            "| " + " | ".join(f"{x:.3f}" if isinstance(x, float) else str(x) for x in cells) + " |"
        )


if __name__ == "__main__":
    main()
