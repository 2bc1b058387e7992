"""Render a clip headless: RGB frames, then a matte pass that gives the subject's masks.

Workbench renders a small frame in milliseconds on the CPU's software OpenGL, and shows image
textures and studio lighting, which is all the dressing needs. Anti-aliasing is FXAA: the
default 8 samples re-render every frame 8 times (10x slower with shadows) for a difference
that a 128-pixel training frame does not show. The mask pass renders the same
frames again with the set hidden, flat white shading and a black sky: a greyscale image whose
value is the subject's coverage, anti-aliased exactly like the RGB frames. Every setting and
object visibility changed is restored afterwards, also when a render fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import bpy

from ..reference import png_render_settings, quiet_stdout, temporarily_set


def _output_settings(
    scene: bpy.types.Scene,
    camera_obj: bpy.types.Object,
    frame_count: int,
    size: int,
    fps: int,
    folder: Path,
    color_mode: str,
) -> list[tuple[object, str, object]]:
    render = scene.render
    view = scene.view_settings
    return [
        *png_render_settings(scene, camera_obj, f"{folder}/", color_mode),
        (scene, "frame_start", 1),
        (scene, "frame_end", frame_count),
        (scene, "frame_step", 1),
        (render, "resolution_x", size),
        (render, "resolution_y", size),
        (render, "resolution_percentage", 100),
        (render, "pixel_aspect_x", 1.0),
        (render, "pixel_aspect_y", 1.0),
        (render, "fps", fps),
        (render, "fps_base", 1.0),
        (render, "use_file_extension", True),
        (render, "use_overwrite", True),
        (render, "use_placeholder", False),
        (render, "dither_intensity", 0.0),  # dither noise would speckle the black of a mask
        (scene.display, "render_aa", "FXAA"),
        (view, "view_transform", "Standard"),
        (view, "look", "None"),
        (view, "exposure", 0.0),
        (view, "gamma", 1.0),
        # No metadata (render date, render time) in the PNGs: the same seed gives the same bytes.
        *(
            (render, prop.identifier, False)
            for prop in render.bl_rna.properties
            if prop.identifier.startswith("use_stamp_")
        ),
    ]


def _matte_settings(
    scene: bpy.types.Scene, set_objects: Sequence[bpy.types.Object]
) -> list[tuple[object, str, object]]:
    """Flat white subject on black, with the set hidden: the render is the subject's mask."""
    shading = scene.display.shading
    changes: list[tuple[object, str, object]] = [
        (shading, "light", "FLAT"),
        (shading, "color_type", "SINGLE"),
        (shading, "single_color", (1.0, 1.0, 1.0)),
        (shading, "show_shadows", False),
        (shading, "show_cavity", False),
        (shading, "show_object_outline", False),
        (shading, "show_specular_highlight", False),
        (shading, "show_xray", False),
    ]
    if scene.world is not None:
        changes.append((scene.world, "color", (0.0, 0.0, 0.0)))
    changes.extend((obj, "hide_render", True) for obj in set_objects)
    return changes


def _render_animation(scene: bpy.types.Scene, folder: Path, frame_count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_stdout():
        bpy.ops.render.render(animation=True, scene=scene.name)
    paths = [folder / f"{frame:04d}.png" for frame in range(1, frame_count + 1)]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise RuntimeError(f"the render did not write {', '.join(missing)} in {folder}")
    return paths


def render_clip(
    scene: bpy.types.Scene,
    camera_obj: bpy.types.Object,
    frame_count: int,
    frames_dir: Path,
    masks_dir: Path,
    set_objects: Sequence[bpy.types.Object],
    size: int = 128,
    fps: int = 24,
) -> tuple[list[Path], list[Path]]:
    """Render frames 1..``frame_count`` through ``camera_obj`` as ``size``-pixel square PNGs
    into ``frames_dir`` (RGB) and ``masks_dir`` (greyscale subject coverage, the set's objects
    ``set_objects`` hidden), named ``0001.png`` on. Returns both lists of paths."""
    frames_dir, masks_dir = Path(frames_dir), Path(masks_dir)
    frame_before = (scene.frame_current, scene.frame_subframe)
    try:
        with temporarily_set(
            _output_settings(scene, camera_obj, frame_count, size, fps, frames_dir, "RGB")
        ):
            frames = _render_animation(scene, frames_dir, frame_count)
        matte = _output_settings(scene, camera_obj, frame_count, size, fps, masks_dir, "BW")
        with temporarily_set(matte + _matte_settings(scene, set_objects)):
            masks = _render_animation(scene, masks_dir, frame_count)
    finally:
        scene.frame_set(frame_before[0], subframe=frame_before[1])
    return frames, masks


def render_clip_background(
    scene: bpy.types.Scene,
    camera_obj: bpy.types.Object,
    frame_count: int,
    folder: Path,
    subject: Sequence[bpy.types.Object],
    size: int = 128,
    fps: int = 24,
) -> list[Path]:
    """Render frames 1..``frame_count`` as ``render_clip``'s RGB frames, with the ``subject``
    objects hidden: the set alone, the clip shot's background plates, named ``0001.png`` on."""
    folder = Path(folder)
    frame_before = (scene.frame_current, scene.frame_subframe)
    hidden = [(obj, "hide_render", True) for obj in subject]
    try:
        with temporarily_set(
            _output_settings(scene, camera_obj, frame_count, size, fps, folder, "RGB") + hidden
        ):
            return _render_animation(scene, folder, frame_count)
    finally:
        scene.frame_set(frame_before[0], subframe=frame_before[1])
