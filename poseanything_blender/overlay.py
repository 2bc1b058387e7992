"""The viewport overlay: the skeleton the model will see, drawn over the armature by part.

An animator sees at once which bones the export keeps (and how they are grouped into parts)
and can fix a bone filter before spending minutes on a video. The drawing handler exists only
when Blender has a UI: without one (``blender -b``, the bpy module) there is nothing to draw
into, and ``gpu`` drawing must not run there.
"""

from __future__ import annotations

import bpy
import numpy as np

from ..engine.contract.skeleton import PART_COLORS
from ..engine.errors import BadInput
from .armature import ExtractedSkeleton, SkeletonOptions, extract_skeleton
from .motion import JointReader
from .redraw import redraw_areas
from .tasks import resolve_armature, skeleton_options

LINE_WIDTH = 3.0
POINT_SIZE = 7.0

_handle = None
_cache: dict[tuple, tuple[ExtractedSkeleton, JointReader]] = {}


def _skeleton(armature: bpy.types.Object, options: SkeletonOptions):
    """The extracted skeleton, cached until the rig's bones or the filter change."""
    key = (armature.name, armature.data.name, len(armature.data.bones), options)
    if key not in _cache:
        _cache.clear()
        skeleton = extract_skeleton(armature, options)
        _cache[key] = (skeleton, JointReader(skeleton))
    return _cache[key]


def skeleton_lines(
    armature: bpy.types.Object, options: SkeletonOptions, depsgraph
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World-space bone segments (2E, 3), their RGBA colours by part (2E, 4), joints (J, 3)."""
    skeleton, read_joints = _skeleton(armature, options)
    joints = read_joints(armature.evaluated_get(depsgraph)).astype(np.float32)
    edges = skeleton.graph.edges
    palette = np.asarray(PART_COLORS, dtype=np.float32) / 255.0
    colors = palette[skeleton.graph.edge_part.astype(int) % len(palette)]
    rgba = np.concatenate([colors, np.ones((len(colors), 1), np.float32)], axis=1)
    return joints[edges.reshape(-1)], np.repeat(rgba, 2, axis=0), joints


def _draw() -> None:
    import gpu
    from gpu_extras.batch import batch_for_shader

    context = bpy.context
    settings = context.scene.poseanything
    if not settings.show_overlay:
        return
    try:
        armature = resolve_armature(context.scene, context.view_layer, settings.armature)
        lines, colors, joints = skeleton_lines(
            armature, skeleton_options(settings), context.evaluated_depsgraph_get()
        )
    except BadInput:
        return  # no single armature, or no bones left by the filter: nothing to draw
    gpu.state.depth_test_set("NONE")
    gpu.state.blend_set("ALPHA")
    shader = gpu.shader.from_builtin("POLYLINE_FLAT_COLOR")
    shader.uniform_float("viewportSize", gpu.state.viewport_get()[2:])
    shader.uniform_float("lineWidth", LINE_WIDTH)
    batch_for_shader(shader, "LINES", {"pos": lines, "color": colors}).draw(shader)
    points = gpu.shader.from_builtin("POINT_UNIFORM_COLOR")
    points.uniform_float("size", POINT_SIZE)
    points.uniform_float("color", (1.0, 1.0, 1.0, 1.0))
    batch_for_shader(points, "POINTS", {"pos": joints}).draw(points)
    gpu.state.blend_set("NONE")


def refresh() -> None:
    """Add the draw handler when a scene wants the overlay and Blender has a UI; else remove."""
    global _handle
    wanted = not bpy.app.background and any(
        scene.poseanything.show_overlay for scene in bpy.data.scenes
    )
    if wanted and _handle is None:
        _handle = bpy.types.SpaceView3D.draw_handler_add(_draw, (), "WINDOW", "POST_VIEW")
    elif not wanted and _handle is not None:
        bpy.types.SpaceView3D.draw_handler_remove(_handle, "WINDOW")
        _handle = None
    redraw_areas({"VIEW_3D"})


def is_drawing() -> bool:
    return _handle is not None


@bpy.app.handlers.persistent
def on_load(_filepath: str) -> None:
    """A loaded file may want the overlay (or no longer); the cache is for the old file."""
    _cache.clear()
    refresh()


def remove() -> None:
    """Unregistering: no handler or cached rig may outlive the extension."""
    global _handle
    if _handle is not None:
        bpy.types.SpaceView3D.draw_handler_remove(_handle, "WINDOW")
        _handle = None
    _cache.clear()
