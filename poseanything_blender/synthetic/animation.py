"""Random smooth motion for any armature, and a camera that films it with a random move.

Bone motion is a sum of slow sinusoids per bone and axis around a random pose: smooth (no
pops the model could not predict), bounded (limbs bend, they do not spin), and cheap for any
bone count. Camera moves are the kinds the paper's camera guidance separates from subject
motion: static, pan, orbit, dolly and zoom. Every move starts with the subject framed, since
the first frame is the reference image.
"""

from __future__ import annotations

import bpy
import numpy as np
from bpy_extras import anim_utils
from mathutils import Matrix

CAMERA_MOTIONS = ("static", "pan", "orbit", "dolly", "zoom")
SENSOR_WIDTH_MM = 36.0
PATH_BONES = 4
"""Root-to-tip bone count up to which every bone bends fully (a leg from the hips)."""


def _fill_fcurves(id_data, data_path: str, frames: np.ndarray, values: np.ndarray) -> None:
    """Key ``values`` (F, C) on every frame of the C channels of ``data_path``.

    ``keyframe_insert`` keys the first frame, which creates the action, its slot and the
    channels the Blender 5 way; the remaining keys are written into those channels at once.
    """
    id_data.keyframe_insert(data_path, frame=float(frames[0]))
    animation = id_data.id_data.animation_data
    channelbag = anim_utils.action_get_channelbag_for_slot(animation.action, animation.action_slot)
    full_path = data_path if id_data == id_data.id_data else id_data.path_from_id(data_path)
    for index in range(values.shape[1]):
        fcurve = channelbag.fcurves.find(full_path, index=index)
        fcurve.keyframe_points.clear()
        fcurve.keyframe_points.add(len(frames))
        points = np.stack([frames, values[:, index]], axis=1).astype(np.float32)
        fcurve.keyframe_points.foreach_set("co", points.ravel())
        fcurve.update()


def _smooth_noise(
    rng: np.random.Generator, seconds: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """(F, *shape) signals in [-1, 1]: two sinusoids of 0.4-2 Hz each with random phase."""
    frequency = rng.uniform(0.4, 2.0, (2, 1, *shape))
    phase = rng.uniform(0.0, 2.0 * np.pi, (2, 1, *shape))
    time = seconds.reshape(1, -1, *([1] * len(shape)))
    waves = np.sin(2.0 * np.pi * frequency * time + phase)
    return 0.65 * waves[0] + 0.35 * waves[1]


def _path_lengths(pose_bones) -> np.ndarray:
    """For each bone, the bone count of the longest root-to-tip path through it."""
    index = {bone.name: i for i, bone in enumerate(pose_bones)}
    parents = [index[bone.parent.name] if bone.parent else -1 for bone in pose_bones]
    depth = np.zeros(len(parents), dtype=np.int64)
    height = np.zeros(len(parents), dtype=np.int64)
    for bone, parent in enumerate(parents):  # parents come before their children
        depth[bone] = depth[parent] + 1 if parent >= 0 else 0
    for bone in reversed(range(len(parents))):
        if parents[bone] >= 0:
            height[parents[bone]] = max(height[parents[bone]], height[bone] + 1)
    return depth + height + 1


def animate_bones(
    armature_obj: bpy.types.Object,
    rng: np.random.Generator,
    frames: np.ndarray,
    fps: float,
    max_bend: float = 0.6,
) -> None:
    """Key every pose bone's Euler rotation on every frame: a random offset pose plus smooth
    noise, bending up to ``max_bend`` radians across the bone and a third of that in twist.

    Bends add up from the root to a tip, so a bone on a path of n bones bends
    sqrt(PATH_BONES / n) as much once n passes PATH_BONES: independent bends then sum to the
    same overall curl, and a metarig's long spine or a snake does not tie itself in knots.
    Root bones move less still, since they swing the whole body.
    """
    pose_bones = armature_obj.pose.bones
    count = len(pose_bones)
    amplitude = rng.uniform(0.2, 1.0, (count, 3)) * max_bend * np.array([1.0, 0.3, 1.0])
    amplitude /= np.sqrt(np.maximum(_path_lengths(pose_bones) / PATH_BONES, 1.0))[:, None]
    is_root = np.array([bone.parent is None for bone in pose_bones])
    amplitude[is_root] *= 0.4
    offset = rng.uniform(-0.5, 0.5, (count, 3))
    seconds = (frames - frames[0]) / fps
    angles = amplitude * (offset + _smooth_noise(rng, seconds, (count, 3)))
    for bone_index, bone in enumerate(pose_bones):
        bone.rotation_mode = "XYZ"
        _fill_fcurves(bone, "rotation_euler", frames, angles[:, bone_index])


def animate_root(
    armature_obj: bpy.types.Object,
    rng: np.random.Generator,
    frames: np.ndarray,
    fps: float,
    size: float,
) -> None:
    """Move the armature object along a gentle curve on the ground, at up to ``size`` per
    second, so the subject travels through the set as well as moving its limbs."""
    seconds = (frames - frames[0]) / fps
    heading = rng.uniform(0.0, 2.0 * np.pi) + rng.uniform(-0.5, 0.5) * seconds
    speed = rng.uniform(0.1, 0.6) * size
    steps = np.diff(seconds, prepend=seconds[0])[:, None] * speed
    path = np.cumsum(steps * np.stack([np.cos(heading), np.sin(heading)], axis=1), axis=0)
    location = np.asarray(armature_obj.location) + np.pad(path, ((0, 0), (0, 1)))
    _fill_fcurves(armature_obj, "location", frames, location)


def posed_points(armature_obj: bpy.types.Object, scene: bpy.types.Scene, frame: int) -> np.ndarray:
    """World positions of every bone's head and tail at ``frame`` (2B, 3), for framing."""
    scene.frame_set(frame)
    evaluated = armature_obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    bones = evaluated.pose.bones
    heads = np.empty(len(bones) * 3)
    tails = np.empty(len(bones) * 3)
    bones.foreach_get("head", heads)
    bones.foreach_get("tail", tails)
    local = np.concatenate([heads, tails]).reshape(-1, 3)
    world = np.array(evaluated.matrix_world)
    return local @ world[:3, :3].T + world[:3, 3]


def lowest_point(obj: bpy.types.Object, scene: bpy.types.Scene, frames: np.ndarray) -> float:
    """The lowest world height ``obj``'s evaluated (deformed) geometry reaches over ``frames``:
    the ground goes there, so no limb sinks into it and nothing floats far above it."""
    lowest = np.inf
    for frame in frames:
        scene.frame_set(int(frame))
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        world = np.array(evaluated.matrix_world)
        corners = np.array(evaluated.bound_box) @ world[:3, :3].T + world[:3, 3]
        lowest = min(lowest, float(corners[:, 2].min()))
    return lowest


def subject_bounds(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre of the points' box and a radius holding them all, padded for the body's flesh."""
    center = (points.min(axis=0) + points.max(axis=0)) / 2
    return center, float(np.linalg.norm(points - center, axis=1).max()) * 1.15 + 1e-3


def _look_at_rotations(locations: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(F, 3, 3) camera rotations looking from ``locations`` at ``targets``, +Z world up
    (Blender cameras look down their local -Z with +Y up)."""
    forward = targets - locations
    forward /= np.linalg.norm(forward, axis=1, keepdims=True)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    up = np.cross(right, forward)
    return np.stack([right, up, -forward], axis=2)


def _direction(azimuths: np.ndarray, elevation: float) -> np.ndarray:
    """(N, 3) unit vectors from the subject towards the camera."""
    return np.stack(
        [
            np.cos(elevation) * np.cos(azimuths),
            np.cos(elevation) * np.sin(azimuths),
            np.full(len(azimuths), np.sin(elevation)),
        ],
        axis=1,
    )


def _framing_distance(
    offsets: np.ndarray, view: np.ndarray, tan_limit: float, radius: float
) -> float:
    """Camera distance along ``view`` at which every point (offset from the aim point) lies
    within ``tan_limit`` of the optical axis, so the subject's projection, not a bounding
    sphere, fills the chosen share of the frame.

    A point ``toward`` units nearer the camera and ``across`` units off-axis fits when
    ``across <= tan_limit * (distance - toward)``; the largest such bound wins. The camera
    also keeps clear of the nearest point by a fifth of the subject's radius.
    """
    right = np.cross(-view, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, -view)
    toward = offsets @ view
    across = np.maximum(np.abs(offsets @ right), np.abs(offsets @ up))
    return float(max((toward + across / tan_limit).max(), toward.max() + 0.2 * radius))


def animate_camera(
    collection: bpy.types.Collection,
    rng: np.random.Generator,
    frames: np.ndarray,
    subject_points: np.ndarray,
    kind: str | None = None,
) -> tuple[bpy.types.Object, str]:
    """A camera with a random lens and viewpoint that frames ``subject_points`` (world, at the
    first frame), keyed with the move ``kind`` (or a random one) over ``frames``."""
    kind = kind or CAMERA_MOTIONS[int(rng.integers(len(CAMERA_MOTIONS)))]
    if kind not in CAMERA_MOTIONS:
        raise ValueError(f"unknown camera motion {kind!r}; choose one of {CAMERA_MOTIONS}")
    center, radius = subject_bounds(subject_points)

    lens = rng.uniform(20.0, 60.0)
    tan_half_fov = SENSOR_WIDTH_MM / 2 / lens
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    elevation = rng.uniform(0.05, 0.7)
    view = _direction(np.array([azimuth]), elevation)[0]
    fill = rng.uniform(0.55, 0.9)
    distance = _framing_distance(subject_points - center, view, tan_half_fov * fill, radius)

    t = (frames - frames[0]) / max(frames[-1] - frames[0], 1)
    eased = t * t * (3.0 - 2.0 * t)
    azimuths = np.full(len(frames), azimuth)
    distances = np.full(len(frames), distance)
    lenses = np.full(len(frames), lens)
    targets = np.broadcast_to(center, (len(frames), 3)).copy()
    if kind == "orbit":
        azimuths += rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.0) * eased
    elif kind == "dolly":
        distances *= 1.0 + rng.uniform(-0.3, 0.5) * eased
    elif kind == "zoom":
        lenses *= 1.0 + rng.uniform(-0.3, 0.5) * eased
    locations = center + distances[:, None] * _direction(azimuths, elevation)
    if kind == "pan":  # the camera stays put and turns: the subject slides across the frame
        yaw = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.6) * np.arctan(tan_half_fov) * eased
        offset = center - locations[0]
        cos, sin = np.cos(yaw), np.sin(yaw)
        targets = locations[0] + np.stack(
            [cos * offset[0] - sin * offset[1], sin * offset[0] + cos * offset[1]]
            + [np.full(len(frames), offset[2])],
            axis=1,
        )
        locations = np.broadcast_to(locations[0], locations.shape)
    rotations = _look_at_rotations(locations, targets)
    eulers = []
    previous = None
    for rotation in rotations:  # compatible Eulers, so keys interpolate without flips
        previous = Matrix(rotation).to_euler("XYZ", *([previous] if previous else []))
        eulers.append(tuple(previous))

    camera_data = bpy.data.cameras.new(f"camera_{kind}")
    camera_data.sensor_width = SENSOR_WIDTH_MM
    camera_data.sensor_fit = "HORIZONTAL"
    camera_data.clip_start = distance * 0.01
    camera_data.clip_end = distance * 100.0
    camera = bpy.data.objects.new(camera_data.name, camera_data)
    collection.objects.link(camera)
    camera.rotation_mode = "XYZ"
    _fill_fcurves(camera, "location", frames, locations)
    _fill_fcurves(camera, "rotation_euler", frames, np.array(eulers))
    _fill_fcurves(camera_data, "lens", frames, lenses[:, None])
    return camera, kind
