"""Mismatched captions that differ from a matched one only in order or in who does what.

These are the negatives a dual encoder cannot tell apart from the positive and a cross-modal
model must learn to: the same two events told in the other order ("a red circle moves left and
then a blue square appears" -> "a blue square appears and then a red circle moves left"), and the
same events done by swapped objects ("a blue square moves left and then a red circle appears").
They are built from the caption's words alone, so any dataset phrased this way gets them; the
objects' words are those of the synthetic benchmark (:mod:`video_mm.data.synth`).

The third kind changes the clip instead: played backwards, a clip keeps everything it shows (its
background, its objects) and loses what its caption says happened when, when the caption tells two
events in order or an action with a direction in time (moves left, grows, appears): the caption
on its clip reversed is a mismatch only reading the frames in time order can tell
(:func:`reversal_changes`).
"""

from __future__ import annotations

import re

import numpy as np

from video_mm.data.synth import ACTIONS, COLOURS, SHAPES

# (pattern, template) pairs; the first that matches wins. Groups are the two events.
_ORDER = (
    (re.compile(r"^first (.+?),? then (.+)$"), "first {1} then {0}"),
    (re.compile(r"^(.+?),? and then (.+)$"), "{1} and then {0}"),
    (re.compile(r"^(.+?),? and after that (.+)$"), "{1} and after that {0}"),
    (re.compile(r"^(.+?) after (.+)$"), "{1} after {0}"),
    (re.compile(r"^(.+?) before (.+)$"), "{1} before {0}"),
    (re.compile(r"^(.+?),? then (.+)$"), "{1} then {0}"),
)
# verb phrases of the synthetic benchmark's actions whose reverse is another action
_TIMED = ("left", "right", "up", "down", "grows", "shrinks", "appears", "disappears")
_DIRECTED = re.compile(
    r"\b(" + "|".join(sorted({re.escape(v) for a in _TIMED for forms in ACTIONS[a] for v in forms},
                              key=len, reverse=True)) + r")\b"
)  # fmt: skip
_OBJECT = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})(s?)\b")


def order_swapped(caption: str) -> str | None:
    """The caption with its two events in the other order, or None when it tells no order."""
    text = " ".join(caption.strip().lower().split())
    for pattern, template in _ORDER:
        m = pattern.match(text)
        if m:
            swapped = template.format(*m.groups())
            return swapped if swapped != text else None
    return None


def object_swapped(caption: str, rng: np.random.Generator | None = None) -> str | None:
    """Two objects trade places (each now does the other's action); a caption with one object
    gets another colour instead. None when the caption names no (colour, shape) object."""
    text = " ".join(caption.strip().lower().split())
    found = list(_OBJECT.finditer(text))
    names = list(dict.fromkeys((m.group(1), m.group(2)) for m in found))
    if len(names) >= 2:
        a, b = names[0], names[1]

        def trade(m: re.Match[str]) -> str:
            colour, shape = (m.group(1), m.group(2))
            new = b if (colour, shape) == a else a if (colour, shape) == b else (colour, shape)
            return f"{new[0]} {new[1]}{m.group(3)}"

        return _OBJECT.sub(trade, text)
    if len(names) == 1:
        rng = rng or np.random.default_rng(0)
        others = [c for c in COLOURS if c != names[0][0]]
        colour = str(rng.choice(others))
        return _OBJECT.sub(lambda m: f"{colour} {m.group(2)}{m.group(3)}", text)
    return None


def swapped(caption: str, rng: np.random.Generator) -> str | None:
    """An order- or object-swapped version of the caption (chosen at random when both exist)."""
    options = [s for s in (order_swapped(caption), object_swapped(caption, rng)) if s]
    return str(options[int(rng.integers(len(options)))]) if options else None


def reversal_changes(caption: str) -> bool:
    """Whether the caption is false of its clip played backwards: it tells two events in order,
    or an action with a direction in time (a clip of something moving left, played backwards,
    shows it moving right)."""
    text = " ".join(caption.strip().lower().split())
    return order_swapped(text) is not None or _DIRECTED.search(text) is not None
