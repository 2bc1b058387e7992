"""The release's skeleton images and part masks, for the full model (OpenCV, scikit-image).

The official weights were trained and tested on skeleton images drawn one way and on part masks
cut from those images another way: the release's ``Extractor/skeleton.py`` (with BlumNet's
``PostProcess.visualise_pts``) draws, its ``examples/wanvideo/model_inference/data_utils.py``
resizes and segments. This module does both the same way, with the same OpenCV and
scikit-image calls, so the full model sees the kind of input it knows
(``tests/test_official_parity.py`` holds the release's own output for a small graph):

- skeleton images are drawn at the source resolution (the shot's size; the release's videos):
  3 px white polylines, then green endpoint and red junction dots of radius 2 and thickness 2,
  and resized bilinearly (Pillow) to the working size, whose long side is 832 and whose sides
  are floored to multiples of 32 (``long_side_size``); frames without a pose stay black;
- part masks come from the skeleton image of each posed frame: thinned to a medial line
  (scikit-image), cut at its endpoints and junctions, the pieces merged (the smallest into its
  nearest) until at most 5 remain and none is shorter than 20 px, each dilated as often as the
  first frame's skeleton needs to cover the subject, the first frame's ANDed with the subject
  mask, then nearest-resized to the token grid (32 px a token).

The default model draws at its own working size straight from the rig and takes its part masks
from the rig's bone chains (``contract.skeleton``), which serves a small model better.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ..model.ptcm import FramePartMasks
from .resize import resize_image

LONG_SIDE = 832
SIZE_MULTIPLE = 32
"""Working size: long side 832, both sides floored to this (VAE 16 x patch 2 = one token)."""
BONE_THICKNESS = 3
DOT_RADIUS = 2
DOT_THICKNESS = 2
BONE_COLOR = (255, 255, 255)
ENDPOINT_COLOR = (0, 255, 0)
JUNCTION_COLOR = (255, 0, 0)
"""RGB; the release writes BGR (0, 0, 255), the same red."""
SKELETON_THRESHOLD = 127
"""Grey level above which a pixel is skeleton: white bones and green dots are, red dots not."""
SUBJECT_THRESHOLD = 245
"""Grey level at or below which a pixel of the subject image (subject on white) is subject."""
MAX_PARTS = 5
MIN_PART_PIXELS = 20
MAX_DILATIONS = 100
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _cv2():
    try:
        import cv2
    except ImportError as error:
        raise ImportError(
            "The full model's skeleton images and part masks need OpenCV: "
            "pip install opencv-python-headless (the default model does not)"
        ) from error
    return cv2


def long_side_size(
    width: int, height: int, long_side: int = LONG_SIDE, multiple: int = SIZE_MULTIPLE
) -> tuple[int, int]:
    """The release's working size (``data_utils.crop_and_resize``): the long side scaled to
    ``long_side``, both sides floored to multiples of ``multiple`` (1920x1080 -> 832x448)."""
    longest = max(width, height)
    return (
        int(width * long_side / longest) // multiple * multiple,
        int(height * long_side / longest) // multiple * multiple,
    )


def draw_skeletons(
    joints2d: np.ndarray,
    in_front: np.ndarray,
    edges: np.ndarray,
    width: int,
    height: int,
    pose_frames=None,
) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB skeleton images drawn as the release draws them.

    Every bone is a polyline of its two joints (pixel coordinates truncated, as the release
    casts to int32), bones with a joint behind the camera are left out; then dots on the
    endpoints (joints with one bone) and on the junctions (three or more), endpoints first.
    """
    cv2 = _cv2()
    joints2d = np.asarray(joints2d, dtype=np.float64)
    in_front = np.asarray(in_front, dtype=bool)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    num_frames, num_joints = joints2d.shape[:2]
    degree = np.bincount(edges.ravel(), minlength=num_joints)
    endpoints, junctions = np.flatnonzero(degree == 1), np.flatnonzero(degree >= 3)
    out = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    frames = range(num_frames) if pose_frames is None else sorted(set(pose_frames))
    for f in frames:
        canvas = out[f]
        points = joints2d[f].astype(np.int32)
        for a, b in edges[in_front[f][edges].all(axis=1)]:
            bone = np.stack([points[a], points[b]])
            cv2.polylines(canvas, [bone], False, BONE_COLOR, thickness=BONE_THICKNESS)
        for joints, color in ((endpoints, ENDPOINT_COLOR), (junctions, JUNCTION_COLOR)):
            for j in joints[in_front[f][joints]]:
                center = (int(points[j, 0]), int(points[j, 1]))
                cv2.circle(canvas, center, DOT_RADIUS, color, thickness=DOT_THICKNESS)
    return out


def grey(image: np.ndarray) -> np.ndarray:
    """Grey levels of an RGB uint8 image, OpenCV's (0.299, 0.587, 0.114), as the release reads
    skeleton PNGs in grey (red dots 76, green dots 150, white bones 255)."""
    return _cv2().cvtColor(np.ascontiguousarray(image), _cv2().COLOR_RGB2GRAY)


def subject_image(mask: np.ndarray) -> np.ndarray:
    """A subject mask as the release's subject image: the subject black on white, BGR."""
    image = np.full((*mask.shape, 3), 255, dtype=np.uint8)
    image[np.asarray(mask, dtype=bool)] = 0
    return image


Size = tuple[int, int] | None
"""(width, height) the masks are cut at: the working size; None: the release's own
(``long_side_size`` of the image), which the full model's working size is too."""


def _to_working_size(image: np.ndarray, size: Size) -> np.ndarray:
    """``data_utils.resize_image``: bilinear (OpenCV) to the working size."""
    height, width = image.shape[:2]
    size = long_side_size(width, height) if size is None else size
    return _cv2().resize(image, size, interpolation=_cv2().INTER_LINEAR)


def _subject_mask(subject_bgr: np.ndarray, size: Size) -> np.ndarray:
    cv2 = _cv2()
    subject_grey = cv2.cvtColor(_to_working_size(subject_bgr, size), cv2.COLOR_BGR2GRAY)
    _, mask = cv2.threshold(subject_grey, SUBJECT_THRESHOLD, 255, cv2.THRESH_BINARY_INV)
    return np.where(mask > 0, 255, 0).astype(np.uint8)


def _kernel():
    cv2 = _cv2()
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


def needed_dilation(subject_bgr: np.ndarray, skeleton_grey: np.ndarray, size: Size = None) -> int:
    """How often the first frame's skeleton is dilated so that it covers the subject, plus one
    (``data_utils.calculate_needed_dilation``); 1 for an empty subject, at most 100."""
    cv2 = _cv2()
    subject = _subject_mask(subject_bgr, size)
    skeleton = _to_working_size(skeleton_grey, size)
    if subject.shape != skeleton.shape:
        size = (skeleton.shape[1], skeleton.shape[0])
        subject = cv2.resize(subject, size, interpolation=cv2.INTER_LINEAR)
    _, covered = cv2.threshold(skeleton, SKELETON_THRESHOLD, 255, cv2.THRESH_BINARY)
    total = cv2.countNonZero(subject)
    if total == 0:
        return 1
    for count in range(MAX_DILATIONS):
        if cv2.countNonZero(cv2.bitwise_and(covered, subject)) >= total:
            return count + 1
        covered = cv2.dilate(covered, _kernel(), iterations=1)
    return MAX_DILATIONS


def _medial_pieces(skeleton_grey: np.ndarray) -> tuple[list[np.ndarray], tuple[int, int]]:
    """The thinned skeleton cut at its endpoints and junctions: each piece's pixels as (N, 2)
    (x, y), in the order the release's raster-scan BFS finds them; pieces of one pixel dropped."""
    cv2 = _cv2()
    from skimage.morphology import skeletonize

    _, binary = cv2.threshold(skeleton_grey, SKELETON_THRESHOLD, 255, cv2.THRESH_BINARY)
    skeleton = skeletonize(binary // 255).astype(np.uint8)
    height, width = skeleton.shape
    padded = np.pad(skeleton, 1)
    count = sum(
        padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width].astype(np.int32)
        for dy, dx in NEIGHBOURS
    )
    interior = np.zeros_like(skeleton, dtype=bool)
    interior[1:-1, 1:-1] = True
    keys = interior & (skeleton == 1) & ((count == 1) | (count > 2))
    rest = ((skeleton == 1) & ~keys).astype(np.uint8)
    _, labels = cv2.connectedComponents(rest, connectivity=8)
    flat = labels.ravel()
    ids, first, sizes = np.unique(flat, return_index=True, return_counts=True)
    order = [i for i in np.argsort(first, kind="stable") if ids[i] != 0 and sizes[i] > 1]
    pieces = []
    for i in order:
        ys, xs = np.nonzero(labels == ids[i])
        pieces.append(np.stack([xs, ys], axis=1))
    return pieces, (height, width)


def _merge_pieces(pieces: list[np.ndarray]) -> list[np.ndarray]:
    """Merge the smallest piece into its nearest (least pixel distance; first on ties) while
    more than 5 remain or one is shorter than 20 px, as ``segment_skeleton`` does."""
    pieces = list(pieces)
    while pieces and (len(pieces) > MAX_PARTS or min(len(p) for p in pieces) < MIN_PART_PIXELS):
        smallest = int(np.argmin([len(p) for p in pieces]))
        nearest, best = -1, float("inf")
        for i, other in enumerate(pieces):
            if i == smallest:
                continue
            distance = np.min(np.linalg.norm(pieces[smallest][:, None] - other, axis=2))
            if distance < best:
                nearest, best = i, distance
        if nearest == -1:
            break
        pieces[nearest] = np.concatenate([pieces[nearest], pieces[smallest]])
        pieces.pop(smallest)
    return pieces


def segment_skeleton(
    skeleton_grey: np.ndarray, subject_bgr: np.ndarray | None, dilation: int, size: Size = None
) -> list[np.ndarray]:
    """One frame's part masks at the release's working size, uint8 0/255 each
    (``data_utils.segment_skeleton``); with ``subject_bgr`` (the first frame) ANDed with the
    subject."""
    cv2 = _cv2()
    resized = _to_working_size(skeleton_grey, size)
    pieces, shape = _medial_pieces(resized)
    subject = None if subject_bgr is None else _subject_mask(subject_bgr, size)
    masks = []
    for piece in _merge_pieces(pieces):
        mask = np.zeros(shape, dtype=np.uint8)
        mask[piece[:, 1], piece[:, 0]] = 255
        mask = cv2.dilate(mask, _kernel(), iterations=dilation)
        if subject is not None:
            if subject.shape != mask.shape:
                size = (mask.shape[1], mask.shape[0])
                subject = cv2.resize(subject, size, interpolation=cv2.INTER_LINEAR)
            mask = cv2.bitwise_and(mask, subject)
        masks.append(mask)
    return masks


def part_masks(
    grey_of: Callable[[int], np.ndarray],
    pose_frames: Sequence[int],
    subject_bgr: np.ndarray | None,
    num_frames: int,
    size: Size = None,
    grid: tuple[int, int] | None = None,
) -> FramePartMasks:
    """The release's part masks of a window on the token grid, for PTCM.

    grey_of(frame): the skeleton image of a posed video frame in grey at the source resolution
    (asked once per frame, so a long window at 1080p never holds all its images); pose_frames:
    the posed frames, frame 0 among them; subject_bgr: the subject image of frame 0 (subject on
    white, ``subject_image``), None for none (then nothing is ANDed and one dilation is used, as
    the release does without a subject image); size: see ``Size``; grid: the token grid
    (rows, columns), by default the size over 32 (the release's VAE 16 x patch 2).
    """
    cv2 = _cv2()
    frames = sorted(set(pose_frames))
    if not frames or frames[0] != 0:
        raise ValueError("part masks need the first frame's skeleton (the reference's pose)")
    first = grey_of(0)
    dilation = 1 if subject_bgr is None else needed_dilation(subject_bgr, first, size)
    if grid is None:
        height, width = _to_working_size(first, size).shape[:2]
        grid = (height // SIZE_MULTIPLE, width // SIZE_MULTIPLE)
    per_frame: dict[int, list[np.ndarray]] = {}
    for frame in frames:
        image = first if frame == 0 else grey_of(frame)
        masks = segment_skeleton(image, subject_bgr if frame == 0 else None, dilation, size)
        per_frame[frame] = [
            cv2.resize(mask, grid[::-1], interpolation=cv2.INTER_NEAREST) > 127 for mask in masks
        ]
    most = max(1, max(len(masks) for masks in per_frame.values()))
    stacked = np.zeros((num_frames, most, *grid), dtype=bool)
    posed = np.zeros(num_frames, dtype=bool)
    for frame, masks in per_frame.items():
        if frame < num_frames:
            posed[frame] = True
            if masks:
                stacked[frame, : len(masks)] = np.stack(masks)
    return FramePartMasks(torch.from_numpy(stacked), len(per_frame[0]), torch.from_numpy(posed))


def readable_edges(
    joints2d: np.ndarray, in_front: np.ndarray, edges: np.ndarray, min_length: float
) -> np.ndarray:
    """(E,) bool: bones whose longest drawn length over the frames reaches ``min_length`` (in
    the units of ``joints2d``). The release's skeletons are medial axes of whole bodies; a rig's
    face and finger bones, far shorter, would draw a tangle of dots where it has a line."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if min_length <= 0 or len(edges) == 0:
        return np.ones(len(edges), dtype=bool)
    lengths = np.linalg.norm(joints2d[:, edges[:, 0]] - joints2d[:, edges[:, 1]], axis=-1)
    drawn = np.asarray(in_front, dtype=bool)[:, edges].all(-1)
    return np.where(drawn, lengths, 0.0).max(axis=0) >= min_length


def skeleton_video(
    joints2d: np.ndarray,
    in_front: np.ndarray,
    edges: np.ndarray,
    source_size: tuple[int, int],
    size: tuple[int, int],
    pose_frames: Sequence[int] | None = None,
) -> np.ndarray:
    """(F, h, w, 3) uint8: each frame drawn at ``source_size`` (``draw_skeletons``) and resized to
    ``size`` as the release loads them (``resize_image``, "release"), one at a time; frames
    not in ``pose_frames`` stay black."""
    num_frames = len(joints2d)
    video = np.zeros((num_frames, size[1], size[0], 3), dtype=np.uint8)
    for f in range(num_frames) if pose_frames is None else sorted(set(pose_frames)):
        drawn = draw_skeletons(joints2d[f : f + 1], in_front[f : f + 1], edges, *source_size)
        video[f] = resize_image(drawn[0], *size, "release")
    return video


class ReleaseStyle:
    """The release's skeleton images and part masks for the windows of one shot.

    ``given``: the skeleton images of a shot that has no joints (``pose_source`` "images"),
    shot frame -> (H, W, 3) uint8 at their own size; otherwise each track is drawn at the shot's
    size, leaving out bones shorter than ``min_bone`` pixels at the working size
    (``readable_edges``). ``subject_mask``: the reference's subject at the shot's size (0..1),
    None when the shot has none (then, as in the release without a subject image, the part
    masks are not cut to a subject).
    """

    def __init__(
        self,
        source_size: tuple[int, int],
        size: tuple[int, int],
        min_bone: float = 0.0,
        given: Mapping[int, np.ndarray] | None = None,
        subject_mask: np.ndarray | None = None,
    ) -> None:
        self.source_size = source_size
        self.size = size
        self.min_bone = min_bone
        self.given = given
        self.subject = None if subject_mask is None else subject_image(subject_mask > 0.5)

    def _edges(self, track) -> np.ndarray:
        scale = np.array(self.size) / np.array(self.source_size)
        keep = readable_edges(track.joints2d * scale, track.in_front, track.edges, self.min_bone)
        return track.edges[keep]

    def video(self, track, frames: np.ndarray, poses: Sequence[int] | None) -> np.ndarray:
        """(len(frames), h, w, 3) uint8: the track's (or the given) skeleton images of the
        window's shot ``frames``, black where the window has no pose."""
        if self.given is not None:
            video = np.zeros((len(frames), self.size[1], self.size[0], 3), dtype=np.uint8)
            for i in self._posed(frames, poses):
                video[i] = resize_image(self.given[int(frames[i])], *self.size, "release")
            return video
        return skeleton_video(
            track.joints2d[frames],
            track.in_front[frames],
            self._edges(track),
            self.source_size,
            self.size,
            poses,
        )

    def _posed(self, frames: np.ndarray, poses: Sequence[int] | None) -> list[int]:
        posed = range(len(frames)) if poses is None else poses
        if self.given is None:
            return sorted(set(posed))
        return sorted(i for i in set(posed) if int(frames[i]) in self.given)

    def part_masks(
        self, track, frames: np.ndarray, poses: Sequence[int] | None, grid: tuple[int, int]
    ) -> FramePartMasks:
        """The window's part masks on the token ``grid``, cut from its skeleton images at the
        shot's size, the first frame's (the reference's) against the subject."""
        if self.given is not None:

            def grey_of(i: int) -> np.ndarray:
                return grey(self.given[int(frames[i])])

        else:
            edges = self._edges(track)

            def grey_of(i: int) -> np.ndarray:
                drawn = draw_skeletons(
                    track.joints2d[frames[i : i + 1]],
                    track.in_front[frames[i : i + 1]],
                    edges,
                    *self.source_size,
                )
                return grey(drawn[0])

        posed = sorted({0, *self._posed(frames, poses)})
        return part_masks(grey_of, posed, self.subject, len(frames), self.size, grid)
