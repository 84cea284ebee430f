from __future__ import annotations

from pathlib import Path

import pytest

from video_mm.data.vocab import Vocabulary, tokenize
from video_mm.errors import ConfigError


def test_tokenize_lowercases_and_drops_punctuation() -> None:
    assert tokenize("A Man, slicing  a tomato!") == ["a", "man", "slicing", "a", "tomato"]
    assert tokenize("the dog's ball... (red)") == ["the", "dog's", "ball", "red"]
    assert tokenize("  ") == []


def test_special_ids_are_fixed() -> None:
    v = Vocabulary.build(["a cat"])
    assert (v.pad_id, v.bos_id, v.eos_id, v.unk_id) == (0, 1, 2, 3)
    assert v.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]


def test_build_orders_by_count_and_applies_min_count() -> None:
    v = Vocabulary.build(["a dog runs", "a dog sits", "a cat"], min_count=2)
    assert v.itos[4:] == ["a", "dog"]
    assert v.encode("a cat runs") == [1, 4, 3, 3, 2]
    assert len(Vocabulary.build(["a b c d e f"], max_size=6)) == 6
    with pytest.raises(ConfigError):
        Vocabulary.build(["a"], min_count=0)


def test_encode_decode_round_trip_on_real_captions(msvd14_captions: dict[str, list[str]]) -> None:
    captions = [c for caps in msvd14_captions.values() for c in caps]
    v = Vocabulary.build(captions)
    for c in captions:
        ids = v.encode(c)
        assert ids[0] == v.bos_id and ids[-1] == v.eos_id
        assert v.decode(ids) == " ".join(tokenize(c))
    assert v.decode([v.bos_id, 5, v.eos_id, 6]) == v.itos[5]  # stops at <eos>


def test_encode_batch_pads_and_cuts() -> None:
    v = Vocabulary.build(["a man is cooking", "a dog"])
    batch = v.encode_batch(["a man is cooking", "a dog"])
    assert batch.shape == (2, 6) and batch[1, 4:].tolist() == [0, 0]
    cut = v.encode_batch(["a man is cooking"], max_len=4)
    assert cut.tolist() == [[1, v.stoi["a"], v.stoi["man"], 2]]


def test_save_and_load(tmp_path: Path) -> None:
    v = Vocabulary.build(["a man is cooking", "a dog"])
    v.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == v
    (tmp_path / "bad.json").write_text('{"words": ["x"]}')
    with pytest.raises(ConfigError):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError):
        Vocabulary.load(tmp_path / "missing.json")
