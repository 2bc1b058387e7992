"""The shot's reference frame: the subject at the first frame, through the shot camera.

A Workbench render is fast, needs no lights or materials, and shows the character's silhouette
and colours as the animator sees them in the viewport. Rendering touches the scene's output
settings, so every setting changed here is put back afterwards, even when the render fails.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Color, Euler, Matrix, Quaternion, Vector

from ..engine.errors import BadInput
from .blender_versions import file_format_changes


class ReferenceImageError(BadInput):
    """A reference (or mask) image that cannot be the shot's; the message says what to give."""


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
    transparency, a movie format), the image is the camera's view alone.
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
        *file_format_changes(image, "PNG"),
        (image, "color_mode", color_mode),
        (image, "color_depth", "8"),
    ]


def render_reference(
    scene: bpy.types.Scene,
    camera_obj: bpy.types.Object,
    frame: int,
    filepath: str | Path,
    extra_changes: Sequence[tuple[Any, str, Any]] = (),
) -> Path:
    """Render ``frame`` through ``camera_obj`` with Workbench into a PNG at ``filepath``.

    The image has the scene's output size (resolution times percentage), which is the shot's
    size. Only the camera's view is rendered: sequencer strips, compositing, stamps, render
    regions, stereo and transparency are switched off for the render and restored after, as
    are ``extra_changes`` (for ``temporarily_set``; they win over the defaults).
    """
    render = scene.render
    changes = [
        *png_render_settings(scene, camera_obj, str(filepath), "RGB"),
        (render, "use_file_extension", False),
        (render, "use_freestyle", False),
        *extra_changes,
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


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence Blender's per-frame "Fra: ... Saved: ..." lines, which it prints from C straight
    to file descriptor 1: they would bury a command's own progress lines. Failures still
    surface, as the exception ``bpy.ops.render.render`` raises."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def render_background(
    scene: bpy.types.Scene,
    camera_obj: bpy.types.Object,
    frames: tuple[int, int],
    folder: str | Path,
    subject: Sequence[bpy.types.Object],
) -> list[Path]:
    """The set without the subject through the camera at every frame of ``frames`` (first,
    last): Workbench PNGs rendered as the reference is, the ``subject`` objects hidden, into
    ``folder``; their paths, frame by frame. What the subject uncovers is then what the scene
    has there, as the camera sees it, parallax and all. Every setting touched is restored."""
    render = scene.render
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    first, last = frames
    # One animation render is a quarter faster than stills, but a scene's frame range cannot
    # start below 0: frames before 0 are rendered one by one.
    animated = range(max(first, 0), last + 1)
    changes = [
        *png_render_settings(scene, camera_obj, f"{folder}{os.sep}plate_", "RGB"),
        (render, "use_file_extension", True),
        (render, "use_overwrite", True),
        (render, "use_placeholder", False),
        (render, "use_freestyle", False),
        (scene, "frame_start", animated.start),
        (scene, "frame_end", max(animated.start, last)),
        (scene, "frame_step", 1),
        *((obj, "hide_render", True) for obj in subject),
    ]
    frame_before = (scene.frame_current, scene.frame_subframe)
    images_before = set(bpy.data.images)
    try:
        with temporarily_set(changes), quiet_stdout():
            paths = [Path(render.frame_path(frame=f)) for f in animated]
            if animated:
                bpy.ops.render.render(animation=True, scene=scene.name)
            render.use_file_extension = False
            before = range(first, min(last + 1, 0))
            stills = [folder / f"before_{-f:08d}.png" for f in before]
            for frame, path in zip(before, stills, strict=True):
                render.filepath = str(path)
                scene.frame_set(frame)
                bpy.ops.render.render(write_still=True, scene=scene.name)
            paths = stills + paths
    finally:
        scene.frame_set(frame_before[0], subframe=frame_before[1])
        for leftover in set(bpy.data.images) - images_before:
            bpy.data.images.remove(leftover)
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise RuntimeError(f"the background render did not write {', '.join(missing[:3])}")
    return paths


def _srgb_from_linear(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


MAX_ASPECT_DIFFERENCE = 0.01
"""A reference image whose aspect differs from the shot's by more than this is refused:
cropping would cut the subject, stretching would distort it."""
MAX_UPSCALE = 4.0
"""A reference image smaller than the shot by more than this factor is refused: enlarged, it
is a blur that shows no subject (a 1x1 image is one colour)."""
GEOMETRY_TYPES = frozenset({"MESH", "CURVE", "CURVES", "SURFACE", "META", "FONT", "POINTCLOUD"})


def _scaled_pixels(image: bpy.types.Image, width: int, height: int, path: Path, notes: list):
    """The image's RGBA pixels (height, width, 4) float, top row first, scaled to the shot's
    size when its aspect is the shot's (within 1 %)."""
    source_width, source_height = image.size
    if not image.has_data or source_width == 0 or source_height == 0:
        raise ReferenceImageError(
            f"cannot read the reference image {path}: not an image format Blender reads; "
            "give a PNG or JPEG"
        )
    if (source_width, source_height) != (width, height):
        difference = abs((source_width / source_height) / (width / height) - 1.0)
        if difference > MAX_ASPECT_DIFFERENCE:
            raise ReferenceImageError(
                f"the reference image {path} is {source_width}x{source_height}, which does not "
                f"have the shot's aspect ({width}x{height}, {difference:.0%} apart); crop it to "
                f"{width}x{height} or change the render size"
            )
        if width > source_width * MAX_UPSCALE or height > source_height * MAX_UPSCALE:
            raise ReferenceImageError(
                f"the reference image {path} is {source_width}x{source_height}, too small for the "
                f"shot's {width}x{height}; give one of at least "
                f"{math.ceil(width / MAX_UPSCALE)}x{math.ceil(height / MAX_UPSCALE)}"
            )
        image.scale(width, height)
        notes.append(
            f"reference image {source_width}x{source_height} scaled to the shot's {width}x{height}"
        )
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(height, width, 4)[::-1]


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)


def _load_rgba(
    path: str | Path, width: int, height: int
) -> tuple[np.ndarray, bool, tuple[str, ...]]:
    """(height, width, 4) float RGBA of an image file in any format Blender reads, whether its
    colours are linear floats, and notes. The file's data-block is removed again."""
    try:
        image = bpy.data.images.load(str(path), check_existing=False)
    except RuntimeError as error:
        raise ReferenceImageError(f"cannot read the reference image {path}: {error}") from error
    notes: list[str] = []
    try:
        rgba = _scaled_pixels(image, width, height, Path(path), notes)
        is_float = image.is_float
    finally:
        bpy.data.images.remove(image)
    return rgba, is_float, tuple(notes)


def load_reference_image(
    path: str | Path, width: int, height: int
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """A user's reference image at the shot's size: (height, width, 3) uint8 colours, its alpha
    as the subject's (height, width) uint8 coverage (None when it has no transparency), notes.

    An image of another size is scaled when its aspect is the shot's (within 1 %) and refused
    otherwise (``ReferenceImageError``). Transparent pixels become black.
    """
    rgba, is_float, notes = _load_rgba(path, width, height)
    rgb = rgba[..., :3] * rgba[..., 3:]
    if is_float:
        rgb = _srgb_from_linear(rgb)
    alpha = _to_uint8(rgba[..., 3])
    return _to_uint8(rgb), (alpha if (alpha < 255).any() else None), notes


def load_mask_image(path: str | Path, width: int, height: int) -> tuple[np.ndarray, tuple]:
    """A mask image at the shot's size, (height, width) uint8: its alpha where it has
    transparency, else its brightness (white = subject)."""
    rgba, _, notes = _load_rgba(path, width, height)
    alpha = rgba[..., 3]
    coverage = alpha if (alpha < 1.0).any() else rgba[..., :3].mean(axis=-1)
    return _to_uint8(coverage), notes


def _carried_by(obj: bpy.types.Object, armature_obj: bpy.types.Object) -> bool:
    """Whether the armature deforms ``obj`` or carries it (as a child, a bone's child, or a
    child of such an object)."""
    if any(m.type == "ARMATURE" and m.object == armature_obj for m in obj.modifiers):
        return True
    return any(parent == armature_obj for parent in _parents(obj))


def _parents(obj: bpy.types.Object):
    parent = obj.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def subject_objects(
    scene: bpy.types.Scene, armature_obj: bpy.types.Object
) -> list[bpy.types.Object]:
    """The scene's objects with geometry that the armature deforms or carries: the subject."""
    return [
        obj
        for obj in scene.objects
        if obj.type in GEOMETRY_TYPES
        and not obj.hide_render
        and (_carried_by(obj, armature_obj) or _carried_by_deformed(obj, armature_obj))
    ]


def _carried_by_deformed(obj: bpy.types.Object, armature_obj: bpy.types.Object) -> bool:
    """A prop parented to a mesh the armature deforms (a hat on the head's mesh)."""
    return any(_carried_by(parent, armature_obj) for parent in _parents(obj))


def render_subject_mask(
    scene: bpy.types.Scene,
    camera_obj: bpy.types.Object,
    frame: int,
    filepath: str | Path,
    subject: list[bpy.types.Object],
) -> np.ndarray:
    """The subject's coverage at ``frame``, (H,W) uint8: the alpha of a transparent-film
    Workbench render of the ``subject`` objects alone (Workbench has no holdouts, so whatever
    stands in front of the subject is hidden too). Every setting touched is restored."""
    subject_names = {obj.name for obj in subject}
    hidden = [
        (obj, "hide_render", True)
        for obj in scene.objects
        if obj.type in GEOMETRY_TYPES and obj.name not in subject_names
    ]
    changes = [
        (scene.render.image_settings, "color_mode", "RGBA"),
        (scene.render, "film_transparent", True),
        *hidden,
    ]
    render_reference(scene, camera_obj, frame, filepath, extra_changes=changes)
    image = bpy.data.images.load(str(filepath), check_existing=False)
    try:
        width, height = image.size
        pixels = np.empty(width * height * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return _to_uint8(pixels.reshape(height, width, 4)[::-1, :, 3])
