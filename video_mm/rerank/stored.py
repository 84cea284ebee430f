"""The clip features a re-ranker reads at search time, as the pipeline stores them.

The index holds one vector a clip; re-ranking needs the clip's frames. So when a video is
analysed, the re-ranker's input features of every clip (``[T, D]``, as the model reads them: the
retrieval model's inputs, or with a re-ranker that reads cells its k x k cells a frame; without a
re-ranker configured, the retrieval model's) and each frame's time within its clip (0..1) are
written as one blob a video, attached with kind :data:`CLIP_FEATURES`; search reads it back for
the candidates it re-ranks. When the re-ranker reads other features than the retrieval model,
the retrieval model's inputs are kept beside them: the first stage's logit that the re-ranker's
score adds is computed from them. A NumPy ``.npz`` (no pickle): ``f<index>``, ``t<index>`` and
optionally ``r<index>`` per clip.
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


def clip_features_to_bytes(
    clips: Mapping[int, tuple[np.ndarray, np.ndarray]],
    first_stage: Mapping[int, np.ndarray] | None = None,
) -> bytes:
    """``{clip index: (features [T, D], times [T])}`` (and the retrieval model's inputs by clip
    index, when they are other features) -> bytes."""
    arrays: dict[str, np.ndarray] = {}
    for index, (feats, times) in clips.items():
        arrays[f"f{index}"] = np.ascontiguousarray(feats, np.float32)
        arrays[f"t{index}"] = np.ascontiguousarray(times, np.float32)
    for index, feats in (first_stage or {}).items():
        arrays[f"r{index}"] = np.ascontiguousarray(feats, np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def clip_features_from_bytes(data: bytes) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The inverse of :func:`clip_features_to_bytes`: ``{clip index: (features, times, the
    retrieval model's inputs)}``, the last the features themselves when none were kept."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        indices = sorted(int(name[1:]) for name in z.files if name.startswith("f"))
        return {i: (z[f"f{i}"], z[f"t{i}"], z[f"r{i}"] if f"r{i}" in z.files else z[f"f{i}"])
                for i in indices}  # fmt: skip
