"""The compact id map under the FAISS backend: a bijection that survives removals, reused
names, look-alike prefixes, non-ASCII ids, hash collisions and a round trip to its file form."""

from __future__ import annotations

import numpy as np

from video_mm.index import ids as ids_module
from video_mm.index.ids import IdMap


def test_add_lookup_remove_and_readd():
    m = IdMap()
    names = [f"video{i // 3}:{i % 3}" for i in range(3000)] + ["vidéo:0", "a_b%1:0"]
    labels = m.add(names)
    assert labels.tolist() == list(range(len(names))) and len(m) == len(names)
    assert m.labels_of(["video7:2", "nope:0", "vidéo:0"]).tolist() == [23, -1, 3000]
    assert m.name(3001) == "a_b%1:0" and "video999:2" in m and "video999:3" not in m
    assert m.remove(["video1:0", "video1:0", "missing"]).tolist() == [3]
    assert "video1:0" not in m and len(m) == len(names) - 1
    assert m.add(["video1:0"]).tolist() == [len(names)]  # a fresh label, never a reused one
    assert m.labels_of(["video1:0"]).tolist() == [len(names)]
    assert sorted(m.with_prefix("video10:")) == ["video10:0", "video10:1", "video10:2"]
    assert m.with_prefix("vid\u00e9o:") == ["vidéo:0"]
    assert set(m.live_labels().tolist()) == set(range(len(names) + 1)) - {3}


def test_round_trip_through_arrays():
    m = IdMap()
    m.add([f"v{i}:0" for i in range(100)])
    m.remove([f"v{i}:0" for i in range(0, 100, 7)])
    labels, blob = m.to_arrays()
    again = IdMap.from_arrays(labels, blob, m.next_label)
    assert len(again) == len(m) and again.next_label == 100
    probe = [f"v{i}:0" for i in range(100)]
    assert again.labels_of(probe).tolist() == m.labels_of(probe).tolist()
    assert again.add(["new:0"]).tolist() == [100]
    assert again.name(99) == "v99:0" and again.names([1, 2]) == ["v1:0", "v2:0"]
    assert blob.tobytes() == b"\n".join(n.encode() for n in again.names(labels.tolist()))


def test_file_form_of_non_ascii_empty_and_one_name():
    """Names are gathered by byte (multi-byte UTF-8 kept whole); an empty map round-trips."""
    for names in ([], ["vidéo-ü:0"], ["a:0", "日本:1", "b:2"]):
        m = IdMap()
        m.add(names)
        labels, blob = m.to_arrays()
        again = IdMap.from_arrays(labels, blob, m.next_label)
        assert again.names(again.live_labels().tolist()) == names and len(again) == len(names)


def test_hash_collisions_are_resolved_by_name(monkeypatch):
    """Every name hashing alike (forced): lookups still tell them apart."""
    monkeypatch.setattr(ids_module, "_hashes", lambda enc, count: np.zeros(count, np.uint64))
    m = IdMap()
    m.add(["a:0", "b:0", "c:0"])
    assert m.labels_of(["c:0", "a:0", "d:0"]).tolist() == [2, 0, -1]
    assert m.remove(["b:0"]).tolist() == [1]
    assert m.labels_of(["a:0", "b:0", "c:0"]).tolist() == [0, -1, 2]


def test_prefix_search_finds_name_starts_only():
    """The prefix is found in the names buffer: a place inside a name, across two names, or in a
    removed name does not count; it holds after a round trip with removed labels, in any order."""
    m = IdMap()
    m.add(["xv1:0", "v1", ":0", "v1:0", "v1:1", "v11:0", "v1:2", "v1:1v1:9"])
    m.remove(["v1:2"])
    m.add(["v1:2", "v1v1:0"])  # "v1v1:0" holds "v1:" inside, overlapping its own "v1"
    assert m.with_prefix("v1:") == ["v1:0", "v1:1", "v1:1v1:9", "v1:2"]
    assert sorted(m.with_prefix("v1")) == sorted(
        ["v1", "v1:0", "v1:1", "v11:0", "v1:1v1:9", "v1:2", "v1v1:0"]
    )
    assert m.with_prefix("nothing") == [] and len(m.with_prefix("")) == len(m)
    m.remove(["v1", "v1:1"])
    labels, blob = m.to_arrays()
    for order in (np.arange(len(labels)), np.arange(len(labels))[::-1]):  # files of old versions
        parts = blob.tobytes().split(b"\n")
        shuffled = np.frombuffer(b"\n".join(parts[i] for i in order), np.uint8)
        again = IdMap.from_arrays(labels[order], shuffled, m.next_label)
        assert again.with_prefix("v1:") == ["v1:0", "v1:1v1:9", "v1:2"]
        again.add(["v1:7"])
        assert again.with_prefix("v1:") == ["v1:0", "v1:1v1:9", "v1:2", "v1:7"]
        assert again.labels_of(["v1:2", "v1:1"]).tolist() == m.labels_of(["v1:2", "v1:1"]).tolist()


def test_lookups_hold_across_folds_of_recent_and_removed_keys(monkeypatch):
    """Recent hashes and removed ids' hashes are folded into the main array now and then: every
    lookup answers the same before and after, re-added names included."""
    monkeypatch.setattr(ids_module, "_RECENT_MIN", 8)
    m, live = IdMap(), {}
    rng = np.random.default_rng(0)
    for step in range(60):
        batch = [f"v{int(i)}:0" for i in rng.choice(200, 7, replace=False)]
        if step % 3 == 2:
            removed = m.remove(batch)
            assert sorted(removed.tolist()) == sorted(live.pop(b) for b in batch if b in live)
        else:
            fresh = [b for b in batch if b not in live]
            live.update(zip(fresh, m.add(fresh).tolist(), strict=True))
        probe = [f"v{i}:0" for i in range(200)]
        assert m.labels_of(probe).tolist() == [live.get(p, -1) for p in probe]
        assert len(m) == len(live)
    assert len(m._keys) > 8 and m._stale <= max(8, len(m._keys) >> 6)
    labels, blob = m.to_arrays()
    again = IdMap.from_arrays(labels, blob, m.next_label)
    assert again.labels_of(probe).tolist() == m.labels_of(probe).tolist()
