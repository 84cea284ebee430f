"""The captioning table through the pipeline path: `vmm index` + the stored captions, against
`vmm eval` on the same clips.

The split's videos are indexed in-process (a private data_dir, default settings: each synthetic
3 s video is one 10 s-window clip) with the model as the only captioner; the captions the pipeline
stored are scored with coco-caption (PTB tokenizer, METEOR 1.5) against the split's references,
next to `evaluate_captioner` (what `vmm eval captioner` runs) on the same videos. Both decode with
the shipped settings. "same caption" counts the videos where both paths say the same words.

    nice -n 10 .venv/bin/python benchmarks/pipeline_captions.py --model RUN --data DATA \\
        [--split test] [--work /tmp/vmm-pipeline-captions]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from video_mm.data.datasets import by_split, load_dataset
from video_mm.settings import Settings, get_settings
from video_mm.train.captioning import evaluate_captioner, subset
from video_mm.train.metrics import caption_scores


def pipeline_captions(model: Path, videos: list[Path], work: Path) -> dict[str, str]:
    """Index ``videos`` with ``model`` as the only captioner; file stem -> the stored caption."""
    from video_mm.pipeline.dispatch import index_paths
    from video_mm.pipeline.runner import context

    base = get_settings()
    settings = Settings(**{**base.model_dump(exclude={"data_dir", "models"}),
                           "data_dir": work,
                           "models": {**base.models.model_dump(),
                                      "captioners": [str(model)], "retrieval": ""}})
    rows = index_paths(videos, settings, queue=False)
    catalog = context(settings).catalog
    out = {}
    for video, row in zip(videos, rows, strict=True):
        if row["state"] != "done":
            raise SystemExit(f"{video}: {row['error']}")
        (caption,) = catalog.get_captions(video_id=row["video_id"])  # one clip, one captioner
        out[video.stem] = caption.text
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="A saved captioner or run")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vmm-pipeline-captions"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    records = [r for r in by_split(load_dataset(args.data), args.split) if r.path is not None]
    refs = {r.video_id: r.captions for r in records}
    order = {r.video_id for r in subset(records, "order")}
    piped = pipeline_captions(args.model, [r.path for r in records], args.work / "vmm")
    piped = {r.video_id: piped[r.path.stem] for r in records}
    preds_file = args.work / "eval_predictions.json"
    evaluate_captioner(args.model, args.data, args.split, predictions_out=preds_file,
                       progress=False)
    evald = {p["video_id"]: p["caption"]
             for p in json.loads(preds_file.read_text())["predictions"]}
    same = sum(piped[v] == evald.get(v) for v in piped)
    print(f"{args.model} on {args.data} ({args.split}): {len(records)} videos, "
          f"{len(order)} order clips; same caption on both paths: {same} / {len(piped)}\n")
    print("| path | B4 | METEOR | ROUGE-L | CIDEr | order CIDEr |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, preds in (("pipeline (vmm index + stored captions)", piped),
                        ("vmm eval captioner", evald)):
        s = caption_scores(refs, preds)
        o = caption_scores({v: refs[v] for v in order}, {v: preds[v] for v in order})
        print(f"| {name} | {s['Bleu_4']:.3f} | {s['METEOR']:.3f} | {s['ROUGE_L']:.3f} | "
              f"{s['CIDEr']:.3f} | {o['CIDEr']:.3f} |")


if __name__ == "__main__":
    main()
