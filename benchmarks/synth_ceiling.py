"""How high text->video R@1 can go on each split of the synthetic benchmark, and where a model is.

    .venv/bin/python benchmarks/synth_ceiling.py /tmp/rr/synth
    .venv/bin/python benchmarks/synth_ceiling.py /tmp/rr/synth --retrieval /tmp/rr/ret/best \
        --rerank /tmp/rr/rr/best --split compositional

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

With ``--retrieval`` (and ``--rerank``, re-scoring its top ``--k`` with the re-ranker's saved
first-stage weight, as search does) it also prints the models' R@1 on ``--split`` by clip kind,
three ways: the caption's own clip first, any clip with the same sentence first, any clip of the
same content first.
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


def model_hits(
    data: Path, annotations: dict[str, Any], split: str, retrieval: Path, rerank: Path | None,
    k: int,
) -> None:  # fmt: skip
    """Print R@1 by clip kind of the retrieval model (and after re-ranking) three ways."""
    from video_mm.data.datasets import by_split, load_dataset
    from video_mm.data.features import extract_features
    from video_mm.rerank.model import from_pretrained as load_reranker
    from video_mm.rerank.training import caption_index, dual_similarity, rerank_order, score_pairs
    from video_mm.retrieval.model import from_pretrained as load_retrieval
    from video_mm.retrieval.training import clip_set
    from video_mm.settings import get_settings

    def clips_for(recipe: Any) -> Any:
        feats = extract_features(records, recipe, settings=get_settings().features)
        return clip_set(records, {key: recipe.apply(v) for key, v in feats.items()})

    videos = {v["video_id"]: v for v in annotations["videos"]}
    records = by_split(load_dataset(data), split)
    dual = load_retrieval(retrieval)
    clips = clips_for(dual.recipe)
    texts, owner = caption_index(clips)
    orders = [np.argsort(-row, kind="stable") for row in dual_similarity(dual, clips)]
    stages = {"retrieval model": [o[0] for o in orders]}
    if rerank is not None:
        model = load_reranker(rerank)
        own = model.recipe or dual.recipe
        cells = clips if own == dual.recipe else clips_for(own)
        k = min(k, len(clips))
        pairs = [(t, int(j)) for t, o in zip(texts, orders, strict=True) for j in o[:k]]
        logits = score_pairs(model, pairs, cells).reshape(len(texts), k)
        sim = dual_similarity(dual, clips)
        stages[f"re-ranked (w = {model.prior_weight:g})"] = [
            rerank_order(logits[q] + model.prior_weight * sim[q, orders[q][:k]], orders[q], k)[0]
            for q in range(len(texts))]  # fmt: skip
    print(f"\n| {split} | clip kind | queries | own clip | same sentence | same content |")
    print("|---|---|---:|---:|---:|---:|")
    for name, top in stages.items():
        rows: dict[str, list[tuple[bool, bool, bool]]] = defaultdict(list)
        for q, (text, clip) in enumerate(zip(texts, owner, strict=True)):
            got, want = videos[clips.ids[top[q]]], videos[clips.ids[clip]]
            sized = any(word in text.split() for word in SIZES)
            hit = (top[q] == clip, text in clips.captions[top[q]],
                   content(got, sized) == content(want, sized))  # fmt: skip
            for kind in (want["synth"]["kind"], "all"):
                rows[kind].append(hit)
        for kind in ("single", "order", "count", "all"):
            if kind in rows:
                share = 100 * np.mean(rows[kind], axis=0)
                print(f"| {name} | {kind} | {len(rows[kind])} | {share[0]:.1f} | {share[1]:.1f} | "
                      f"{share[2]:.1f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a folder written by `vmm synth`")
    parser.add_argument("--retrieval", type=Path, help="a saved retrieval model to score too")
    parser.add_argument("--rerank", type=Path, help="a saved re-ranker for it")
    parser.add_argument("--k", type=int, default=20, help="candidates the re-ranker re-scores")
    parser.add_argument("--split", default="compositional", help="the models' split")
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
    if args.retrieval is not None:
        model_hits(args.data, annotations, args.split, args.retrieval, args.rerank, args.k)


if __name__ == "__main__":
    main()
