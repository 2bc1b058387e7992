"""Scene to shot folder: resolve what the user named, gather the shot, write it atomically.

Settings arrive as one frozen ``ExportSettings`` (names and plain values, never operator or UI
state), so the operator, the command line and scripts all call the same ``export_shot``. Every
bad input is reported as an ``ExportError`` (a ``BadInput``) that says what is wrong and what to
do, before any slow work starts where possible; any other error is a bug and is not caught.
The scene is read, never changed: the pieces that have to move the frame or touch render
settings put them back themselves.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from ..engine.contract.camera import project_points
from ..engine.contract.shot import SHOT_JSON, Guidance, Shot, ShotError, write_shot
from ..engine.errors import BadInput
from .armature import SkeletonError, SkeletonOptions, extract_skeleton
from .camera_path import CameraError, camera_path, gather_render_size
from .motion import sample_motion
from .reference import (
    ReferenceImageError,
    load_mask_image,
    load_reference_image,
    render_background,
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
    strict: bool = False
    """Refuse (rather than warn about) a shot that would waste a render (``_doubtful_shot``):
    Generate sets it; an export only warns."""
    render_background: bool = True
    """With a rendered reference, also render the set without the subject through each
    frame's camera (the shot's ``background/``): the default engine lays the moved subject
    over it, so what the subject uncovers and the camera's parallax are the scene's own. Off:
    the engine moves the reference's background with the camera (a faster export)."""
    background_images: tuple[Path, ...] | None = None
    """With a given reference image: its background plates, already rendered, one per frame
    (a clip renderer's); None: the shot has none (a given image's backdrop is its own)."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    notes: tuple[str, ...]
    """Things the user may want to know (bones dropped, filters applied); not errors."""
    warnings: tuple[str, ...] = ()
    """A shot that was written but probably not the one meant (nothing in view, no motion)."""


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


def check_output_folder(out: Path) -> Path:
    """Fail now, not after minutes of evaluation, if the shot folder cannot be written, or
    holds the shot of another .blend (``check_source_blend``); returns it absolute.

    The shot is staged next to the folder and renamed into it, so both the folder (when it
    exists) and the place it is created in must accept new files. Probing with a real temporary
    file answers for permissions, read-only disks and files in the way alike.
    """
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ExportError(f"the output {out} is a file; give a folder for the shot")
    check_source_blend(out)
    places = {_nearest_existing(out.parent)} | ({out} if out.exists() else set())
    for place in places:
        if not place.is_dir():
            raise ExportError(
                f"cannot create the output folder {out}: {place} is a file; choose another folder"
            )
        check_writable_folder(place, "choose an output folder you can write to")
    return out


def check_writable_folder(folder: Path, what_to_do: str) -> None:
    """Probe ``folder`` with a real temporary file: that answers for permissions, read-only
    disks and quotas alike, and for root too, whom permission bits do not stop."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ExportError(f"cannot write to {folder} ({error.strerror}); {what_to_do}") from error


def shot_source_blend(out: Path) -> str | None:
    """The other .blend whose shot ``out`` holds (``source_blend`` of its shot.json), if that
    file still exists; else None. A shot beside the open file and away from its source came
    with a copy of the project, so it is the copy's. A hand-made shot.json names no one."""
    try:
        meta = json.loads((Path(out) / SHOT_JSON).read_text(encoding="utf-8"))
        source = meta["source_blend"] if isinstance(meta, dict) else ""
    except (OSError, ValueError, KeyError):
        return None
    if not isinstance(source, str) or not source or not Path(source).is_file():
        return None
    source_path = Path(source).resolve()
    this = Path(bpy.data.filepath).resolve() if bpy.data.filepath else None
    if this == source_path:
        return None
    copied = this is not None and out.is_relative_to(this.parent)
    return None if copied and not out.is_relative_to(source_path.parent) else source


def check_source_blend(out: Path) -> None:
    source = shot_source_blend(Path(out).resolve())
    if source is not None:
        this = bpy.data.filepath or "this unsaved file"
        raise ExportError(
            f"{out} holds the shot of {source}, not of {this}; choose another output folder "
            "(Output Folder in the PoseAnything panel, --output-folder on the command line; "
            "//poseanything/ keeps a file's shots beside it), or move that folder away"
        )


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
            f"armature {armature_obj.name!r} deforms or carries no mesh visible in "
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


def _doubtful_shot(
    scene: bpy.types.Scene,
    armature_obj: bpy.types.Object,
    camera_obj: bpy.types.Object,
    frames: tuple[int, int],
    joints3d: np.ndarray,
    visible: np.ndarray,
) -> tuple[list[str], list[str]]:
    """What says a shot is probably not the one meant, as (refusals, warnings). Refusals would
    waste a render: no joint ever in view (blank skeleton images), or frames outside the scene's
    range where the armature holds one pose (past the end of its action). Frames outside the
    range, or a held pose, alone are only warnings: a still subject under a moving camera is a
    shot."""
    start, end = frames
    refusals, warnings = [], []
    if not visible.any():
        refusals.append(
            f"no joint of armature {armature_obj.name!r} is in view of camera "
            f"{camera_obj.name!r} in any of frames {start}:{end}, so its skeleton images are "
            "blank; aim the camera at the armature or pick another camera"
        )
    outside = start < scene.frame_start or end > scene.frame_end
    held = len(joints3d) > 1 and np.allclose(joints3d, joints3d[:1], atol=1e-6)
    range_text = (
        f"frames {start}:{end} reach outside the scene's frame range "
        f"{scene.frame_start}:{scene.frame_end}"
    )
    if held:
        animation = armature_obj.animation_data
        action = animation.action if animation is not None else None
        keyed = (
            f"its action {action.name!r} spans frames "
            f"{int(action.frame_range[0])}:{int(action.frame_range[1])}"
            if action is not None
            else "it has no action"
        )
        held_text = (
            f"armature {armature_obj.name!r} holds one pose through frames {start}:{end} "
            f"({keyed}), so the video's subject will not move; pick frames where it moves"
        )
        (refusals if outside else warnings).append(
            f"{range_text}, and {held_text}" if outside else held_text
        )
    elif outside:
        warnings.append(range_text)
    return refusals, warnings


def export_shot(settings: ExportSettings) -> ExportResult:
    """Export the armature's motion through the camera as a shot folder; return its path."""
    scene = _resolve_scene(settings.scene)
    armature_obj = _resolve_armature(scene, settings.armature)
    camera_obj = _resolve_camera(scene, settings.camera)
    frame_start, frame_end = _resolve_frames(scene, settings.frames)
    pose_frames = _shot_local_pose_frames(settings.pose_frames, frame_start, frame_end)
    out = check_output_folder(settings.out)
    render_size = gather_render_size(scene)
    notes: list[str] = []
    given_reference = mask = None
    if settings.reference_mask is not None and settings.reference_image is None:
        raise ExportError("a reference mask needs its reference image; give both, or neither")
    if settings.background_images is not None and settings.reference_image is None:
        raise ExportError(
            "background images need the reference image they were rendered with; give both, "
            "or neither"
        )
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
    refusals, warnings = _doubtful_shot(
        scene, armature_obj, camera_obj, (frame_start, frame_end), motion.joints3d, visible
    )
    if refusals and settings.strict:
        raise ExportError(refusals[0])
    warnings = refusals + warnings
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
        reference, background = given_reference, settings.background_images
        if reference is None:
            reference, mask, render_warnings = _rendered_reference(
                scene, armature_obj, camera_obj, frame_start, Path(temporary)
            )
            warnings.extend(render_warnings)
            if settings.render_background and mask is not None:
                background = render_background(
                    scene,
                    camera_obj,
                    (frame_start, frame_end),
                    Path(temporary) / "background",
                    subject_objects(scene, armature_obj),
                )
        try:
            written = write_shot(shot, out, reference, reference_mask=mask, background=background)
        except ShotError as error:
            raise ExportError(str(error)) from error
    return ExportResult(path=written, notes=tuple(notes), warnings=tuple(warnings))
