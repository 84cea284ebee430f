"""Caption decoding: throughput (batched beam search against one clip at a time) and, with
``--models``, quality (the old decoding against the shipped settings, in the same run).

Each shipped captioner config (default sizes, vocabulary of 3,000 words, random weights: an
untrained model rarely says <eos>, so every caption runs to max_len, the worst case) captions
N clips of 16 frames x 512 features on the CPU. Baseline: beam search called per clip (B=1), as a
naive service loop would. Rows: greedy and beam search over the whole batch, and beam search with
a no-repeat-trigram rule. Best of ``--repeat`` runs.

    .venv/bin/python benchmarks/caption_decoding.py [--clips 32] [--beam 3] [--max-len 20]

Quality: trained captioners (saved models or run folders) caption a dataset split (whole videos,
scored with coco-caption CIDEr-D against its references) and any archive of videos cut into the
pipeline's clips (``--videos``: files or folders; references from ``--refs`` annotation files,
matched by file stem, where there are any). Each decoding (rows) is applied to the same features:
"before" is what the pipeline hard-coded (beam 3, 20 words, no repetition rules), "shipped" is
``Settings().models``. Columns: the share of captions that repeat a word trigram, that say a word
twice in a row, the mean length in words, distinct captions / captions, CIDEr-D.

    .venv/bin/python benchmarks/caption_decoding.py --models RUN... --data DATA --split test \
        [--videos DIR_OR_FILE...] [--refs ANNOTATIONS...]
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from video_mm.models import Decoding, beam_search, create_model, greedy

# name -> decoding; "before" is what the pipeline hard-coded until the settings were read
VARIANTS = {
    "before (beam 3, 20 words, no rules)": Decoding(no_repeat_ngram=0, no_repeat_adjacent=False),
    "no-repeat 3-gram": Decoding(no_repeat_adjacent=False),
    "no-repeat 3-gram, repetition 1.5": Decoding(no_repeat_adjacent=False,
                                                 repetition_penalty=1.5),
    "no-repeat 3-gram + adjacent, repetition 1.2": Decoding(repetition_penalty=1.2),
}


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def repeats_trigram(words: list[str]) -> bool:
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return len(grams) != len(set(grams))


def stutters(words: list[str]) -> bool:
    return any(a == b for a, b in itertools.pairwise(words))


def readability(captions: list[str]) -> dict[str, float]:
    words = [c.split() for c in captions]
    n = max(1, len(captions))
    return {"trigram": sum(map(repeats_trigram, words)) / n,
            "stutter": sum(map(stutters, words)) / n,
            "length": sum(map(len, words)) / n,
            "distinct": len(set(captions)) / n}


def split_inputs(folder, data, split):
    """(ids, inputs, refs) of a dataset split's whole videos, as ``vmm eval`` reads them."""
    from video_mm.artifacts import load_recipe
    from video_mm.data.datasets import by_split, load_dataset
    from video_mm.data.features import extract_features
    from video_mm.settings import get_settings

    settings = get_settings()
    records = load_dataset(data)
    records = by_split(records, split)
    recipe = load_recipe(folder)
    cache = settings.features.cache_url or settings.data_dir / "features"
    feats = extract_features(records, recipe, settings=settings.features, cache_dir=cache,
                             progress=False)
    ids = [r.video_id for r in records if r.video_id in feats]
    return ids, [recipe.apply(feats[v]) for v in ids], {r.video_id: r.captions for r in records}


def archive_inputs(folders, paths, refs_files):
    """(ids, inputs per model, refs) of every clip of an archive, cut and computed by the
    pipeline's own stages (default segmentation), the models' features shared as it shares them."""
    from pathlib import Path

    from video_mm.data.datasets import load_dataset
    from video_mm.pipeline import stages
    from video_mm.pipeline.dispatch import expand_paths
    from video_mm.settings import get_settings

    settings = get_settings()
    settings = settings.model_copy(update={"models": settings.models.model_copy(
        update={"captioners": [str(f) for f in folders]})})
    models = stages.load_models(settings)
    refs_by_stem = {}
    for f in refs_files:
        for r in load_dataset(Path(f).parent, annotation=f):
            refs_by_stem[r.video_id] = r.captions
    ids, inputs, refs = [], {name: [] for name in models.captioners}, {}
    for video in expand_paths([Path(p) for p in paths]):
        clips = stages.segment_stage(video, stages.probe_stage(video, settings), "v", settings)
        decoded = stages.features_stage(video, clips, models.feature_specs(), settings)
        for name in models.captioners:
            inputs[name] += models.inputs(name, decoded.features)
        for c in clips:
            ids.append(f"{video.name}:{c.index}")
            if len(clips) == 1 and video.stem in refs_by_stem:
                refs[ids[-1]] = refs_by_stem[video.stem]
    return ids, inputs, refs


def quality(args) -> None:
    from video_mm.artifacts import model_folder
    from video_mm.models import from_pretrained
    from video_mm.settings import Settings
    from video_mm.train.metrics import caption_scores

    variants = dict(VARIANTS)
    d = Decoding.from_settings(Settings().models, n_best=1)
    variants[f"shipped (beam {d.beam_size}, {d.max_len} words, no-repeat {d.no_repeat_ngram}-gram"
             f"{' + adjacent' if d.no_repeat_adjacent else ''}, repetition "
             f"{d.repetition_penalty}, length penalty {d.length_penalty})"] = d
    folders = [model_folder(m) for m in args.models]
    sets = {}
    if args.data:
        for f in folders:
            sets[(f, f"{args.data.name} {args.split}")] = split_inputs(f, args.data, args.split)
    if args.videos:
        ids, inputs, refs = archive_inputs(folders, args.videos, args.refs)
        for f in folders:
            sets[(f, "archive")] = (ids, inputs[f.name], refs)
    print("| model | clips | decoding | repeated trigram | word twice in a row | mean words | "
          "distinct / captions | CIDEr-D (clips with refs) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for (folder, where), (ids, inputs, refs) in sets.items():
        captioner = from_pretrained(folder, device="cpu")
        for label, decoding in variants.items():
            texts = [c.text for c in captioner.caption(inputs, decoding)]
            r = readability(texts)
            scored = {i: t for i, t in zip(ids, texts, strict=True) if i in refs}
            cider = caption_scores(refs, scored)["CIDEr"] if scored else float("nan")
            print(f"| {folder.parent.name if folder.name == 'best' else folder.name} | "
                  f"{where} ({len(ids)}) | {label} | {r['trigram']:.1%} | {r['stutter']:.1%} | "
                  f"{r['length']:.2f} | {r['distinct']:.2f} | {cider:.3f} ({len(scored)}) |",
                  flush=True)
            if args.show:
                for i, t in list(zip(ids, texts, strict=True))[: args.show]:
                    print(f"    {i}: {t}")


def main() -> None:
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=[], help="Quality mode: captioners.")
    parser.add_argument("--data", type=Path, help="Quality: a dataset folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--videos", nargs="*", default=[], help="Quality: an archive to caption")
    parser.add_argument("--refs", nargs="*", default=[], help="Annotation files for --videos")
    parser.add_argument("--show", type=int, default=0, help="Print this many captions a row")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--vocab", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--configs", default="meanpool,lrcn,attention,attention_dot")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.models:
        quality(args)
        return
    torch.manual_seed(0)
    feats = torch.randn(args.clips, args.frames, 512)
    mask = torch.ones(args.clips, args.frames, dtype=torch.bool)
    k, n = args.beam, args.max_len
    print(f"{args.clips} clips x {args.frames} frames, beam {k}, max_len {n}, vocab {args.vocab}, "
          f"torch threads {torch.get_num_threads()}\n")
    print("| model | method | time s | clips/s | x per-clip beam |")
    print("|---|---|---|---|---|")
    for name in args.configs.split(","):
        model = create_model(name, args.vocab, 512).eval()
        runs = {
            f"beam {k}, one clip at a time (baseline)": lambda m=model: [
                beam_search(m, feats[i:i + 1], mask[i:i + 1], beam_size=k, max_len=n)
                for i in range(args.clips)],
            "greedy, batched": lambda m=model: greedy(m, feats, mask, max_len=n),
            f"beam {k}, batched": lambda m=model: beam_search(m, feats, mask, beam_size=k,
                                                              max_len=n),
            f"beam {k}, batched, no-repeat 3-gram": lambda m=model: beam_search(
                m, feats, mask, beam_size=k, max_len=n, no_repeat_ngram=3),
            f"beam {k}, batched, every rule (3-gram, adjacent, repetition 1.2)": lambda m=model: (
                beam_search(m, feats, mask, beam_size=k, max_len=n, no_repeat_ngram=3,
                            no_repeat_adjacent=True, repetition_penalty=1.2)),
        }
        base = None
        for label, fn in runs.items():
            t = best_time(fn, args.repeat)
            base = base or t
            print(f"| {name} | {label} | {t:.3f} | {args.clips / t:.1f} | {base / t:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
