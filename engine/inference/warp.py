"""The reference frame moved along the skeleton and the camera: the default model's flow start.

A two-core model cannot learn in an hour how every pixel of a subject follows its bones, but
that motion is mostly geometry the shot already gives: each bone's 2D motion says where the
pixels near it go, and the camera-only anchor (a rectangle fixed in the world, see
``guidance.rectangle_track``) says where the background goes. ``warp_reference`` backward-warps
the reference frame with both, like 2D linear-blend skinning:

- near the skeleton (within the subject radius) a pixel follows the nearest bones: it keeps its
  position along the bone and its offset across it, rotated with the bone;
- elsewhere it follows the homography that maps the rectangle back to the first frame, sampled
  from the reference with the subject filled in by its surroundings (so a subject that walks away
  leaves background behind, not a ghost).

The diffusion model then starts its flow from this video instead of the repeated reference and
predicts the change from it: what the warp cannot know (occlusion order, cloth, lighting) is left
to the network. Without a skeleton (the blank / no-pose condition) the warp is the identity.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .guidance import SkeletonTrack

# The subject's radius as a fraction of the skeleton's extent in the first frame. The synthetic
# bodies' capsules have radii of 3-8 % of the creature's size; on 30 training clips 0.04 gave
# the best subject-region PSNR of 0.02-0.1.
RADIUS_FRACTION = 0.04
MIN_RADIUS_PX = 1.5
ANCHOR_MOTIONS = {
    "full": (True, True),
    "subject": (True, False),
    "camera": (False, True),
    "blank": (False, False),
}
"""What the flow base of each guidance anchor (and of the blank no-pose input) moves:
(the subject along its skeleton, the background with the camera)."""


def subject_radius(joints2d: np.ndarray, in_front: np.ndarray) -> float:
    """The subject's half-thickness in pixels, from the extent of its first-frame joints."""
    visible = joints2d[in_front] if in_front.any() else joints2d.reshape(-1, 2)
    extent = float(np.ptp(visible, axis=0).max()) if len(visible) else 0.0
    return max(RADIUS_FRACTION * extent, MIN_RADIUS_PX)


def fit_homography(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 3x3 homography taking the 4+ points ``source`` (N,2) onto ``target`` (N,2) (DLT)."""
    rows = []
    for (x, y), (u, v) in zip(source, target, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.asarray(rows, dtype=np.float64))
    matrix = vt[-1].reshape(3, 3)
    return matrix / matrix[2, 2]


def camera_homographies(corners: np.ndarray, in_front: np.ndarray) -> np.ndarray:
    """(F,3,3) homographies mapping frame t's pixels to frame 0's, from the camera rectangle's
    corners (F,4,2); identity where a corner is behind the camera or the fit is degenerate."""
    out = np.repeat(np.eye(3)[None], len(corners), axis=0)
    for t in range(1, len(corners)):
        if in_front[t].all() and in_front[0].all():
            matrix = fit_homography(corners[t], corners[0])
            if np.isfinite(matrix).all():
                out[t] = matrix
    return out


def fill_holes(image: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fill ``image`` (C,H,W) where ``valid`` (1,H,W) is false from its valid surroundings
    (pull-push: masked averages down a pyramid, bilinear back up)."""
    if bool(valid.all()) or not bool(valid.any()):
        return image
    if min(image.shape[-2:]) < 2:
        mean = (image * valid).sum((-2, -1), keepdim=True) / valid.sum()
        return torch.where(valid, image, mean.expand_as(image))
    weight = F.avg_pool2d(valid[None].float(), 2, ceil_mode=True)[0]
    pooled = F.avg_pool2d((image * valid)[None], 2, ceil_mode=True)[0] / weight.clamp_min(1e-6)
    coarse = fill_holes(pooled, weight > 0)
    up = F.interpolate(coarse[None], size=image.shape[-2:], mode="bilinear", align_corners=False)
    return torch.where(valid, image, up[0])


def _segment_coordinates(pixels: torch.Tensor, start: torch.Tensor, end: torch.Tensor):
    """Each pixel's position along each bone (u in [0,1]) and its offset from the closest point.

    pixels (N,2), start/end (E,2) -> u (N,E), offset (N,E,2), distance (N,E)."""
    direction = end - start
    length2 = (direction * direction).sum(-1).clamp_min(1e-6)
    u = (((pixels[:, None] - start[None]) * direction[None]).sum(-1) / length2).clamp(0.0, 1.0)
    offset = pixels[:, None] - (start[None] + u[..., None] * direction[None])
    return u, offset, offset.norm(dim=-1)


def _rotate(vectors: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x, y = vectors[..., 0], vectors[..., 1]
    return torch.stack([cos * x - sin * y, sin * x + cos * y], dim=-1)


def bone_coordinates(
    joints_ref: np.ndarray,
    joints: np.ndarray,
    valid: np.ndarray,
    edges: np.ndarray,
    width: int,
    height: int,
    radius: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each of frame t's pixels was in the reference if it rode on the skeleton.

    Returns (H*W,2) reference coordinates (a soft blend over the bones nearer than about
    ``radius``) and each pixel's (H*W,) distance to the nearest bone (inf without bones)."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32) + 0.5,
        torch.arange(width, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    pixels = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)
    keep = valid[edges[:, 0]] & valid[edges[:, 1]]
    if not keep.any():
        return pixels, torch.full((len(pixels),), torch.inf)
    edges = edges[keep]
    ref = torch.from_numpy(joints_ref).float()
    cur = torch.from_numpy(joints).float()
    u, offset, distance = _segment_coordinates(pixels, cur[edges[:, 0]], cur[edges[:, 1]])
    dir_cur = cur[edges[:, 1]] - cur[edges[:, 0]]
    dir_ref = ref[edges[:, 1]] - ref[edges[:, 0]]
    angle = torch.atan2(dir_ref[:, 1], dir_ref[:, 0]) - torch.atan2(dir_cur[:, 1], dir_cur[:, 0])
    # A bone seen end-on has no direction; it then carries its pixels without turning them.
    degenerate = (dir_cur.norm(dim=-1) < 0.5) | (dir_ref.norm(dim=-1) < 0.5)
    angle = torch.where(degenerate, torch.zeros_like(angle), angle)
    along = ref[edges[:, 0]][None] + u[..., None] * dir_ref[None]
    source = along + _rotate(offset, torch.cos(angle)[None], torch.sin(angle)[None])
    nearest = distance.min(dim=1).values
    weights = torch.softmax(-(distance - nearest[:, None]) / (0.3 * radius), dim=1)
    return (weights[..., None] * source).sum(1), nearest


def _inside(distance: torch.Tensor, radius: float) -> torch.Tensor:
    """Soft membership of a band of ``radius`` around the skeleton: 1 inside, 0 outside."""
    return torch.sigmoid((radius - distance) / (0.2 * radius))


def _sample(image: torch.Tensor, coords: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear samples of ``image`` (C,H,W) at pixel coordinates (N,2): (C,N)."""
    grid = coords / torch.tensor([width, height], dtype=coords.dtype) * 2.0 - 1.0
    sampled = F.grid_sample(
        image[None], grid[None, None], mode="bilinear", padding_mode="border", align_corners=False
    )
    return sampled[0, :, 0]


class WarpedReference(NamedTuple):
    frames: np.ndarray
    """(F,H,W,3) float32 in 0..255: the reference moved frame by frame."""
    region: np.ndarray
    """(F,H,W) float32 in 0..1: where the warp is a guess, which the network should repaint:
    around the moved skeleton (``REGION_RADII`` subject radii) and the background the subject
    uncovered. Outside it a still scene seen by the moving camera is the warp exactly. Ones
    when there is no skeleton: then nothing says where the subject is."""


REGION_RADII = 2.0


def warp_reference(
    reference: np.ndarray,
    num_frames: int,
    skeleton: SkeletonTrack | None,
    camera: SkeletonTrack | None,
) -> WarpedReference:
    """The reference (H,W,3) uint8 carried through ``num_frames``, with its guess region.

    ``skeleton``: the subject's joints at the reference's size, frame 0 in the reference's pose
    (None: the subject holds still). ``camera``: the camera rectangle's 4 corners (None: the
    camera holds still). Frame 0 is the reference itself; with neither, every frame is."""
    height, width = reference.shape[:2]
    frames = np.empty((num_frames, height, width, 3), dtype=np.float32)
    frames[:] = reference
    region = np.ones((num_frames, height, width), dtype=np.float32)
    if skeleton is None and camera is None:
        return WarpedReference(frames, region)
    image = torch.from_numpy(np.array(reference, dtype=np.float32)).permute(2, 0, 1)
    homographies = (
        np.repeat(np.eye(3)[None], num_frames, axis=0)
        if camera is None
        else camera_homographies(camera.joints2d, camera.in_front)
    )
    ys, xs = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    pixels = np.stack([xs.reshape(-1), ys.reshape(-1), np.ones(xs.size)], axis=-1)
    background = image
    if skeleton is not None:
        joints, in_front, edges = skeleton.joints2d, skeleton.in_front, skeleton.edges
        radius = subject_radius(joints[0], in_front[0])
        _, distance = bone_coordinates(
            joints[0], joints[0], in_front[0], edges, width, height, radius
        )
        on_reference = _inside(distance, radius).reshape(1, height, width)
        background = fill_holes(image, on_reference < 0.05)
        # Where the reference's subject (with a margin) was: the background there is a guess.
        uncovered = _inside(distance, REGION_RADII * radius).reshape(1, height, width)
    for t in range(num_frames):
        mapped = pixels @ homographies[t].T
        back = torch.from_numpy(mapped[:, :2] / mapped[:, 2:3]).float()
        frame = _sample(background, back, width, height)
        if skeleton is not None:
            coords, distance = bone_coordinates(
                joints[0], joints[t], in_front[0] & in_front[t], edges, width, height, radius
            )
            frame = torch.lerp(
                frame, _sample(image, coords, width, height), _inside(distance, radius)[None]
            )
            guess = torch.maximum(
                _inside(distance, REGION_RADII * radius),
                _sample(uncovered, back, width, height)[0],
            )
            region[t] = guess.reshape(height, width).numpy()
        if t > 0:
            frames[t] = frame.T.reshape(height, width, 3).numpy()
    return WarpedReference(frames, region)


def shown_frames_only(track: SkeletonTrack, posed: np.ndarray | None) -> SkeletonTrack:
    """Sparse poses: the track with the frames whose skeleton is not shown replaced by a linear
    interpolation between the nearest shown ones (held after the last), so the warp knows no
    more than the skeleton video does. ``posed`` (F,) bool, frame 0 always counts as shown."""
    if posed is None or posed.all():
        return track
    shown = np.flatnonzero(posed | (np.arange(len(posed)) == 0))
    frames = np.arange(len(posed))
    left = shown[np.searchsorted(shown, frames, side="right") - 1]
    right = shown[np.minimum(np.searchsorted(shown, frames, side="left"), len(shown) - 1)]
    span = np.maximum(right - left, 1)
    t = np.clip((frames - left) / span, 0.0, 1.0)[:, None, None]
    joints = (1 - t) * track.joints2d[left] + t * track.joints2d[right]
    return SkeletonTrack(joints, track.in_front[left] & track.in_front[right], track.edges)


def flow_base(
    reference: np.ndarray,
    anchor: str,
    skeleton: SkeletonTrack | None,
    rectangle: SkeletonTrack | None,
    num_frames: int,
    posed: np.ndarray | None = None,
) -> WarpedReference:
    """The flow base of a guidance anchor (or the "blank" no-pose condition): the reference
    moved by what that anchor's skeleton video shows (``ANCHOR_MOTIONS``).

    ``skeleton``: the anchor's own joints (the shot's for "full", the camera-free ones for
    "subject"); ``rectangle``: the camera rectangle, both for this window at working size."""
    moves_subject, moves_camera = ANCHOR_MOTIONS[anchor]
    return warp_reference(
        reference,
        num_frames,
        shown_frames_only(skeleton, posed) if moves_subject and skeleton is not None else None,
        shown_frames_only(rectangle, posed) if moves_camera and rectangle is not None else None,
    )
