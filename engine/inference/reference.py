"""The shot's reference as the engine uses it: the image and the subject's mask at the shot's size.

The warp cuts the subject out of the reference by its mask (the background it leaves behind is
the camera's, the subject's thickness is the mask's), so every render needs one. The exporter
writes the mask it knows (``reference_mask.png``: a render pass of the armature's meshes, or a
user image's alpha); when a shot has none (schema 1, an image without alpha) or the one it has
cannot be right (empty, or the whole frame), the mask is estimated here with GrabCut, seeded
with the drawn first-frame skeleton as the subject and the frame's border as background.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from ..contract.shot import Shot, ShotError, read_reference, read_reference_mask
from .resize import resize_image

MAX_ASPECT_DIFFERENCE = 0.01
"""A reference whose aspect differs from the shot's by more than this is refused, not cropped:
cropping would cut the subject, stretching would distort it."""
MIN_COVERAGE, MAX_COVERAGE = 0.0005, 0.98
"""A mask covering less (nothing) or more (everything) than this share of the frame is no mask."""
GRABCUT_LONG_SIDE = 320
"""GrabCut runs at most at this size (its cost grows with pixels); the mask is scaled back."""
GRABCUT_ITERATIONS = 5
BORDER_FRACTION = 0.02
"""The frame's border this wide (share of the long side) seeds GrabCut as sure background."""
SUBJECT_BAND_FRACTION = 0.06
"""Around the drawn skeleton, this far (share of its extent) is probably subject."""


class ShotReference(NamedTuple):
    image: np.ndarray
    """(H,W,3) uint8 at the shot's size."""
    mask: np.ndarray
    """(H,W) float32 in 0..1: the subject's coverage in ``image``."""
    mask_source: str
    """"shot" (the shot folder's reference_mask.png) or "estimated" (GrabCut)."""
    notes: tuple[str, ...]
    """What the user may want to know: a scaled reference, an estimated mask and why."""


def fit_to_shot(image: np.ndarray, width: int, height: int, name: str) -> tuple[np.ndarray, str]:
    """``image`` at ``width`` x ``height``: scaled when its aspect is within 1 % of the shot's
    (with a note), refused with a ShotError when it is not."""
    source_height, source_width = image.shape[:2]
    if (source_width, source_height) == (width, height):
        return image, ""
    difference = abs((source_width / source_height) / (width / height) - 1.0)
    if difference > MAX_ASPECT_DIFFERENCE:
        raise ShotError(
            f"{name}: {source_width}x{source_height} does not have the shot's aspect "
            f"({width}x{height}, {difference:.0%} apart); crop it to {width}x{height} or "
            "re-export the shot"
        )
    resized = resize_image(image, width, height, "cubic")
    return resized, f"{name} {source_width}x{source_height} scaled to the shot's {width}x{height}"


def coverage_problem(mask: np.ndarray) -> str | None:
    """Why ``mask`` cannot be the subject's ("empty", "covers the whole frame"), or None."""
    share = float(mask.mean())
    if share < MIN_COVERAGE:
        return "is empty"
    if share > MAX_COVERAGE:
        return "covers the whole frame"
    return None


def _seed_labels(
    width: int, height: int, joints2d: np.ndarray, in_front: np.ndarray, edges: np.ndarray
) -> np.ndarray:
    """GrabCut's starting labels: the border sure background, the bones sure subject, a band
    around them probably subject, the rest probably background."""
    labels = np.full((height, width), cv2.GC_PR_BGD, dtype=np.uint8)
    drawn = edges[in_front[edges].all(axis=1)]
    points = np.rint(joints2d).astype(np.int32)
    shown = points[in_front]
    extent = float(np.ptp(shown, axis=0).max()) if len(shown) else 0.0
    band = max(2, round(SUBJECT_BAND_FRACTION * extent))
    for thickness, label in ((2 * band + 1, cv2.GC_PR_FGD), (1, cv2.GC_FGD)):
        for a, b in drawn:
            cv2.line(labels, tuple(points[a]), tuple(points[b]), int(label), thickness)
    border = max(1, round(BORDER_FRACTION * max(width, height)))
    labels[:border], labels[-border:] = cv2.GC_BGD, cv2.GC_BGD
    labels[:, :border], labels[:, -border:] = cv2.GC_BGD, cv2.GC_BGD
    return labels


def estimate_subject_mask(
    image: np.ndarray, joints2d: np.ndarray, in_front: np.ndarray, edges: np.ndarray
) -> np.ndarray:
    """The subject's coverage in ``image`` (H,W,3) uint8, (H,W) float32 in 0..1, by GrabCut
    seeded with the skeleton ``joints2d`` (J,2) (pixels of ``image``) as subject and the border
    as background. Without a bone in front of the camera, a band around the joints is returned."""
    height, width = image.shape[:2]
    scale = min(1.0, GRABCUT_LONG_SIDE / max(width, height))
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = resize_image(image, *small_size)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    labels = _seed_labels(*small_size, joints2d * scale, in_front, edges)
    if (labels == cv2.GC_FGD).any():
        background, foreground = np.zeros((2, 1, 65), dtype=np.float64)
        cv2.grabCut(
            small, labels, None, background, foreground, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK
        )
    subject = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    return np.clip(resize_image(subject, width, height, "cubic"), 0.0, 1.0)


def prepare_reference(
    shot: Shot, image: np.ndarray, mask: np.ndarray | None, mask_name: str = "reference mask"
) -> ShotReference:
    """The reference ``image`` and its ``mask`` (None: unknown) brought to the shot's size, the
    mask estimated when there is none or it cannot be the subject's."""
    notes = []
    image, note = fit_to_shot(np.asarray(image)[..., :3], shot.width, shot.height, "reference")
    notes += [note] if note else []
    source = "shot"
    if mask is not None:
        mask, note = fit_to_shot(np.asarray(mask, np.float32), shot.width, shot.height, mask_name)
        notes += [note] if note else []
        problem = coverage_problem(mask)
        if problem is not None:
            notes.append(
                f"warning: the {mask_name} {problem}; using a mask estimated from the reference "
                "and its skeleton instead (re-export with a reference that shows the subject)"
            )
            mask = None
    if mask is None:
        source = "estimated"
        mask = estimate_subject_mask(image, shot.joints2d[0], shot.in_front[0], shot.skeleton.edges)
        if not any(note.startswith("warning") for note in notes):
            notes.append(
                "the shot has no reference mask; the subject's mask was estimated from the "
                "reference and its skeleton (GrabCut)"
            )
    return ShotReference(image, np.clip(mask, 0.0, 1.0), source, tuple(notes))


def load_reference(folder: str | Path, shot: Shot) -> ShotReference:
    """A shot folder's reference image and subject mask, at the shot's size (see above)."""
    return prepare_reference(shot, read_reference(folder), read_reference_mask(folder))
