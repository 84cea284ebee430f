"""The prefetch thread: requests filled in order, bounded, errors raised where items are read,
closed requests released."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from video_mm.errors import CorruptVideo
from video_mm.pipeline.prefetch import Prefetcher


def _items(name: str, n: int, log: list[str], fail: Exception | None = None) -> Iterator[str]:
    try:
        for i in range(n):
            log.append(f"{name}{i}")
            yield f"{name}{i}"
        if fail is not None:
            raise fail
    finally:
        log.append(f"{name} closed")


def test_requests_are_filled_in_order_and_read_once() -> None:
    log: list[str] = []
    with Prefetcher() as prefetcher:
        first = prefetcher.request(lambda: _items("a", 3, log), size=8)
        second = prefetcher.request(lambda: _items("b", 2, log), size=8)
        assert first.claim() and not first.claim()
        assert list(first) == ["a0", "a1", "a2"]
        assert list(second) == ["b0", "b1"]
    assert log == ["a0", "a1", "a2", "a closed", "b0", "b1", "b closed"]


def test_an_error_is_raised_where_the_items_are_read_after_those_before_it() -> None:
    log: list[str] = []
    damaged = CorruptVideo("clip.mp4", "decoded 2 of 10 frames")
    with Prefetcher() as prefetcher:
        bad = prefetcher.request(lambda: _items("a", 2, log, fail=damaged), size=8)
        good = prefetcher.request(lambda: _items("b", 1, log), size=8)
        read = []
        with pytest.raises(CorruptVideo) as caught:
            for item in bad:
                read.append(item)
        assert caught.value is damaged and read == ["a0", "a1"]
        assert list(good) == ["b0"]  # the next request is served as usual


def test_a_closed_request_stops_and_releases_its_iterator_and_the_next_is_served() -> None:
    """Nobody reads the first request (its job failed): closing it ends its filling within the
    queue's bound, closes its generator (a reader held open), and the second still comes."""
    log: list[str] = []
    with Prefetcher() as prefetcher:
        abandoned = prefetcher.request(lambda: _items("a", 1000, log), size=2)
        after = prefetcher.request(lambda: _items("b", 2, log), size=2)
        assert next(iter(abandoned)) == "a0"
        abandoned.close()
        assert not abandoned.claim()  # a closed request is not read: the step decodes itself
        assert list(after) == ["b0", "b1"]
    produced = [x for x in log if x.startswith("a") and x != "a closed"]
    assert "a closed" in log and len(produced) <= 1 + 2 + 1  # read, queued, the one in hand


def test_closing_the_prefetcher_ends_requests_nobody_reads() -> None:
    log: list[str] = []
    prefetcher = Prefetcher()
    prefetcher.request(lambda: _items("a", 1000, log), size=1)
    prefetcher.request(lambda: _items("b", 1000, log), size=1)
    prefetcher.close()  # returns: the thread ended
    for name in "ab":  # whatever had started was closed
        assert f"{name}0" not in log or f"{name} closed" in log
