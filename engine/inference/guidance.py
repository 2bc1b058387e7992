"""Subject and Camera Motion Decoupled CFG: the three pose anchors of a shot and how to mix them.

A shot's skeleton video mixes two motions: the subject's own and the camera's. The paper steers
them apart with classifier-free guidance between two pose anchors,
``eps = eps(camera-only) + s * (eps(subject-only) - eps(camera-only))``. We keep that form and add
one term so the camera motion has its own dial (``eps_a`` = the prediction under anchor ``a``):

    eps = eps_camera + s_subject * (eps_subject - eps_camera) + s_camera * (eps_full - eps_subject)

- ``subject`` anchor: the subject's motion with the camera motion taken out (``joints3d``
  reprojected through the fixed first-frame camera),
- ``camera`` anchor: the camera motion only (a rectangle fixed in the world at the subject's depth,
  seen by each frame's camera; or the static first-frame skeleton, as the released code does),
- ``full`` anchor: the shot's own skeleton (subject and camera motion).

``s_subject = s_camera = 1`` gives ``eps(full)``: the shot as exported. ``s_camera = 0`` is the
paper's two-anchor form, a locked-off camera; ``s_camera > 1`` exaggerates the camera motion and
``s_subject > 1`` pushes the subject's motion away from the camera-only anchor. The formula is a
weighted sum of the three predictions whose weights add up to one, so an anchor whose weight is
zero is never evaluated and the remaining ones go through the model in one batched forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..contract.camera import pixels_per_unit, project_points
from ..contract.shot import Shot, ShotError

ANCHOR_NAMES = ("camera", "subject", "full")
CameraAnchorKind = Literal["rectangle", "static"]

# The rectangle anchor's corners, as fractions of the first frame: inset so that its edges are
# drawn (a rectangle on the border would be clipped away) while still spanning the view.
RECTANGLE_INSET = 0.1
RECTANGLE_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0]], dtype=np.int32)


@dataclass(frozen=True)
class SkeletonTrack:
    """A skeleton moving in the shot's pixels: what gets drawn into a pose video."""

    joints2d: np.ndarray  # (F, J, 2) pixels, origin top-left, at the shot's width x height
    in_front: np.ndarray  # (F, J) bool, joint in front of the camera
    edges: np.ndarray  # (E, 2) int
    depth: np.ndarray | None = None
    """(F, J) each joint's distance along the camera's view axis: what the warp's occlusion
    order follows (None: no order)."""
    pixel_scale: np.ndarray | None = None
    """(F, J) pixels one world unit spans at each joint, across the view: how much thicker the
    subject looks there than in another frame (None: as thick as in the first frame)."""

    def select(self, frames=slice(None), scale: float | np.ndarray = 1.0) -> SkeletonTrack:
        """The track over ``frames`` (a slice or indices), its pixels scaled by ``scale``."""
        depth = None if self.depth is None else self.depth[frames]
        pixel_scale = (
            None if self.pixel_scale is None else self.pixel_scale[frames] * float(np.mean(scale))
        )
        joints = self.joints2d[frames] * scale
        return SkeletonTrack(joints, self.in_front[frames], self.edges, depth, pixel_scale)


def anchor_weights(subject: float, camera: float) -> dict[str, float]:
    """The weight of each anchor's prediction in the decoupled-CFG mix (they sum to one)."""
    return {"camera": 1.0 - subject, "subject": subject - camera, "full": camera}


def anchors_needed(subject: float, camera: float) -> tuple[str, ...]:
    """Anchors with a non-zero weight, in ``ANCHOR_NAMES`` order: only these are evaluated."""
    weights = anchor_weights(subject, camera)
    return tuple(name for name in ANCHOR_NAMES if weights[name] != 0.0)


def combine(predictions, names: tuple[str, ...], subject: float, camera: float):
    """Mix batched predictions ``(len(names) * B, ...)`` (anchor-major) into ``(B, ...)``."""
    weights = anchor_weights(subject, camera)
    chunks = predictions.chunk(len(names), dim=0)
    return sum(chunk * weights[name] for name, chunk in zip(names, chunks, strict=True))


def full_track(shot: Shot) -> SkeletonTrack:
    """The shot's own skeleton: subject and camera motion together."""
    path = shot.camera_path
    return SkeletonTrack(
        shot.joints2d,
        shot.in_front,
        shot.skeleton.edges,
        shot.depth,
        pixels_per_unit(path.K, shot.depth, path.cam_type),
    )


def _repeat_first(array: np.ndarray, num_frames: int) -> np.ndarray:
    return np.repeat(array[:1], num_frames, axis=0)


def subject_track(shot: Shot) -> SkeletonTrack:
    """The subject's motion with the camera held at its first-frame pose and lens."""
    path = shot.camera_path
    num_frames = shot.num_frames
    joints2d, depth, _ = project_points(
        shot.joints3d,
        _repeat_first(path.K, num_frames),
        _repeat_first(path.w2c, num_frames),
        path.cam_type,
        path.width,
        path.height,
    )
    scale = pixels_per_unit(_repeat_first(path.K, num_frames), depth, path.cam_type)
    return SkeletonTrack(joints2d, depth > 0, shot.skeleton.edges, depth, scale)


def static_track(shot: Shot) -> SkeletonTrack:
    """The first-frame skeleton held still: no subject and no camera motion."""
    num_frames = shot.num_frames
    return SkeletonTrack(
        _repeat_first(shot.joints2d, num_frames),
        _repeat_first(shot.in_front, num_frames),
        shot.skeleton.edges,
        _repeat_first(shot.depth, num_frames),
        _repeat_first(full_track(shot).pixel_scale, num_frames),
    )


def subject_depth(shot: Shot) -> float:
    """The subject's distance from the first-frame camera: where the camera rectangle stands."""
    depth = shot.depth[0][shot.in_front[0]]
    if depth.size == 0:
        depth = shot.depth[shot.in_front]
    if depth.size == 0:
        raise ShotError("depth: every joint is behind the camera in every frame; aim the camera")
    return float(np.median(depth))


def unproject(
    pixels: np.ndarray, depth: float, K: np.ndarray, w2c: np.ndarray, cam_type: str
) -> np.ndarray:
    """World points (N,3) seen at ``pixels`` (N,2) at camera ``depth``, inverting project_points."""
    rays = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1) @ np.linalg.inv(K).T
    if cam_type == "orthographic":
        points_cam = np.concatenate([rays[:, :2], np.full((len(pixels), 1), depth)], axis=1)
    else:
        points_cam = rays * (depth / rays[:, 2:3])
    homogeneous = np.concatenate([points_cam, np.ones((len(pixels), 1))], axis=1)
    return (homogeneous @ np.linalg.inv(w2c).T)[:, :3]


def rectangle_track(shot: Shot) -> SkeletonTrack:
    """A rectangle fixed in the world where the first frame sees the subject, seen by each frame.

    It carries the camera's pan, dolly and zoom and nothing of the subject: the camera-only anchor.
    """
    path = shot.camera_path
    width, height = path.width, path.height
    low, high = RECTANGLE_INSET, 1.0 - RECTANGLE_INSET
    corners_px = np.array(
        [[low, low], [high, low], [high, high], [low, high]], dtype=np.float64
    ) * np.array([width, height], dtype=np.float64)
    corners = unproject(corners_px, subject_depth(shot), path.K[0], path.w2c[0], path.cam_type)
    num_frames = shot.num_frames
    joints2d, depth, _ = project_points(
        np.broadcast_to(corners, (num_frames, 4, 3)).copy(),
        path.K,
        path.w2c,
        path.cam_type,
        width,
        height,
    )
    return SkeletonTrack(joints2d, depth > 0, RECTANGLE_EDGES)


def camera_track(shot: Shot, kind: CameraAnchorKind = "rectangle") -> SkeletonTrack:
    """The camera-only anchor: the moving rectangle, or the static first-frame skeleton."""
    if kind == "rectangle":
        return rectangle_track(shot)
    if kind == "static":
        return static_track(shot)
    raise ValueError(f"camera anchor must be 'rectangle' or 'static', got {kind!r}")


def anchor_tracks(
    shot: Shot, names: tuple[str, ...], camera_anchor: CameraAnchorKind = "rectangle"
) -> dict[str, SkeletonTrack]:
    """The skeleton tracks of the anchors ``names`` (from ``anchors_needed``) for ``shot``."""
    builders = {
        "full": full_track,
        "subject": subject_track,
        "camera": lambda s: camera_track(s, camera_anchor),
    }
    return {name: builders[name](shot) for name in names}
