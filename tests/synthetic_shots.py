"""Synthetic shots for engine tests: a walking stick figure seen by a panning camera.

Built from numpy through ``engine.shot``'s own dataclasses and writer, so tests exercise the real
shot folder format without Blender.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from poseanything.engine.contract.camera import project_points
from poseanything.engine.contract.shot import CameraPath, Guidance, Shot, SkeletonGraph, write_shot
from poseanything.engine.contract.skeleton import segment_parts

JOINTS = (
    "pelvis",
    "neck",
    "head",
    "elbow.L",
    "hand.L",
    "elbow.R",
    "hand.R",
    "knee.L",
    "foot.L",
    "knee.R",
    "foot.R",
)
EDGES = np.array(
    [[0, 1], [1, 2], [1, 3], [3, 4], [1, 5], [5, 6], [0, 7], [7, 8], [0, 9], [9, 10]],
    dtype=np.int32,
)
# World space is OpenCV-like (y down); the figure stands at z = 0, about 2 units tall.
REST = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.0, -0.8, 0.0],
        [0.0, -1.1, 0.0],
        [-0.3, -0.5, 0.0],
        [-0.45, -0.15, 0.0],
        [0.3, -0.5, 0.0],
        [0.45, -0.15, 0.0],
        [-0.15, 0.5, 0.0],
        [-0.2, 1.0, 0.0],
        [0.15, 0.5, 0.0],
        [0.2, 1.0, 0.0],
    ]
)
SWING = np.array([0, 0, 0, 0.1, 0.25, -0.1, -0.25, -0.15, -0.3, 0.15, 0.3])
"""How far each joint swings along x and z while walking (arms against legs)."""


def walking_joints(num_frames: int, stride: float = 0.02) -> np.ndarray:
    """(F, J, 3): a figure walking along +x while swinging its limbs."""
    phase = np.linspace(0.0, 2 * np.pi * num_frames / 16, num_frames)[:, None]
    joints = np.repeat(REST[None], num_frames, axis=0)
    joints[..., 0] += SWING * np.sin(phase) + stride * np.arange(num_frames)[:, None]
    joints[..., 2] += 0.5 * SWING * np.cos(phase)
    return joints


def panning_camera(
    num_frames: int, width: int, height: int, pan: float = 0.03, distance: float = 5.0
) -> CameraPath:
    """A perspective camera at ``distance`` in front of the figure, sliding ``pan`` a frame."""
    focal = 0.8 * max(width, height)
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float64)
    w2c = np.repeat(np.eye(4)[None], num_frames, axis=0)
    w2c[:, 0, 3] = -pan * np.arange(num_frames)
    w2c[:, 2, 3] = distance
    return CameraPath(np.repeat(K[None], num_frames, axis=0), w2c, "perspective", width, height)


def make_shot(
    num_frames: int = 8,
    width: int = 64,
    height: int = 64,
    pan: float = 0.03,
    pose_frames: tuple[int, ...] | None = None,
    subject: float = 1.0,
    camera: float = 1.0,
    seed: int = 0,
) -> Shot:
    """A complete, valid shot of the walking figure."""
    joints3d = walking_joints(num_frames)
    camera_path = panning_camera(num_frames, width, height, pan)
    joints2d, depth, visible = project_points(
        joints3d, camera_path.K, camera_path.w2c, "perspective", width, height
    )
    skeleton = SkeletonGraph(
        joint_names=JOINTS,
        bone_names=tuple(f"bone{i}" for i in range(len(EDGES))),
        edges=EDGES,
        edge_part=segment_parts(EDGES, len(JOINTS)).astype(np.int8),
    )
    return Shot(
        name="walk",
        fps=12.0,
        frame_start=1,
        frame_end=num_frames,
        skeleton=skeleton,
        camera_path=camera_path,
        joints3d=joints3d,
        joints2d=joints2d,
        depth=depth,
        visible=visible,
        prompt="a stick figure walking",
        seed=seed,
        guidance=Guidance(subject, camera),
        pose_frames=pose_frames,
    )


def reference_image(width: int, height: int) -> np.ndarray:
    """A smooth coloured gradient with a bright block: cheap but not constant."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), 128 + 0 * x], -1)
    image[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = 240
    return image.astype(np.uint8)


def write_synthetic_shot(folder: str | Path, **kwargs) -> Path:
    """Write ``make_shot(**kwargs)`` with a reference image as a shot folder."""
    shot = make_shot(**kwargs)
    return write_shot(shot, folder, reference_image(shot.width, shot.height))
