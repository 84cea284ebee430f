"""Caption decoding throughput: batched beam search against decoding one clip at a time.

Each shipped captioner config (default sizes, vocabulary of 3,000 words, random weights: an
untrained model rarely says <eos>, so every caption runs to max_len, the worst case) captions
N clips of 16 frames x 512 features on the CPU. Baseline: beam search called per clip (B=1), as a
naive service loop would. Rows: greedy and beam search over the whole batch, and beam search with
a no-repeat-trigram rule. Best of ``--repeat`` runs.

    .venv/bin/python benchmarks/caption_decoding.py [--clips 32] [--beam 3] [--max-len 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from video_mm.models import beam_search, create_model, greedy


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
        }
        base = None
        for label, fn in runs.items():
            t = best_time(fn, args.repeat)
            base = base or t
            print(f"| {name} | {label} | {t:.3f} | {args.clips / t:.1f} | {base / t:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
