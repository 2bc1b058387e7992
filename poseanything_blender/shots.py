"""Which shots a file holds: timeline markers bound to cameras, or else each scene.

Blender's own camera switching binds a camera to a marker; the shot runs from that marker to the
frame before the next camera marker (the last one to the scene's end). A file without camera
markers is cut into shots by scene instead, each with its own camera and frame range.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np
from bpy_extras import anim_utils


@dataclass(frozen=True)
class ShotRange:
    """One shot to generate: a scene, a camera (None = the scene camera) and a frame range."""

    name: str
    scene: str
    camera: str | None
    frame_start: int
    frame_end: int


def marker_shots(scene: bpy.types.Scene) -> list[ShotRange]:
    """A shot per camera marker of ``scene``, in timeline order; empty without such markers."""
    markers = sorted(
        (marker for marker in scene.timeline_markers if marker.camera is not None),
        key=lambda marker: marker.frame,
    )
    ends = [marker.frame - 1 for marker in markers[1:]] + [scene.frame_end] if markers else []
    return [
        ShotRange(
            name=bpy.path.clean_name(marker.name or f"{scene.name}_{marker.frame}"),
            scene=scene.name,
            camera=marker.camera.name,
            frame_start=max(marker.frame, scene.frame_start),
            frame_end=end,
        )
        for marker, end in zip(markers, ends, strict=True)
        if marker.frame <= scene.frame_end
    ]


def scene_shots() -> list[ShotRange]:
    """A shot per scene of the file, with the scene's camera and frame range."""
    return [
        ShotRange(bpy.path.clean_name(scene.name), scene.name, None, *scene_range(scene))
        for scene in bpy.data.scenes
    ]


def batch_shots(scene: bpy.types.Scene) -> list[ShotRange]:
    """The shots of "Generate all shots": ``scene``'s camera markers, else every scene."""
    return marker_shots(scene) or scene_shots()


def scene_range(scene: bpy.types.Scene) -> tuple[int, int]:
    """The frame range the panel's settings give (custom range, else the scene's)."""
    settings = scene.poseanything
    if settings.use_frame_range:
        return settings.frame_start, settings.frame_end
    return scene.frame_start, scene.frame_end


def keyed_frames(obj: bpy.types.Object) -> np.ndarray:
    """Frames (rounded, unique, sorted) where ``obj``'s action has keyframes in its slot."""
    animation = obj.animation_data
    if animation is None or animation.action is None or animation.action_slot is None:
        return np.empty(0, dtype=int)
    channelbag = anim_utils.action_get_channelbag_for_slot(animation.action, animation.action_slot)
    if channelbag is None:
        return np.empty(0, dtype=int)
    frames = []
    for fcurve in channelbag.fcurves:
        points = np.empty(2 * len(fcurve.keyframe_points), dtype=np.float32)
        fcurve.keyframe_points.foreach_get("co", points)
        frames.append(points[0::2])
    if not frames:
        return np.empty(0, dtype=int)
    return np.unique(np.round(np.concatenate(frames)).astype(int))


def pose_frames(
    mode: str, every: int, armature: bpy.types.Object, frame_start: int, frame_end: int
) -> tuple[int, ...] | None:
    """Scene frames that carry a skeleton: None for every frame (``"ALL"``), the armature's
    keyed frames (``"KEYED"``), or every ``every``-th frame from the start (``"NTH"``)."""
    if mode == "ALL":
        return None
    if mode == "NTH":
        return tuple(range(frame_start, frame_end + 1, max(1, every)))
    keyed = keyed_frames(armature)
    return tuple(int(f) for f in keyed[(keyed >= frame_start) & (keyed <= frame_end)])
