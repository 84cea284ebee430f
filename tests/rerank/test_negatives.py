"""Order- and object-swapped captions, from the words alone."""

from __future__ import annotations

import numpy as np

from video_mm.rerank.negatives import object_swapped, order_swapped, reversal_changes, swapped


def test_order_swaps_each_template_of_the_synthetic_benchmark() -> None:
    first, second = "a red circle moves left", "a blue square appears"
    assert order_swapped(f"{first} and then {second}") == f"{second} and then {first}"
    assert order_swapped(f"first {first} then {second}") == f"first {second} then {first}"
    assert order_swapped(f"{first} and after that {second}") == f"{second} and after that {first}"
    assert order_swapped(f"{second} after {first}") == f"{first} after {second}"
    assert order_swapped("three green squares grow") is None


def test_object_swap_trades_the_actors_or_changes_a_colour() -> None:
    text = "a red circle moves left and then a blue square appears"
    assert object_swapped(text) == "a blue square moves left and then a red circle appears"
    single = object_swapped("two green triangles spin", np.random.default_rng(0))
    assert single is not None and single.endswith("triangles spin") and "green" not in single
    assert object_swapped("a man is cooking") is None
    assert swapped("a man is cooking", np.random.default_rng(0)) is None


def test_reversal_changes_captions_with_order_or_a_direction_in_time() -> None:
    assert reversal_changes("a red circle spins and then a blue square bounces")  # the order
    assert reversal_changes("a small red circle moves to the left")  # now moves right
    assert reversal_changes("there are two blue circles that vanish")  # now they appear
    assert reversal_changes("three red squares grow")
    assert not reversal_changes("the blue square spins")  # the same backwards
    assert not reversal_changes("a big green triangle is bouncing")
    assert not reversal_changes("a man is cooking")
