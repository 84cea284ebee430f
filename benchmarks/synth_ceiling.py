"""How high text->video R@1 can go on each split of the synthetic benchmark.

    .venv/bin/python benchmarks/synth_ceiling.py /tmp/rr/synth

R@1 credits only the clip a caption was written for. When several clips of a split show the same
thing, a caption of one describes all of them, and no model can tell which one it came from: a
perfect model ranks them first in some order and is right 1/n of the time. This prints, per split
and clip kind, that ceiling two ways, averaged over every caption as a query:

- **sentence**: clips that have the very same sentence among their captions (what ``vmm eval
  retrieval`` reports as ``t2v_R@1_ceiling``; it applies to any dataset);
- **content**: clips whose drawn events are the same as far as the caption says: the kind, each
  event's action, actor count, colour and shape in order, and the sizes when the caption names a
  size (read from the annotations' ``synth`` entries; synonyms make different sentences of the
  same content, so this ceiling is the lower one).

The compositional split keeps six (colour, shape, action) combinations out of the others, so its
clips repeat a few contents: most one-event captions there describe two to four clips.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

SIZES = ("big", "small")


def content(video: dict[str, Any], sized: bool) -> tuple:
    """What a caption of ``video`` can say about it (sizes only when the caption names one)."""
    synth = video["synth"]
    objects = synth["objects"]

    def actor(e: dict[str, Any]) -> tuple:
        o = objects[e["actors"][0]]
        return (o["colour"], o["shape"], o["size"] if sized else "")

    return synth["kind"], tuple((e["action"], len(e["actors"]), actor(e)) for e in synth["events"])


def ceilings(annotations: dict[str, Any], split: str) -> dict[str, dict[str, float]]:
    videos = {v["video_id"]: v for v in annotations["videos"] if v["split"] == split}
    sentences = [s for s in annotations["sentences"] if s["video_id"] in videos]
    holders = Counter((s["caption"], s["video_id"]) for s in sentences)
    per_sentence = Counter(caption for caption, _ in holders)
    contents = {sized: Counter(content(v, sized) for v in videos.values())
                for sized in (False, True)}  # fmt: skip
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in sentences:
        video = videos[s["video_id"]]
        sized = any(word in s["caption"].split() for word in SIZES)
        for kind in (video["synth"]["kind"], "all"):
            out[kind]["sentence"].append(1 / per_sentence[s["caption"]])
            out[kind]["content"].append(1 / contents[sized][content(video, sized)])
    return {kind: {"queries": float(len(v["sentence"])),
                   "sentence": 100 * float(np.mean(v["sentence"])),
                   "content": 100 * float(np.mean(v["content"]))}
            for kind, v in out.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a folder written by `vmm synth`")
    args = parser.parse_args()
    annotations = json.loads((args.data / "annotations.json").read_text())
    splits = sorted({v["split"] for v in annotations["videos"]})
    print("| split | clip kind | queries | R@1 ceiling: sentence | R@1 ceiling: content |")
    print("|---|---|---:|---:|---:|")
    for split in splits:
        rows = ceilings(annotations, split)
        for kind in ("single", "order", "count", "all"):
            if kind in rows:
                r = rows[kind]
                print(f"| {split} | {kind} | {int(r['queries'])} | {r['sentence']:.1f} | "
                      f"{r['content']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
