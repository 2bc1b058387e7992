"""Refuse a generated window that is not a video: non-finite values, or frames of one colour.

A model whose weights are damaged, or a sampler pushed past what it can hold, produces NaN or
a flat frame; cast to uint8 that is a black (or grey) video that looks like a success. Each
window is checked as it is generated, before anything of it is written.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadInput

FLAT_STD = 0.5
"""A frame whose pixels spread less than this (in 0..255 levels) is one colour."""
SAMPLE_STEP = 4
"""Every 4th pixel each way is enough to tell a picture from a flat colour, at 1/16 the cost
(non-finite values are looked for in every pixel: they may be in a small region only)."""


class GeneratedVideoError(BadInput):
    """The model generated frames that are no picture; no video was written."""


def _frame_spans(frames: list[int]) -> str:
    """``[1, 2, 3, 7]`` as ``"1-3, 7"`` (1-based frames of the shot)."""
    spans, start = [], frames[0]
    for previous, frame in zip(frames, [*frames[1:], None], strict=True):
        if frame != previous + 1:
            spans.append(f"{start}" if start == previous else f"{start}-{previous}")
            start = frame
    return ", ".join(spans)


def check_generated_frames(frames: np.ndarray, first_frame: int, reference: np.ndarray) -> None:
    """Raise ``GeneratedVideoError`` when ``frames`` ((n,h,w,3) float, the shot's frames from
    index ``first_frame``) hold NaN or infinity, or when one is a flat colour although the
    ``reference`` image ((h,w,3)) is not."""
    broken = np.array([not np.isfinite(frame).all() for frame in frames])  # a frame at a time
    what = "non-finite values (NaN or infinity)"
    if not broken.any():
        reference_flat = reference[::SAMPLE_STEP, ::SAMPLE_STEP].std() < FLAT_STD
        sample = frames[:, ::SAMPLE_STEP, ::SAMPLE_STEP]
        broken = np.zeros(len(frames), bool) if reference_flat else _flat(sample)
        what = "a single flat colour"
    if broken.any():
        spans = _frame_spans((np.flatnonzero(broken) + first_frame + 1).tolist())
        raise GeneratedVideoError(
            f"the model generated {what} for frames {spans}, so no video was written; its "
            "weights may be damaged (reinstall or retrain the model folder) or the guidance is "
            "too strong (lower --guidance / --camera-guidance)"
        )


def _flat(sample: np.ndarray) -> np.ndarray:
    """One bool a frame: its pixels spread less than ``FLAT_STD`` in every channel."""
    spread = sample.reshape(len(sample), -1, sample.shape[-1]).std(axis=1)
    return (spread < FLAT_STD).all(axis=1)
