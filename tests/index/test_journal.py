"""The FAISS index's journal: flushes append records beside an untouched base file, other handles
and processes replay only what is new, a torn tail is dropped and then cut off, and compaction
rewrites the base once the journal outgrows its share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from video_mm.index import journal
from video_mm.index.faiss_index import FaissIndex
from video_mm.settings import IndexSettings

DIM = 16
NEVER = {"journal_fraction": 1e9, "journal_min_bytes": 2**40}  # never compact on size


def vector(i: int) -> np.ndarray:
    x = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return x / np.linalg.norm(x)


def vectors(ids: range) -> np.ndarray:
    return np.stack([vector(i) for i in ids])


def names(ids: range) -> list[str]:
    return [f"v{i // 4}:{i % 4}" for i in ids]


def stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def results(index: FaissIndex, k: int = 5) -> list[list[tuple[str, float]]]:
    hits = index.search(vectors(range(500, 540)), k)
    return [[(i, round(s, 5)) for i, s in row] for row in hits]


def writes(index: FaissIndex, step: int) -> None:
    """Step ``step`` of a workload of adds, upserts, updates, deletes and prefix deletes."""
    base = 40 * step
    index.add(names(range(base, base + 40)), vectors(range(base, base + 40)))
    index.add(names(range(base, base + 5)), vectors(range(1000 + base, 1005 + base)))  # upsert
    if step:
        index.update(names(range(base - 8, base - 4)), vectors(range(2000, 2004)))
        index.delete([*names(range(base - 20, base - 17)), "absent:0"])
        index.delete_prefix(f"v{base // 4 - 2}:")


def flushed(path: Path, settings: IndexSettings) -> FaissIndex:
    """An index at ``path`` with the first step of :func:`writes` flushed (the base file)."""
    index = FaissIndex(path, settings)
    writes(index, 0)
    index.flush()
    return index


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"exact_max": 60, "ann": "hnsw", "compact_fraction": 10.0},  # deletes stay tombstones
        {"exact_max": 0, "ann": "ivfsq8", "ivf_nlist": 8, "ivf_train_max": 30},  # staged adds
    ],
    ids=["flat", "hnsw", "ivf-staged"],
)
def test_replay_equals_one_in_memory_index_and_leaves_the_base_alone(tmp_path, overrides):
    settings = IndexSettings(**overrides, **NEVER, ivf_nprobe=8)
    path = tmp_path / "i.faiss"
    writer = flushed(path, settings)  # the first flush writes the base
    base = stamp(path)
    reference = FaissIndex(tmp_path / "memory.faiss", settings)  # never flushed
    writes(reference, 0)
    for step in range(1, 6):
        writes(writer, step)
        writes(reference, step)
        writer.flush()
        if settings.ann != "hnsw" or step > 1:  # HNSW: 60 -> switches at step 1, a compaction
            assert stamp(path) == base
        base = stamp(path)
    assert path.with_name("i.faiss.journal").stat().st_size > journal.HEADER
    replayed = FaissIndex(path, settings)
    assert len(replayed) == len(writer) == len(reference) and replayed.kind == reference.kind
    assert results(replayed) == results(reference) == results(writer)
    for id_ in names(range(0, 240)):
        assert (id_ in replayed) == (id_ in reference)


def test_handles_catch_up_from_the_journal_without_reloading(tmp_path, monkeypatch):
    loads = []
    original = FaissIndex._load
    monkeypatch.setattr(FaissIndex, "_load", lambda self: loads.append(1) or original(self))
    settings = IndexSettings(**NEVER)
    a = flushed(tmp_path / "i.faiss", settings)
    b = FaissIndex(tmp_path / "i.faiss", settings)
    assert len(loads) == 1
    a.add(["new:0"], vector(3000)[None])
    a.flush()
    assert b.search(vector(3000), k=1)[0][0][0] == "new:0"  # b read a's one record
    b.add(["new:1"], vector(3001)[None])
    a.delete(["new:0"])
    a.flush()
    b.flush()  # b: a's delete first, then its own add
    assert a.search(vector(3001), k=1)[0][0][0] == "new:1" and "new:0" not in a
    assert "new:0" not in b and len(a) == len(b) == 41
    assert len(loads) == 1


CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from video_mm.index.faiss_index import FaissIndex
    from video_mm.settings import IndexSettings

    loads = 0
    original = FaissIndex._load
    def counted(self):
        global loads
        loads += 1
        original(self)
    FaissIndex._load = counted

    def vector(i):
        x = np.random.default_rng(i).standard_normal(16).astype(np.float32)
        return x / np.linalg.norm(x)

    index = FaissIndex(Path(sys.argv[1]), IndexSettings(**json.loads(sys.argv[2])))
    for line in sys.stdin:
        op, *args = line.split()
        if op == "add":  # add <name> <seed>: write and flush
            index.add([args[0]], vector(int(args[1]))[None])
            index.flush()
            out = None
        else:  # find <seed>: the nearest id
            out = index.search(vector(int(args[0])), k=1)[0][0][0]
        print(json.dumps({"out": out, "loads": loads, "size": len(index)}), flush=True)
    """
)


def test_two_processes_writing_in_turn_see_each_other_without_full_reloads(tmp_path):
    path = tmp_path / "i.faiss"
    settings = IndexSettings(**NEVER)
    flushed(path, settings)
    base = stamp(path)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), json.dumps(NEVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]

    def ask(proc: subprocess.Popen, line: str) -> dict:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    try:
        for turn in range(6):
            writer, reader = procs[turn % 2], procs[1 - turn % 2]
            ask(writer, f"add p{turn}:0 {4000 + turn}")
            seen = ask(reader, f"find {4000 + turn}")
            assert seen["out"] == f"p{turn}:0" and seen["size"] == 41 + turn
        for proc in procs:
            assert ask(proc, "find 4000")["loads"] == 1  # the base, once, at open
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait(timeout=60)
    assert stamp(path) == base
    assert len(FaissIndex(path, settings)) == 46


def test_a_torn_tail_is_ignored_and_the_next_flush_cuts_it_off(tmp_path):
    path = tmp_path / "i.faiss"
    settings = IndexSettings(**NEVER)
    index = flushed(path, settings)
    for step in (1, 2):
        writes(index, step)
        index.flush()
    expected = results(index)
    log = path.with_name("i.faiss.journal")
    whole = log.stat().st_size
    index.add(["torn:0", "torn:1"], vectors(range(3000, 3002)))
    index.flush()
    with open(log, "r+b") as f:  # a crash mid-append: half of the last record written
        f.truncate(whole + (log.stat().st_size - whole) // 2)
    reopened = FaissIndex(path, settings)
    assert "torn:0" not in reopened and results(reopened) == expected
    reopened.add(["after:0"], vector(3005)[None])
    reopened.flush()
    again = FaissIndex(path, settings)
    assert "after:0" in again and "torn:0" not in again and len(again) == len(reopened)
    assert again.search(vector(3005), k=1)[0][0][0] == "after:0"
    frames = list(journal_records(log))
    assert frames[-1] == [("add", ["after:0"])]  # appended right after the last whole record


def journal_records(log: Path) -> list[list[tuple[str, list[str]]]]:
    with open(log, "rb") as f:
        return [
            [(op, ids) for op, ids, _ in ops]
            for ops, _ in journal.records(f, journal.HEADER, log.stat().st_size)
        ]


def test_compaction_at_the_threshold_keeps_results_and_retires_the_journal(tmp_path):
    path = tmp_path / "i.faiss"
    settings = IndexSettings(journal_fraction=2.0, journal_min_bytes=0)
    index = flushed(path, settings)
    base, log = stamp(path), path.with_name("i.faiss.journal")
    size = base[2]
    step = 1
    while stamp(path) == base:  # each step journals ~3 KB against a base of ~5 KB
        assert not log.exists() or log.stat().st_size <= 2.0 * size
        writes(index, step)
        expected = results(index)
        index.flush()
        step += 1
    assert step > 2 and not log.exists()  # appended at least once, then compacted
    assert results(FaissIndex(path, settings)) == expected
    index.add(["after:0"], vector(3005)[None])
    index.flush()  # the new base's own journal
    assert log.exists() and "after:0" in FaissIndex(path, settings)


def test_zero_thresholds_rewrite_every_flush_as_before(tmp_path):
    path = tmp_path / "i.faiss"
    index = flushed(path, IndexSettings(journal_fraction=0, journal_min_bytes=0))
    before = stamp(path)
    writes(index, 1)
    index.flush()
    assert stamp(path) != before and not path.with_name("i.faiss.journal").exists()


def test_a_journal_of_an_earlier_base_is_ignored(tmp_path):
    """A crash between writing a compacted base and removing the journal leaves the old one."""
    path = tmp_path / "i.faiss"
    index = FaissIndex(path, IndexSettings(**NEVER))
    writes(index, 0)
    index.flush()
    writes(index, 1)
    index.flush()
    log = path.with_name("i.faiss.journal")
    stale = log.read_bytes()
    writes(index, 2)
    index.compact()
    assert not log.exists()
    log.write_bytes(stale)  # its records are in the base already (with later ones over them)
    expected = results(index)
    reopened = FaissIndex(path, IndexSettings(**NEVER))
    assert results(reopened) == expected and len(reopened) == len(index)
    reopened.add(["after:0"], vector(3005)[None])
    reopened.flush()  # replaces the stale journal with this base's
    assert "after:0" in FaissIndex(path, IndexSettings(**NEVER))
    assert journal_records(log) == [[("add", ["after:0"])]]


def test_a_record_seen_half_written_is_read_again_even_if_the_file_looks_unchanged(tmp_path):
    """A reader that met a record whose bytes were not all there yet (as over NFS) reads it again
    on its next search, though the journal's size, inode and mtime did not change."""
    path = tmp_path / "i.faiss"
    writer = FaissIndex(path, IndexSettings(**NEVER))
    writes(writer, 0)
    writer.flush()
    reader = FaissIndex(path, IndexSettings(**NEVER))
    writer.add(["late:0"], vector(3000)[None])
    writer.flush()
    log = path.with_name("i.faiss.journal")
    whole, st = log.read_bytes(), log.stat()

    def put(data: bytes) -> None:
        with open(log, "r+b") as f:
            f.write(data)
        os.utime(log, ns=(st.st_atime_ns, st.st_mtime_ns))

    put(whole[:-8] + bytes(8))
    assert reader.search(vector(3000), k=1)[0][0][0] != "late:0"
    put(whole)
    assert reader.search(vector(3000), k=1)[0][0][0] == "late:0"
