"""Projecting world points through a shot's camera path to image pixels.

Numpy only, so the same projection runs in Blender's Python (shot export) and in the engine
(reprojecting joints through another camera). Conventions, shared with ``engine.shot.CameraPath``:

- ``w2c`` maps world to OpenCV camera space: +X right, +Y down, +Z forward (depth).
- ``K`` maps camera space to pixels with the origin at the top-left corner of the top-left pixel.
  Perspective: ``[u, v, 1] ~ K @ [x / z, y / z, 1]``. Orthographic: there is no divide,
  ``[u, v, 1] = K @ [x, y, 1]`` (camera-space units to pixels), and depth is still ``z``.
"""

import numpy as np

from .shot import CAMERA_TYPES

# Points closer to the camera plane than this are "not in front". It also keeps the perspective
# divide finite for points on the camera plane, so joints2d never holds inf or NaN.
MIN_DEPTH = 1e-6


def project_points(
    points: np.ndarray,
    K: np.ndarray,
    w2c: np.ndarray,
    cam_type: str,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project world points of every frame through that frame's camera.

    ``points`` (F,J,3) world, ``K`` (F,3,3), ``w2c`` (F,4,4) OpenCV. Returns ``joints2d`` (F,J,2)
    pixels (origin top-left), ``depth`` (F,J) along the view axis, and ``visible`` (F,J): in front
    of the camera and inside ``[0, width) x [0, height)``. Points behind the camera still get
    finite (mirrored) pixel coordinates so a shot never stores NaN; ``visible`` says not to trust
    them.
    """
    points = np.asarray(points, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    w2c = np.asarray(w2c, dtype=np.float64)
    _check_shapes(points, K, w2c)
    if cam_type not in CAMERA_TYPES:
        raise ValueError(f"cam_type is {cam_type!r}; use one of {CAMERA_TYPES}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size is {width}x{height}; width and height must be positive")

    camera_points = points @ w2c[:, :3, :3].swapaxes(-1, -2) + w2c[:, None, :3, 3]
    depth = camera_points[..., 2]
    in_front = depth > MIN_DEPTH
    if cam_type == "perspective":
        safe_depth = np.where(np.abs(depth) < MIN_DEPTH, MIN_DEPTH, depth)
        plane = camera_points[..., :2] / safe_depth[..., None]
    else:
        plane = camera_points[..., :2]
    joints2d = plane @ K[:, :2, :2].swapaxes(-1, -2) + K[:, None, :2, 2]
    u, v = joints2d[..., 0], joints2d[..., 1]
    visible = in_front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return joints2d, depth, visible


def pixels_per_unit(K: np.ndarray, depth: np.ndarray, cam_type: str) -> np.ndarray:
    """(F,J) pixels a world unit across the view spans at each point of camera ``depth`` (F,J),
    for lenses ``K`` (F,3,3): the focal length over the depth, or the focal length alone for an
    orthographic camera (mean of the two axes' for non-square pixels)."""
    focal = np.sqrt(np.abs(K[:, 0, 0] * K[:, 1, 1]))[:, None]
    if cam_type != "perspective":
        return np.broadcast_to(focal, depth.shape).copy()
    return focal / np.maximum(np.abs(depth), MIN_DEPTH)


def _check_shapes(points: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> None:
    if points.ndim != 3 or points.shape[2] != 3:
        raise ValueError(f"points has shape {points.shape}; expected (frames, joints, 3)")
    frames = points.shape[0]
    if K.shape != (frames, 3, 3):
        raise ValueError(f"K has shape {K.shape}; expected ({frames}, 3, 3), one per frame")
    if w2c.shape != (frames, 4, 4):
        raise ValueError(f"w2c has shape {w2c.shape}; expected ({frames}, 4, 4), one per frame")
