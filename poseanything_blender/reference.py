"""The shot's reference frame: the subject at the first frame, through the shot camera.

A Workbench render is fast, needs no lights or materials, and shows the character's silhouette
and colours as the animator sees them in the viewport. Rendering touches the scene's output
settings, so every setting changed here is put back afterwards, even when the render fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Color, Euler, Matrix, Quaternion, Vector


def _value_copy(owner: Any, attribute: str) -> Any:
    """The attribute's value, detached: a vector property (a colour) reads as a live view that
    would follow the new value and restore nothing."""
    value = getattr(owner, attribute)
    if isinstance(value, Color | Euler | Matrix | Quaternion | Vector):
        return value.copy()
    return tuple(value) if isinstance(value, bpy.types.bpy_prop_array) else value


@contextmanager
def temporarily_set(changes: list[tuple[Any, str, Any]]) -> Iterator[None]:
    """Set ``owner.attribute = value`` for each change, and restore the old values afterwards.

    All old values are read before anything is set, since some settings change others
    (``media_type`` picks a matching ``file_format``), and restored in the order they were set,
    so a constraining setting comes back before the settings it constrains.
    """
    previous = [
        (owner, attribute, _value_copy(owner, attribute)) for owner, attribute, _ in changes
    ]
    applied = 0
    try:
        for owner, attribute, value in changes:
            setattr(owner, attribute, value)
            applied += 1
        yield
    finally:
        for owner, attribute, value in previous[: applied + 1]:
            setattr(owner, attribute, value)


def png_render_settings(
    scene: bpy.types.Scene, camera_obj: bpy.types.Object, filepath: str, color_mode: str
) -> list[tuple[Any, str, Any]]:
    """Changes for a plain 8-bit Workbench PNG of the camera's view, for ``temporarily_set``.

    Whatever the user's scene renders (sequencer, compositing, stamps, a region, stereo,
    transparency, a movie format), the image is the camera's view alone. ``media_type`` comes
    before ``file_format`` because setting it picks a matching format.
    """
    render = scene.render
    image = render.image_settings
    return [
        (scene, "camera", camera_obj),
        (render, "engine", "BLENDER_WORKBENCH"),
        (render, "filepath", filepath),
        (render, "use_sequencer", False),
        (render, "use_compositing", False),
        (render, "use_stamp", False),
        (render, "use_border", False),
        (render, "use_multiview", False),
        (render, "use_single_layer", True),
        (render, "film_transparent", False),
        (image, "media_type", "IMAGE"),
        (image, "file_format", "PNG"),
        (image, "color_mode", color_mode),
        (image, "color_depth", "8"),
    ]


def render_reference(
    scene: bpy.types.Scene, camera_obj: bpy.types.Object, frame: int, filepath: str | Path
) -> Path:
    """Render ``frame`` through ``camera_obj`` with Workbench into a PNG at ``filepath``.

    The image has the scene's output size (resolution times percentage), which is the shot's
    size. Only the camera's view is rendered: sequencer strips, compositing, stamps, render
    regions, stereo and transparency are switched off for the render and restored after.
    """
    render = scene.render
    changes = [
        *png_render_settings(scene, camera_obj, str(filepath), "RGB"),
        (render, "use_file_extension", False),
        (render, "use_freestyle", False),
    ]
    frame_before = (scene.frame_current, scene.frame_subframe)
    images_before = set(bpy.data.images)
    try:
        with temporarily_set(changes):
            scene.frame_set(frame)
            bpy.ops.render.render(write_still=True, scene=scene.name)
    finally:
        scene.frame_set(frame_before[0], subframe=frame_before[1])
        # Rendering adds a "Render Result" image if the file had none; it is not the user's.
        for leftover in set(bpy.data.images) - images_before:
            bpy.data.images.remove(leftover)
    filepath = Path(filepath)
    if not filepath.is_file():
        raise RuntimeError(f"the reference render of frame {frame} did not write {filepath}")
    return filepath


def _srgb_from_linear(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def load_reference_image(
    path: str | Path, width: int, height: int
) -> tuple[np.ndarray, tuple[str, ...]]:
    """A user's reference image as (height, width, 3) uint8, in any format Blender reads.

    An image of another size is scaled to cover the shot and cropped at the centre, so the
    subject keeps its proportions. Transparent pixels become black. The image is loaded
    without touching the file's data: it is removed again before returning.
    """
    try:
        image = bpy.data.images.load(str(path), check_existing=False)
    except RuntimeError as error:
        raise ValueError(f"cannot read the reference image {path}: {error}") from error
    notes: list[str] = []
    try:
        source_width, source_height = image.size
        if not image.has_data or source_width == 0 or source_height == 0:
            raise ValueError(
                f"cannot read the reference image {path}: not an image format Blender reads; "
                "give a PNG or JPEG"
            )
        if (source_width, source_height) != (width, height):
            cover = max(width / source_width, height / source_height)
            scaled = (
                max(width, round(source_width * cover)),
                max(height, round(source_height * cover)),
            )
            image.scale(*scaled)
            notes.append(
                f"reference image {source_width}x{source_height} scaled and cropped to the "
                f"shot's {width}x{height}"
            )
        scaled_width, scaled_height = image.size
        pixels = np.empty(scaled_width * scaled_height * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
        is_float = image.is_float
    finally:
        bpy.data.images.remove(image)
    rgba = pixels.reshape(scaled_height, scaled_width, 4)[::-1]
    rgb = rgba[..., :3] * rgba[..., 3:]
    if is_float:
        rgb = _srgb_from_linear(rgb)
    top = (scaled_height - height) // 2
    left = (scaled_width - width) // 2
    cropped = rgb[top : top + height, left : left + width]
    return np.round(np.clip(cropped, 0.0, 1.0) * 255).astype(np.uint8), tuple(notes)
