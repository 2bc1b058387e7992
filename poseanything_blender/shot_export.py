"""Scene to shot folder: resolve what the user named, gather the shot, write it atomically.

Settings arrive as one frozen ``ExportSettings`` (names and plain values, never operator or UI
state), so the operator, the command line and scripts all call the same ``export_shot``. Every
bad input is reported as an ``ExportError`` (a ``BadInput``) that says what is wrong and what to
do, before any slow work starts where possible; any other error is a bug and is not caught.
The scene is read, never changed: the pieces that have to move the frame or touch render
settings put them back themselves.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from ..engine.contract.camera import project_points
from ..engine.contract.shot import Guidance, Shot, ShotError, write_shot
from ..engine.errors import BadInput
from .armature import SkeletonError, SkeletonOptions, extract_skeleton
from .camera_path import CameraError, camera_path, gather_render_size
from .motion import sample_motion
from .reference import (
    ReferenceImageError,
    load_mask_image,
    load_reference_image,
    render_reference,
    render_subject_mask,
    subject_objects,
)


class ExportError(BadInput):
    """Input that cannot make a shot; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class ExportSettings:
    """Everything an export needs, copied once from the operator, the command line or a script.

    ``camera`` None means the scene camera; ``frames`` None means the scene's frame range;
    ``reference_image`` None means a Workbench render of the first frame (and of the subject's
    mask); ``reference_mask`` is the given image's subject coverage (an image whose alpha, or
    without alpha its brightness, is the subject; None: the image's own alpha, if any);
    ``pose_frames`` are the scene frames that carry a skeleton (sparse poses), None meaning
    every frame.
    """

    scene: str
    armature: str
    out: Path
    camera: str | None = None
    frames: tuple[int, int] | None = None
    skeleton: SkeletonOptions = field(default_factory=SkeletonOptions)
    reference_image: Path | None = None
    reference_mask: Path | None = None
    prompt: str = ""
    seed: int = 0
    guidance: Guidance = Guidance()
    pose_frames: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ExportResult:
    path: Path
    notes: tuple[str, ...]
    """Things the user may want to know (bones dropped, filters applied); not errors."""


def _names(objects) -> str:
    return ", ".join(sorted(repr(obj.name) for obj in objects)) or "none"


def _resolve_scene(name: str) -> bpy.types.Scene:
    scene = bpy.data.scenes.get(name)
    if scene is None:
        raise ExportError(
            f"no scene named {name!r}; the file's scenes are: {_names(bpy.data.scenes)}"
        )
    return scene


def _resolve_armature(scene: bpy.types.Scene, name: str) -> bpy.types.Object:
    obj = scene.objects.get(name)
    if obj is None:
        armatures = [o for o in scene.objects if o.type == "ARMATURE"]
        raise ExportError(
            f"no object named {name!r} in scene {scene.name!r}; its armatures are: "
            f"{_names(armatures)}"
        )
    return obj


def _resolve_camera(scene: bpy.types.Scene, name: str | None) -> bpy.types.Object:
    if name is None:
        if scene.camera is None:
            raise ExportError(
                f"scene {scene.name!r} has no camera; set a scene camera or pass --camera NAME"
            )
        return scene.camera
    obj = scene.objects.get(name)
    cameras = [o for o in scene.objects if o.type == "CAMERA"]
    if obj is None:
        raise ExportError(
            f"no object named {name!r} in scene {scene.name!r}; its cameras are: {_names(cameras)}"
        )
    if obj.type != "CAMERA":
        raise ExportError(
            f"object {name!r} is a {obj.type.lower()}, not a camera; pick one of: {_names(cameras)}"
        )
    return obj


def _resolve_frames(scene: bpy.types.Scene, frames: tuple[int, int] | None) -> tuple[int, int]:
    start, end = (scene.frame_start, scene.frame_end) if frames is None else frames
    if end < start:
        raise ExportError(
            f"the frame range {start}:{end} is empty; the end frame must not come before the start"
        )
    return start, end


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_output_folder(out: Path) -> Path:
    """Fail now, not after minutes of evaluation, if the shot folder cannot be written.

    The shot is staged next to the folder and renamed into it, so both the folder (when it
    exists) and the place it is created in must accept new files. Probing with a real temporary
    file answers for permissions, read-only disks and files in the way alike.
    """
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ExportError(f"the output {out} is a file; give a folder for the shot")
    places = {_nearest_existing(out.parent)} | ({out} if out.exists() else set())
    for place in places:
        if not place.is_dir():
            raise ExportError(
                f"cannot create the output folder {out}: {place} is a file; choose another folder"
            )
        try:
            with tempfile.TemporaryFile(dir=place):
                pass
        except OSError as error:
            raise ExportError(
                f"cannot write to {place} ({error.strerror}); choose an output folder you can "
                "write to"
            ) from error
    return out


def _existing_image(path: Path, what: str) -> Path:
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise ExportError(f"no {what} at {path}; give an existing image file, or none")
    return path


def _given_reference(
    settings: ExportSettings, width: int, height: int
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """The user's reference image and its subject mask at the shot's size, read before any
    slow work."""
    image_path = _existing_image(settings.reference_image, "reference image")
    mask_path = (
        None
        if settings.reference_mask is None
        else _existing_image(settings.reference_mask, "mask image")
    )
    try:
        image, mask, notes = load_reference_image(image_path, width, height)
        if mask_path is not None:
            mask, mask_notes = load_mask_image(mask_path, width, height)
            notes += mask_notes
    except ReferenceImageError as error:
        raise ExportError(str(error)) from error
    if mask is None:
        notes += (
            "the reference image has no transparency: the engine estimates the subject's mask "
            "from it and the skeleton (a PNG with alpha gives a cleaner cut)",
        )
    return image, mask, notes


def _rendered_reference(
    scene: bpy.types.Scene,
    armature_obj: bpy.types.Object,
    camera_obj: bpy.types.Object,
    frame: int,
    folder: Path,
) -> tuple[Path, np.ndarray | None, tuple[str, ...]]:
    """A Workbench render of ``frame`` and the subject's mask in it (a render of the meshes
    the armature deforms or carries; None, with a warning, when they show nothing)."""
    reference = render_reference(scene, camera_obj, frame, folder / "reference.png")
    subject = subject_objects(scene, armature_obj)
    mask = None
    if subject:
        mask = render_subject_mask(scene, camera_obj, frame, folder / "mask.png", subject)
    if mask is None or not mask.any():
        warning = (
            f"warning: armature {armature_obj.name!r} deforms or carries no mesh visible in "
            f"frame {frame}, so the reference shows no subject; give a reference image of it "
            "(--reference IMAGE, or Reference: Image in the panel)"
        )
        return reference, None, (warning,)
    return reference, mask, ()


def _shot_local_pose_frames(
    pose_frames: tuple[int, ...] | None, frame_start: int, frame_end: int
) -> tuple[int, ...] | None:
    if pose_frames is None:
        return None
    local = tuple(sorted({f - frame_start for f in pose_frames if frame_start <= f <= frame_end}))
    if not local:
        raise ExportError(
            f"no pose frame falls in the range {frame_start}:{frame_end}; key the armature "
            "there or use every frame"
        )
    return local


def export_shot(settings: ExportSettings) -> ExportResult:
    """Export the armature's motion through the camera as a shot folder; return its path."""
    scene = _resolve_scene(settings.scene)
    armature_obj = _resolve_armature(scene, settings.armature)
    camera_obj = _resolve_camera(scene, settings.camera)
    frame_start, frame_end = _resolve_frames(scene, settings.frames)
    pose_frames = _shot_local_pose_frames(settings.pose_frames, frame_start, frame_end)
    out = _check_output_folder(settings.out)
    render_size = gather_render_size(scene)
    notes: list[str] = []
    given_reference = mask = None
    if settings.reference_mask is not None and settings.reference_image is None:
        raise ExportError("a reference mask needs its reference image; give both, or neither")
    if settings.reference_image is not None:
        given_reference, mask, image_notes = _given_reference(
            settings, render_size.width, render_size.height
        )
        notes.extend(image_notes)

    try:
        skeleton = extract_skeleton(armature_obj, settings.skeleton)
    except SkeletonError as error:
        raise ExportError(str(error)) from error
    notes.extend(skeleton.notes)
    motion = sample_motion(
        scene, armature_obj, camera_obj, range(frame_start, frame_end + 1), skeleton
    )
    if not motion.isolated:
        notes.append("a driver reads the scene, so the whole scene was evaluated (slower)")
    try:
        path = camera_path(motion.camera_world, motion.camera_states, render_size)
    except CameraError as error:
        raise ExportError(f"camera {camera_obj.name!r}: {error}") from error
    joints2d, depth, visible = project_points(
        motion.joints3d, path.K, path.w2c, path.cam_type, path.width, path.height
    )
    shot = Shot(
        name=out.name,
        fps=scene.render.fps / scene.render.fps_base,
        frame_start=frame_start,
        frame_end=frame_end,
        skeleton=skeleton.graph,
        camera_path=path,
        joints3d=motion.joints3d,
        joints2d=joints2d,
        depth=depth,
        visible=visible,
        prompt=settings.prompt,
        seed=settings.seed,
        guidance=settings.guidance,
        pose_frames=pose_frames,
        armature=armature_obj.name,
        camera=camera_obj.name,
        source_blend=bpy.data.filepath,
    )

    with tempfile.TemporaryDirectory(prefix="poseanything-reference-") as temporary:
        reference = given_reference
        if reference is None:
            reference, mask, render_notes = _rendered_reference(
                scene, armature_obj, camera_obj, frame_start, Path(temporary)
            )
            notes.extend(render_notes)
        try:
            written = write_shot(shot, out, reference, reference_mask=mask)
        except ShotError as error:
            raise ExportError(str(error)) from error
    return ExportResult(path=written, notes=tuple(notes))
