"""The embedded default index: FAISS in memory, one file on local disk.

Search is exact (flat inner product) while the index holds at most ``exact_max`` vectors; beyond
that it is rebuilt as the approximate index ``settings.ann`` names: HNSW, IVF (flat lists), IVF-PQ
(``pq_m`` bytes a vector), IVF-SQ8 (one byte a dimension: 10M 256-d clips in 2.6 GB, recall@10
~0.97 on clustered vectors) or any IVF recipe of FAISS's index factory (``settings.factory``).
String ids map to int64 labels (:class:`~video_mm.index.ids.IdMap`, ~30 bytes an id) that are
never reused, so a replaced vector gets a fresh label.

- Deletes: flat and the IVF kinds remove in place; HNSW cannot, so deleted labels become
  tombstones that a search selector skips, and the graph is rebuilt once ``compact_fraction`` of
  it is dead.
- Memory: FAISS grows an inverted list by doubling it, so an index built by many adds holds
  ~1.4x its codes. Adds to an IVF index whose lists are plain arrays are therefore staged as
  codes (at most 1/16 of the index, or until the next search, delete or compaction) and merged
  into lists allocated at their exact size, each old list handed back before the next new one is
  made (:func:`merge_exact`), and the heap trimmed after: a 10M streamed build peaks near its
  final size.
- Durability: the index is a base file plus a journal beside it (``<file>.journal``,
  :mod:`~video_mm.index.journal`). :meth:`flush` appends the writes since the last flush to the
  journal as one checksummed record and fsyncs it: O(the change), where rewriting a 10M base
  takes seconds. Once the journal outgrows ``journal_fraction`` of the base (and
  ``journal_min_bytes``), the structure changed (a switch to the ``ann`` index, a retrain, an
  HNSW compaction), or on :meth:`compact`, the flush compacts instead: the whole index goes to a
  temporary file, fsynced and renamed over the base (a crash leaves the old or the new base,
  never half of one), under a new generation that retires the old journal. The FAISS data
  streams into (and out of) the base: no second copy of the index is ever held.
- Several processes: writes are applied in memory and logged; :meth:`flush` takes an exclusive
  file lock, catches up with what other processes flushed since (their journal records, or the
  whole base after a compaction), replays its own log on top and appends. A reader catches up on
  its next search, reading only the records it has not seen.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import struct
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, Literal

import faiss
import numpy as np

from video_mm.errors import ConfigError, IndexError_, NotFound
from video_mm.index import journal
from video_mm.index.base import SearchResult, check_queries, check_vectors
from video_mm.index.ids import IdMap
from video_mm.settings import IndexSettings

Kind = Literal["flat", "hnsw", "ivf", "ivfpq", "ivfsq8", "factory"]
IVF_KINDS = ("ivf", "ivfpq", "ivfsq8", "factory")
REBUILD_CHUNK = 100_000  # vectors moved at a time when rebuilding: bounded memory at any size
STAGE_FRACTION = 16  # staged codes are merged once they reach 1/16 of the index
FORMAT_VERSION = 2  # 1: the FAISS bytes as an .npy member; 2: streamed as a raw member
INDEX_MEMBER = "index.faiss"
IO_BLOCK = 1 << 22  # bytes a streamed read or write of the FAISS data moves at a time


class FaissIndex:
    """A :class:`~video_mm.index.base.VectorIndex` backed by one FAISS file."""

    def __init__(
        self,
        path: Path,
        settings: IndexSettings,
        dim: int | None = None,
        *,
        log_writes: bool = True,
    ) -> None:
        """``log_writes=False`` is for a process known to be the file's only writer (a bulk
        load): it skips the log of the writes since the last flush (10 GB for 10M 256-d vectors
        added in one go), so each of its flushes compacts (there is nothing to journal)."""
        self.path = path
        self.log_writes = log_writes
        self.settings = settings
        self._lock = threading.RLock()
        self._reset(dim)
        self._stamp: tuple[int, int, int] | None = None  # the base file this state was read from
        self._generation: bytes | None = None  # the base's; None for files older than journals
        self._journal_pos = 0  # where the journal records applied so far end; 0: no journal
        self._journal_seen: tuple[int, int, int] | None = None  # its stamp when last read
        self._pending: list[journal.Op] = []
        self._dirty = False
        if path.exists():
            self._load()

    @classmethod
    def open(
        cls, url: str, collection: str, settings: IndexSettings, *, dim: int | None = None
    ) -> FaissIndex:
        """Open ``<url>/<collection>.faiss`` (``url`` is a local directory), creating it lazily."""
        if "://" in url and not url.startswith("file://"):
            raise IndexError_(f"the faiss backend needs a local directory, got {url!r}")
        directory = Path(url.removeprefix("file://"))
        index = cls(directory / f"{collection}.faiss", settings, dim)
        if dim is not None and index.dim not in (None, dim):
            raise IndexError_(f"{index.path} holds dimension {index.dim}, asked for {dim}")
        return index

    # -- state ---------------------------------------------------------------------------------

    def _reset(self, dim: int | None) -> None:
        self._dim = dim
        self._kind: Kind = "flat"
        self._index: Any = None
        self._ids = IdMap()
        self._tombstones: set[int] = set()
        self._trained_on = 0  # live vectors when the IVF quantizer was trained
        self._staged: list[tuple[np.ndarray, np.ndarray]] = []  # (labels, sa_encode codes)
        self._n_staged = 0
        self._restructured = False  # rebuilt since the base was written: replays would repeat it

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def kind(self) -> Kind:
        """Which structure answers searches now: ``flat`` (exact) or an ``ann`` kind."""
        return self._kind

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._ids

    # -- writes --------------------------------------------------------------------------------

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids = list(ids)
        array = check_vectors(ids, vectors, self._dim)
        if not ids:
            return
        with self._lock:
            self._apply_add(ids, array)
            self._log("add", ids, array)

    def update(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids = list(ids)
        missing = [i for i, label in zip(ids, self._ids.labels_of(ids), strict=True) if label < 0]
        if missing:
            raise NotFound(f"cannot update ids not in the index: {missing[:5]}")
        self.add(ids, vectors)

    def delete(self, ids: Iterable[str]) -> int:
        with self._lock:
            ids = list(dict.fromkeys(ids))
            found = self._ids.labels_of(ids)
            present = [i for i, label in zip(ids, found, strict=True) if label >= 0]
            self._apply_delete(present)
            if present:
                self._log("delete", present, None)
            return len(present)

    def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise IndexError_("an empty prefix would delete everything")
        with self._lock:
            return self.delete(self._ids.with_prefix(prefix))

    def _apply_add(self, ids: list[str], vectors: np.ndarray) -> None:
        if self._dim is None:
            self._dim = int(vectors.shape[1])
        self._apply_delete(ids)
        if self._index is None:
            self._index = self._empty("flat", None)
        labels = self._ids.add(ids)
        if self._kind in IVF_KINDS and array_lists(self._index) is not None:
            self._stage(vectors, labels)
        else:
            self._index.add_with_ids(vectors, labels)
        self._maybe_rebuild()

    def _apply_delete(self, ids: list[str]) -> None:
        if not ids:
            return
        labels = self._ids.remove(ids)
        if not len(labels):
            return
        if self._kind == "hnsw":
            self._tombstones.update(labels.tolist())
        else:
            self._unstage(labels)
            self._index.remove_ids(faiss.IDSelectorArray(labels))
        self._maybe_rebuild()

    # -- staged adds ---------------------------------------------------------------------------

    def _stage(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Encode an add for the IVF index and keep it until enough is staged to merge."""
        self._staged.append((labels, self._index.sa_encode(vectors)))
        self._n_staged += len(labels)
        nlist = faiss.extract_index_ivf(self._index).nlist
        if self._n_staged >= max(self._index.ntotal // STAGE_FRACTION, nlist):
            self._settle()

    def _unstage(self, labels: np.ndarray) -> None:
        """Drop staged vectors of removed labels."""
        kept = []
        for staged, codes in self._staged:
            keep = ~np.isin(staged, labels)
            if keep.any():
                kept.append((staged[keep], codes[keep]))
        self._staged = kept
        self._n_staged = sum(len(staged) for staged, _ in kept)

    def _settle(self) -> None:
        """Move staged vectors into the index (before it is read, written or rebuilt).

        A few vectors, touching under an eighth of the lists, are added the ordinary way (only
        those lists grow); more are merged into exactly sized lists."""
        if not self._staged:
            return
        staged, self._staged = self._staged, []
        labels = np.concatenate([s for s, _ in staged])
        codes = np.empty((self._n_staged, staged[0][1].shape[1]), np.uint8)
        self._n_staged = start = 0
        while staged:  # each batch freed once copied: one copy of the staged codes at a time
            batch = staged.pop(0)[1]
            codes[start : start + len(batch)] = batch
            start += len(batch)
        ivf = faiss.extract_index_ivf(self._index)
        if 8 * len(labels) < ivf.nlist:
            ivf.add_sa_codes(codes, labels)
        else:
            merge_exact(ivf, codes, labels)
            _trim_heap()

    # -- structure -----------------------------------------------------------------------------

    def _wanted_kind(self) -> Kind:
        """Exact up to ``exact_max``; a quantizing index also waits for enough vectors to train
        its codebooks (256 entries at 8 bits)."""
        s = self.settings
        need = 2**s.pq_nbits if s.ann == "ivfpq" else 256 if s.ann == "factory" else 0
        return "flat" if len(self) <= max(s.exact_max, need - 1) else s.ann

    def _maybe_rebuild(self) -> None:
        """Switch structure when the size crosses ``exact_max``, compact HNSW, regrow IVF.

        An IVF quantizer is retrained once the index holds 4x the vectors it was trained on,
        unless its list count is fixed (``ivf_nlist``) and it already saw ``ivf_train_max``
        vectors: retraining then would learn nothing new and cost a pass over every vector."""
        wanted = self._wanted_kind()
        s = self.settings
        dead = len(self._tombstones) > s.compact_fraction * max(self._index.ntotal, 1)
        outgrown = (
            self._kind in IVF_KINDS
            and len(self) > 4 * self._trained_on
            and (s.ivf_nlist == 0 or self._trained_on < s.ivf_train_max)
        )
        if wanted != self._kind or dead or outgrown:
            self._index = self._rebuilt(wanted)
            self._kind = wanted
            self._tombstones.clear()
            self._restructured = True

    def _rebuilt(self, kind: Kind) -> Any:
        """A new ``kind`` index holding the live vectors of the current one, moved in chunks so
        that no full float copy of a large index is ever held (IVF-PQ at 10M would need 10 GB)."""
        self._settle()
        old = self._index
        labels = self._ids.live_labels()
        if self._kind in IVF_KINDS and len(labels):
            # for reconstruct, this once: kept for good it would cost ~40 bytes a vector
            faiss.extract_index_ivf(old).set_direct_map_type(faiss.DirectMap.Hashtable)
        sample = labels
        if kind in IVF_KINDS and len(labels) > self.settings.ivf_train_max:
            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(labels, self.settings.ivf_train_max, replace=False))
        index = self._empty(kind, old.reconstruct_batch(sample) if len(sample) else None)
        if kind in IVF_KINDS:
            self._trained_on = len(labels)
        for start in range(0, len(labels), REBUILD_CHUNK):
            chunk = labels[start : start + REBUILD_CHUNK]
            index.add_with_ids(old.reconstruct_batch(chunk), chunk)
        if array_lists(index) is not None:  # the adds grew lists by doubling: trim them
            merge_exact(faiss.extract_index_ivf(index))
        return index

    def _empty(self, kind: Kind, train: np.ndarray | None) -> Any:
        """An empty index of ``kind``; the IVF kinds are trained on ``train`` (a sample)."""
        dim = self._dim
        s = self.settings
        if kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if kind == "hnsw":
            graph = faiss.IndexHNSWFlat(dim, s.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = s.ef_construction
            return faiss.IndexIDMap2(graph)
        nlist = s.ivf_nlist or max(1, int(4 * np.sqrt(max(len(self), 1))))
        if train is not None:
            nlist = min(nlist, len(train))  # k-means needs at least one vector a list
        index = ivf_from_factory(ivf_recipe(s, kind, nlist), dim)
        if train is not None:
            index.train(train)
        return index

    # -- search --------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        self._reload_if_changed()
        with self._lock:
            array = check_queries(queries, self._dim, k)
            if not len(self):
                return [[] for _ in range(len(array))]
            k = min(k, len(self))
            self._settle()
            scores, labels = self._index.search(array, k, params=self._search_params())
            return [
                [
                    (self._ids.name(label), float(score))
                    for score, label in zip(row_s.tolist(), row_l.tolist(), strict=True)
                    if label >= 0
                ]
                for row_s, row_l in zip(scores, labels, strict=True)
            ]

    def _search_params(self) -> Any:
        if self._kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=self.settings.ef_search)
            if self._tombstones:
                dead = np.fromiter(self._tombstones, dtype=np.int64)
                # Keep the selector alive as long as the params object.
                params.sel = self._selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead))
            return params
        if self._kind in IVF_KINDS:
            # on the IVF itself: a recipe may wrap it (a pre-transform such as OPQ)
            faiss.extract_index_ivf(self._index).nprobe = self.settings.ivf_nprobe
            return None
        return None

    # -- persistence ---------------------------------------------------------------------------

    def _log(self, op: str, ids: list[str], vectors: np.ndarray | None) -> None:
        self._dirty = True
        if self.log_writes:
            self._pending.append((op, ids, vectors))

    def flush(self) -> None:
        """Catch up with other processes' flushes, then journal this one's writes (or compact)."""
        self._flush(compact=False)

    def compact(self) -> None:
        """Flush, writing the whole index as the new base and retiring the journal."""
        self._flush(compact=True)

    def close(self) -> None:
        self.flush()

    def _flush(self, *, compact: bool) -> None:
        with self._lock, self._file_lock():
            pending, dirty = self._pending, self._dirty
            if not self.log_writes and self._others_wrote():
                raise IndexError_(f"another process wrote {self.path}; log_writes is off")
            if self._catch_up() and dirty:
                self._apply(pending)  # after theirs: this flush comes after theirs
            if compact or not self.path.exists() or (dirty and self._compaction_due(pending)):
                self._compact()
            elif dirty:
                self._append(journal.encode(pending))
            self._pending = []
            self._dirty = False

    def _apply(self, ops: Iterable[journal.Op]) -> None:
        for op, ids, vectors in ops:
            if op == "add":
                self._apply_add(ids, vectors)
            else:
                self._apply_delete(ids)

    def _compaction_due(self, pending: list[journal.Op]) -> bool:
        """Whether this flush should rewrite the base rather than append ``pending``: when there is
        no base of a generation to extend, nothing was logged, the structure was rebuilt (every
        load would repeat it), or the journal would pass its share of the base."""
        if self._stamp is None or self._generation is None or not self.log_writes:
            return True
        if self._restructured:
            return True
        s = self.settings
        size = max(self._journal_pos, journal.HEADER) + journal.record_size(pending)
        return size > max(s.journal_fraction * self._stamp[2], s.journal_min_bytes)

    def _compact(self) -> None:
        self._write()
        self._journal_path.unlink(missing_ok=True)  # a crash before this: it names the old base
        _fsync_dir(self.path.parent)
        self._journal_pos = 0
        self._journal_seen = None

    def _append(self, record: bytes) -> None:
        """Append one record to the journal of the current base (under the file lock, caught up:
        ``_journal_pos`` is where the whole records end, so a torn tail past it is cut off)."""
        path = self._journal_path
        if self._journal_pos and path.exists():
            with open(path, "r+b") as handle:
                if os.fstat(handle.fileno()).st_size != self._journal_pos:
                    handle.truncate(self._journal_pos)
                handle.seek(self._journal_pos)
                handle.write(record)
                handle.flush()
                os.fsync(handle.fileno())
            self._journal_pos += len(record)
        else:  # a new journal for this base, made whole before it is in place
            head = journal.header(self._generation)
            _replace_atomically(path, lambda f: f.write(head + record))
            self._journal_pos = journal.HEADER + len(record)
        self._journal_seen = _stamp_of(path)

    def _write(self) -> None:
        """Write the whole index as a new base file, of a new generation."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._settle()
        generation = os.urandom(journal.GENERATION_BYTES)
        labels, names = self._ids.to_arrays()
        meta = {
            "format": FORMAT_VERSION,
            "dim": self._dim,
            "kind": self._kind,
            "next_label": self._ids.next_label,
            "trained_on": self._trained_on,
            "generation": generation.hex(),
        }
        arrays = {
            "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
            "labels": labels,
            "names": names,
            "tombstones": np.fromiter(self._tombstones, dtype=np.int64),
        }

        def write(f: BinaryIO) -> None:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                for name, array in arrays.items():
                    with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, array, allow_pickle=False)
                if self._index is not None:
                    with z.open(INDEX_MEMBER, "w", force_zip64=True) as member:
                        writer = faiss.PyCallbackIOWriter(member.write, IO_BLOCK)
                        faiss.write_index(self._index, writer)

        _replace_atomically(self.path, write)
        self._stamp = _stamp_of(self.path)
        self._generation = generation
        self._restructured = False

    def _load(self) -> None:
        """Read the base file, then replay its journal. The FAISS data streams from the file into
        the index (no copy of the file is held), after the index held so far is let go."""
        try:
            with open(self.path, "rb") as f, zipfile.ZipFile(f) as z:
                st = os.fstat(f.fileno())
                meta = json.loads(_read_npy(z, "meta").tobytes())
                if meta.get("format") not in (1, FORMAT_VERSION):
                    raise IndexError_(f"{self.path}: unknown index format {meta.get('format')}")
                ids = IdMap.from_arrays(
                    _read_npy(z, "labels"), _read_npy(z, "names"), meta["next_label"]
                )
                tombstones = _read_npy(z, "tombstones")
                self._reset(meta["dim"])
                self._stamp = None  # until the whole file is in
                index = _read_faiss(z, meta["format"])
        except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile) as exc:
            raise IndexError_(f"cannot read index file {self.path}: {exc}") from exc
        self._kind = meta["kind"]
        self._trained_on = meta["trained_on"]
        self._index = index
        self._ids = ids
        self._tombstones = set(tombstones.tolist())
        self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        generation = meta.get("generation")
        self._generation = None if generation is None else bytes.fromhex(generation)
        self._journal_pos = 0
        self._journal_seen = None
        self._pending = []
        self._dirty = False
        self._replay_journal()

    def _catch_up(self) -> bool:
        """Bring the index in step with its files: reload after another process compacted (a new
        base), else apply the journal records appended since. Returns whether anything came in."""
        stamp = self._on_disk_stamp()
        if stamp is None:
            return False
        if stamp != self._stamp:
            self._load()
            return True
        return self._replay_journal()

    def _replay_journal(self) -> bool:
        """Apply the journal's records past ``_journal_pos``; whether there were any."""
        path = self._journal_path
        stamp = _stamp_of(path)
        if stamp == self._journal_seen and (stamp is None or self._journal_pos in (0, stamp[2])):
            return False  # absent, another base's, or read to its end and untouched since
        try:
            with open(path, "rb") as handle:
                return self._replay_from(handle)
        except FileNotFoundError:
            self._journal_seen = None
            return False

    def _replay_from(self, handle: Any) -> bool:
        st = os.fstat(handle.fileno())
        self._journal_seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._generation is None or journal.generation(handle) != self._generation:
            self._journal_pos = 0  # another base's (left by a crash mid-compaction): ignored
            return False
        if st.st_size < self._journal_pos:  # cut below what was applied: start again
            self._load()
            return True
        applied = False
        try:
            for ops, end in journal.records(
                handle, max(self._journal_pos, journal.HEADER), st.st_size
            ):
                self._apply(ops)
                self._journal_pos, applied = end, True
        except (ValueError, KeyError, struct.error) as exc:
            raise IndexError_(f"cannot read index journal {self._journal_path}: {exc}") from exc
        self._journal_pos = max(self._journal_pos, journal.HEADER)
        return applied

    def _others_wrote(self) -> bool:
        """Whether another process flushed since this one last read the files."""
        stamp = self._on_disk_stamp()
        journal_stamp = _stamp_of(self._journal_path)
        return (stamp is not None and stamp != self._stamp) or (
            journal_stamp is not None and journal_stamp != self._journal_seen
        )

    def _reload_if_changed(self) -> None:
        """Pick up other processes' flushes, unless this one has writes of its own pending."""
        with self._lock:
            if not self._dirty:
                self._catch_up()

    def _on_disk_stamp(self) -> tuple[int, int, int] | None:
        return _stamp_of(self.path)

    @property
    def _journal_path(self) -> Path:
        return self.path.with_name(self.path.name + ".journal")

    @contextmanager
    def _file_lock(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def ivf_recipe(settings: IndexSettings, kind: str, nlist: int) -> str:
    """The FAISS index-factory string of an IVF ``kind`` with ``nlist`` lists."""
    if kind == "ivf":
        return f"IVF{nlist},Flat"
    if kind == "ivfpq":
        return f"IVF{nlist},PQ{settings.pq_m}x{settings.pq_nbits}"
    if kind == "ivfsq8":
        return f"IVF{nlist},SQ8"
    return settings.factory.replace("{nlist}", str(nlist))


def ivf_from_factory(recipe: str, dim: int) -> Any:
    """An untrained inner-product index from ``recipe``; it must be an IVF index, which takes
    ids of its own and removes in place (what upserts and deletes need)."""
    try:
        index = faiss.index_factory(dim, recipe, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(f"bad FAISS index factory string {recipe!r}: {exc}") from exc
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError as exc:
        raise ConfigError(f"index.factory {recipe!r} is not an IVF index: {exc}") from exc
    return index


def array_lists(index: Any) -> Any | None:
    """The inverted lists of ``index`` when it is an IVF index itself (no wrapper that keeps data
    of its own) whose lists are plain arrays, which :func:`merge_exact` can rebuild; else None."""
    if not isinstance(index, faiss.IndexIVF):
        return None
    lists = faiss.downcast_InvertedLists(index.invlists)
    return lists if type(lists) is faiss.ArrayInvertedLists else None


def merge_exact(
    ivf: Any, codes: np.ndarray | None = None, labels: np.ndarray | None = None
) -> None:
    """Rebuild the lists of ``ivf`` at their exact sizes, adding ``codes`` (rows of ``sa_encode``:
    list number, then the code) under ``labels``; with none, only trims spare capacity.

    Lists are made from the last to the first, and each old list's codes are freed (by shortening
    the old table past it) as soon as they are copied, so memory never holds both tables' codes
    (the old ids, 8 bytes a vector, which the bindings cannot shorten, go with the old table)."""
    old = array_lists(ivf)
    nlist, size = ivf.nlist, old.code_size
    if codes is None or labels is None or not len(labels):
        codes, labels = np.empty((0, ivf.sa_code_size()), np.uint8), np.empty(0, np.int64)
    coarse = ivf.coarse_code_size()
    list_nos = np.zeros(len(codes), np.int64)
    for byte in range(coarse):  # little-endian list number ahead of each code
        list_nos |= codes[:, byte].astype(np.int64) << (8 * byte)
    order = np.argsort(list_nos, kind="stable")  # rows of each list, gathered list by list:
    bounds = np.searchsorted(list_nos[order], np.arange(nlist + 1))  # no sorted copy of codes
    new = faiss.ArrayInvertedLists(nlist, size)
    for i in reversed(range(nlist)):
        have, rows = old.list_size(i), order[bounds[i] : bounds[i + 1]]
        if have + len(rows):
            new.resize(i, have + len(rows))  # from empty: allocated at exactly this size
            if have:
                new.update_entries(i, 0, have, old.get_ids(i), old.get_codes(i))
            if len(rows):
                ids = np.ascontiguousarray(labels[rows], dtype=np.int64)
                add = np.ascontiguousarray(codes[rows, coarse:])
                new.update_entries(i, have, len(rows), faiss.swig_ptr(ids), faiss.swig_ptr(add))
        old.codes.resize(i)  # frees the codes of list i of the old table
    new.this.disown()  # the index owns it now, and deletes the old table
    ivf.replace_invlists(new, True)
    ivf.ntotal += len(labels)


def _trim_heap() -> None:
    """Hand the memory a merge freed back to the system (glibc's ``malloc_trim``): the old lists
    leave holes in the heap that would otherwise stay resident. A no-op without glibc."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _read_npy(z: zipfile.ZipFile, name: str) -> np.ndarray:
    with z.open(f"{name}.npy") as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _read_faiss(z: zipfile.ZipFile, version: int) -> Any:
    """The FAISS index of a file (None for one saved before its first vector), read through a
    stream. Format 1 kept it as a byte array member: its .npy header is skipped."""
    name = INDEX_MEMBER if version >= 2 else "index.npy"
    if name not in z.namelist():
        return None
    with z.open(name) as member:
        if version == 1:
            major, _ = np.lib.format.read_magic(member)
            header = (np.lib.format.read_array_header_1_0 if major == 1
                      else np.lib.format.read_array_header_2_0)  # fmt: skip
            if header(member)[0] == (0,):
                return None
        return faiss.read_index(faiss.PyCallbackIOReader(member.read, IO_BLOCK))


def _replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Put a file at ``path`` whole or not at all: written to a temporary file beside it,
    fsynced, renamed over it, the directory fsynced (a crash leaves the old file or the new)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stamp_of(path: Path) -> tuple[int, int, int] | None:
    """``(inode, mtime, size)`` of ``path``: it changes whenever the file is replaced or grows."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
