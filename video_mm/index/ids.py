"""Clip ids <-> int64 labels for the FAISS backend, held in flat numpy arrays.

Two Python dicts (id -> label, label -> id) cost about 200 bytes an id: 2 GB at 10M clips, more
than the vectors' codes. Here an id costs its UTF-8 bytes plus 28: the names lie in one byte buffer
indexed by label, and lookups go through a sorted array of 64-bit name hashes. Equal hashes are
allowed (a lookup compares the name itself), so a collision costs time, never correctness.
Keeping one sorted array exact cost an O(N) copy per write (~120 ms at 10M ids for one video's
clips, in the writer and in every process replaying its journal); instead new hashes go to a
small sorted array of their own and removed ids' hashes stay (a lookup skips removed labels),
both folded into the main array once either passes 1/64 of it: O(N) once per N/64 writes.
Labels are handed out in order and never reused, and a label's name lies after the names of
every smaller label: the offsets are sorted, so a place in the buffer maps back to its label.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

import numpy as np

_DEAD = -1  # length of a label whose id was removed
_NEWLINE = 10
_GATHER = 1 << 18  # names copied at a time when the file form is made (bounded temporaries)
_RECENT_MIN = 4096  # recent or stale hashes folded into the main array past max(this, N / 64)


def _spans(names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each name of a newline-joined buffer starts and ends."""
    if not len(names):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ends = np.flatnonzero(names == _NEWLINE)
    return np.concatenate(([0], ends + 1)), np.concatenate((ends, [len(names)]))


def _hashes(encoded: Iterable[bytes], count: int) -> np.ndarray:
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "little") for b in encoded),
        dtype=np.uint64,
        count=count,
    )


def _grown(array: np.ndarray, need: int, fill: int = 0) -> np.ndarray:
    """``array`` with room for ``need`` items, set to ``fill`` past the old ones up to ``need``
    (capacity doubles: amortised O(1) appends). The spare capacity is left untouched, so the
    system does not back it with memory until it is used."""
    if need <= len(array):
        return array
    out = np.empty(max(need, 2 * len(array), 1024), array.dtype)
    out[: len(array)] = array
    out[len(array) : need] = fill
    return out


class IdMap:
    """A bijection between live string ids and int64 labels."""

    def __init__(self, next_label: int = 0) -> None:
        self._buf = np.empty(1 << 16, np.uint8)  # UTF-8 names, back to back
        self._used = 0
        self._off = np.zeros(0, np.int64)  # label -> offset in _buf
        self._len = np.zeros(0, np.int32)  # label -> byte length, _DEAD once removed
        self._keys = np.zeros(0, np.uint64)  # sorted name hashes (some of removed labels)
        self._vals = np.zeros(0, np.int64)  # the label of each key
        self._recent_keys = np.zeros(0, np.uint64)  # sorted hashes added since the last fold
        self._recent_vals = np.zeros(0, np.int64)
        self._stale = 0  # keys of removed labels still in the arrays
        self._live = 0
        self.next_label = next_label
        self._off = _grown(self._off, next_label)
        self._len = _grown(self._len, next_label, _DEAD)

    def __len__(self) -> int:
        return self._live

    @property
    def nbytes(self) -> int:
        """Memory the map holds (its arrays, spare capacity included)."""
        arrays = (self._buf, self._off, self._len, self._keys, self._vals, self._recent_keys,
                  self._recent_vals)  # fmt: skip
        return sum(a.nbytes for a in arrays)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.labels_of([name])[0] >= 0

    # -- lookups -------------------------------------------------------------------------------

    def name(self, label: int) -> str:
        n = int(self._len[label])
        if n == _DEAD:
            raise KeyError(label)
        off = int(self._off[label])
        return self._buf[off : off + n].tobytes().decode()

    def names(self, labels: Iterable[int]) -> list[str]:
        return [self.name(label) for label in labels]

    def labels_of(self, names: Sequence[str]) -> np.ndarray:
        """The label of each name, -1 where absent."""
        out = np.full(len(names), -1, np.int64)
        if not len(names) or not self._live:
            return out
        encoded = [n.encode() for n in names]
        h = _hashes(encoded, len(encoded))
        for keys, vals in ((self._keys, self._vals), (self._recent_keys, self._recent_vals)):
            self._look_up(keys, vals, h, encoded, out)
        return out

    def _look_up(
        self,
        keys: np.ndarray,
        vals: np.ndarray,
        h: np.ndarray,
        encoded: list[bytes],
        out: np.ndarray,
    ) -> None:
        """Fill ``out`` (-1: not found yet) with the live label of each name found in ``keys``."""
        if not len(keys):
            return
        pos = np.searchsorted(keys, h)
        inside = pos < len(keys)
        hit = np.zeros(len(h), bool)
        hit[inside] = keys[pos[inside]] == h[inside]
        for i in np.flatnonzero(hit & (out < 0)).tolist():  # verify; walk equal hashes if needed
            p = int(pos[i])
            while p < len(keys) and keys[p] == h[i]:
                label = int(vals[p])
                if self._len[label] != _DEAD and self._name_bytes(label) == encoded[i]:
                    out[i] = label
                    break
                p += 1

    def live_labels(self) -> np.ndarray:
        return np.flatnonzero(self._len[: self.next_label] != _DEAD).astype(np.int64)

    def with_prefix(self, prefix: str) -> list[str]:
        """Every live id starting with ``prefix``: the prefix is searched for in the names buffer
        (one C scan: ~0.2 s at 10M ids, where comparing every name's head took 7 s), and a place
        found counts where a live name starts there."""
        p = prefix.encode()
        if not p:
            return self.names(self.live_labels().tolist())
        pattern, view = re.compile(re.escape(p)), memoryview(self._buf)[: self._used]
        found, at = [], 0
        while (match := pattern.search(view, at)) is not None:  # overlapping places too
            found.append(match.start())
            at = match.start() + 1
        where = np.asarray(found, np.int64)
        labels = np.searchsorted(self._off[: self.next_label], where, side="right") - 1
        keep = labels >= 0
        labels, where = labels[keep], where[keep]
        keep = (self._off[labels] == where) & (self._len[labels] >= len(p))
        return self.names(labels[keep].tolist())

    # -- writes --------------------------------------------------------------------------------

    def add(self, names: Sequence[str]) -> np.ndarray:
        """Fresh labels for ``names``, which must not be present (the caller removes them)."""
        encoded = [n.encode() for n in names]
        labels = np.arange(self.next_label, self.next_label + len(names), dtype=np.int64)
        lengths = np.fromiter(map(len, encoded), np.int32, count=len(encoded))
        offsets = self._used + np.concatenate(([0], np.cumsum(lengths[:-1], dtype=np.int64)))
        blob = b"".join(encoded)
        self._buf = _grown(self._buf, self._used + len(blob))
        self._buf[self._used : self._used + len(blob)] = np.frombuffer(blob, np.uint8)
        self._used += len(blob)
        end = self.next_label + len(names)
        self._off = _grown(self._off, end)
        self._len = _grown(self._len, end, _DEAD)
        self._off[self.next_label : end] = offsets
        self._len[self.next_label : end] = lengths
        self.next_label = end
        self._insert(_hashes(encoded, len(encoded)), labels)
        self._live += len(names)
        return labels

    def remove(self, names: Sequence[str]) -> np.ndarray:
        """Drop the present ones among ``names``; returns their labels."""
        labels = self.labels_of(list(dict.fromkeys(names)))
        labels = labels[labels >= 0]
        if len(labels):
            self._len[labels] = _DEAD  # their keys stay until the next fold
            self._live -= len(labels)
            self._stale += len(labels)
            self._maybe_fold()
        return labels

    def _insert(self, h: np.ndarray, labels: np.ndarray) -> None:
        order = np.argsort(h, kind="stable")
        pos = np.searchsorted(self._recent_keys, h[order])
        self._recent_keys = np.insert(self._recent_keys, pos, h[order])
        self._recent_vals = np.insert(self._recent_vals, pos, labels[order])
        self._maybe_fold()

    def _maybe_fold(self) -> None:
        """Merge the recent keys into the main arrays and drop removed labels' keys, once either
        passes 1/64 of the main arrays (one copy of them: no sort, no temporary beyond it)."""
        limit = max(_RECENT_MIN, len(self._keys) >> 6)
        if len(self._recent_keys) <= limit and self._stale <= limit:
            return
        if self._stale:
            live = self._len[self._vals] != _DEAD
            self._keys, self._vals = self._keys[live], self._vals[live]
            live = self._len[self._recent_vals] != _DEAD
            self._recent_keys, self._recent_vals = self._recent_keys[live], self._recent_vals[live]
            self._stale = 0
        pos = np.searchsorted(self._keys, self._recent_keys)
        self._keys = np.insert(self._keys, pos, self._recent_keys)
        self._vals = np.insert(self._vals, pos, self._recent_vals)
        self._recent_keys = np.zeros(0, np.uint64)
        self._recent_vals = np.zeros(0, np.int64)

    def _name_bytes(self, label: int) -> bytes:
        off = int(self._off[label])
        return self._buf[off : off + int(self._len[label])].tobytes()

    # -- persistence ---------------------------------------------------------------------------

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, names)``: live labels and their ids joined by newlines, as UTF-8 bytes (the
        file form), gathered with numpy a slice at a time: no Python object per id."""
        labels = self.live_labels()
        lengths = self._len[labels].astype(np.int64)
        out = np.full(max(int(lengths.sum()) + len(labels) - 1, 0), _NEWLINE, np.uint8)
        starts = np.cumsum(lengths + 1) - lengths - 1  # where each name goes in ``out``
        for a in range(0, len(labels), _GATHER):
            n, start = lengths[a : a + _GATHER], starts[a : a + _GATHER]
            within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
            out[np.repeat(start, n) + within] = self._buf[
                np.repeat(self._off[labels[a : a + _GATHER]], n) + within
            ]
        return labels, out

    @classmethod
    def from_arrays(cls, labels: np.ndarray, names: np.ndarray, next_label: int) -> IdMap:
        """The map from its file form; the names buffer is kept as it is (newlines and all). A
        removed label takes the offset of the next live one (the end past the last): the
        offsets stay sorted, and a live name is the last label at its offset."""
        ids = cls(next_label)
        labels = np.asarray(labels, np.int64)
        names = np.ascontiguousarray(names, np.uint8)
        starts, ends = _spans(names)
        if len(starts) != len(labels):
            raise ValueError(f"{len(labels)} labels for {len(starts)} names")
        if (np.diff(labels) <= 0).any():  # not in label order: gathered again in that order
            order = np.argsort(labels)
            parts = (names[a:b].tobytes() for a, b in zip(starts[order], ends[order], strict=True))
            labels, names = labels[order], np.frombuffer(b"\n".join(parts), np.uint8)
            starts, ends = _spans(names)
        ids._buf = _grown(names.copy(), 1)
        ids._used = len(names)
        off = ids._off[:next_label]
        off[:] = len(names)
        off[labels] = starts
        np.minimum.accumulate(off[::-1], out=off[::-1])  # a removed label: the next live start
        ids._len[labels] = ends - starts
        ids._live = len(labels)
        raw = ids._buf
        encoded = (raw[a:b].tobytes() for a, b in zip(starts.tolist(), ends.tolist(), strict=True))
        h = _hashes(encoded, len(starts))
        order = np.argsort(h, kind="stable")
        ids._keys, ids._vals = h[order], labels[order]
        return ids
