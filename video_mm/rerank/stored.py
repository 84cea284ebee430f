"""The clip features a re-ranker reads at search time, as the pipeline stores them.

The index holds one vector a clip; re-ranking needs the clip's frames. So when a video is
analysed, the retrieval model's input features of every clip (``[T, D]``, standardised as the
model reads them) and each frame's time within its clip (0..1) are written as one blob a video,
attached with kind :data:`CLIP_FEATURES`; search reads it back for the candidates it re-ranks.
A NumPy ``.npz`` (no pickle): ``f<index>`` and ``t<index>`` per clip.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np

CLIP_FEATURES = "clip_features"


def relative_times(timestamps: np.ndarray, start: float, end: float) -> np.ndarray:
    """Frame times in seconds -> their places in the clip ``[start, end)`` as 0..1."""
    span = max(end - start, 1e-6)
    return np.clip((np.asarray(timestamps, np.float64) - start) / span, 0.0, 1.0).astype(
        np.float32
    )


def clip_features_to_bytes(clips: Mapping[int, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """``{clip index: (features [T, D], times [T])}`` -> bytes."""
    arrays: dict[str, np.ndarray] = {}
    for index, (feats, times) in clips.items():
        arrays[f"f{index}"] = np.ascontiguousarray(feats, np.float32)
        arrays[f"t{index}"] = np.ascontiguousarray(times, np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def clip_features_from_bytes(data: bytes) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The inverse of :func:`clip_features_to_bytes`."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        indices = sorted(int(name[1:]) for name in z.files if name.startswith("f"))
        return {i: (z[f"f{i}"], z[f"t{i}"]) for i in indices}
