"""Captions to token ids and back.

A caption is lower-cased and split into words (letters, digits and in-word apostrophes); every
other character is a separator, so punctuation never becomes a token. Words seen fewer than
``min_count`` times map to ``<unk>``. Ids 0-3 are fixed: ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``.
The vocabulary is saved as JSON beside a model so a checkpoint decodes its own ids.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from video_mm.errors import ConfigError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-case words of ``text``; punctuation and whitespace separate them."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """A fixed word list: ``<pad>=0, <bos>=1, <eos>=2, <unk>=3``, then words by frequency."""

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, words: Sequence[str]) -> None:
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ConfigError(f"a vocabulary must start with {SPECIALS}, got {tuple(words[:4])}")
        if len(set(words)) != len(words):
            raise ConfigError("a vocabulary must not repeat words")
        self.itos: list[str] = list(words)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(
        cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """Words appearing at least ``min_count`` times, most frequent first (ties alphabetical)."""
        if min_count < 1:
            raise ConfigError(f"min_count must be at least 1, got {min_count}")
        counts = Counter(w for c in captions for w in tokenize(c))
        words = sorted((w for w, n in counts.items() if n >= min_count),
                       key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIALS))]
        return cls([*SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of ``text`` in ``<bos>`` ... ``<eos>`` unless ``add_special`` is off."""
        ids = [self.stoi.get(w, self.unk_id) for w in tokenize(text)]
        return [self.bos_id, *ids, self.eos_id] if add_special else ids

    def encode_batch(self, texts: Sequence[str], max_len: int | None = None) -> np.ndarray:
        """``[B, L]`` int64 ids padded with ``<pad>``; ``max_len`` cuts long captions (keeping
        ``<eos>``) so a batch has a known bound."""
        seqs = [self.encode(t) for t in texts]
        if max_len is not None:
            if max_len < 2:
                raise ConfigError(f"max_len must leave room for <bos> and <eos>, got {max_len}")
            seqs = [s if len(s) <= max_len else [*s[: max_len - 1], self.eos_id] for s in seqs]
        out = np.full((len(seqs), max((len(s) for s in seqs), default=2)), self.pad_id, np.int64)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = s
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Words of ``ids`` up to the first ``<eos>``; ``<pad>`` and ``<bos>`` are dropped."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            words.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return " ".join(words)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"words": self.itos}, ensure_ascii=False, indent=0))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            data = json.loads(Path(path).read_text())
            return cls(data["words"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: not a vocabulary file ({exc})") from exc
