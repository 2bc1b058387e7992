"""Scene settings to shot tasks: what each shot of a Generate exports, read once from the scene.

A ``ShotTask`` is one shot planned: its ``ExportSettings`` (names and plain values, never
operator or UI state) and its frame range. Generate makes one task of the panel's shot; Generate
All Shots one per camera marker, or per scene (``shots.batch_shots``). Settings that cannot make
a shot raise ``GenerateError`` with what to change, before anything is exported.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy

from ..engine.batch.runners import ShotResult
from ..engine.contract.shot import Guidance
from ..engine.errors import BadInput
from .armature import SkeletonOptions
from .shot_export import ExportSettings
from .shots import ShotRange, batch_shots, pose_frames, scene_range

DEFORM_ONLY = {"AUTO": None, "ON": True, "OFF": False}


class GenerateError(BadInput):
    """Settings that cannot start a Generate; the message says what to change."""


@dataclass(frozen=True)
class ShotTask:
    """One shot of a job: its export settings and resolved frame range."""

    name: str
    export: ExportSettings
    frame_start: int
    frame_end: int

    @property
    def num_frames(self) -> int:
        return self.frame_end - self.frame_start + 1


def skeleton_options(props) -> SkeletonOptions:
    """The bone filter of the scene's settings."""
    return SkeletonOptions(
        deform_only=DEFORM_ONLY[props.deform_only],
        bone_collections=(props.bone_collection,) if props.bone_collection else (),
        include_hidden=props.include_hidden,
    )


def resolve_armature(scene: bpy.types.Scene, view_layer, chosen=None) -> bpy.types.Object:
    """The chosen armature, else the active object if it is one, else the scene's only one."""
    if chosen is not None:
        return chosen
    active = view_layer.objects.active if view_layer is not None else None
    if active is not None and active.type == "ARMATURE":
        return active
    armatures = [obj for obj in scene.objects if obj.type == "ARMATURE"]
    if len(armatures) == 1:
        return armatures[0]
    found = f"{len(armatures)} armatures" if armatures else "no armature"
    raise GenerateError(
        f"scene {scene.name!r} has {found}; pick one as Armature in the PoseAnything panel, "
        "or make it the active object"
    )


def shots_folder(output_folder: str, preferences=None) -> tuple[Path, str | None]:
    """The folder shots go in, and a warning when it had to be a stand-in.

    A path relative to an unsaved .blend has nothing to be relative to, so shots then go to the
    folder set in the preferences, or the system's temporary folder.
    """
    if not (output_folder.startswith("//") and not bpy.data.filepath):
        return Path(bpy.path.abspath(output_folder)).absolute(), None
    fallback = preferences.unsaved_output_folder if preferences is not None else ""
    folder = Path(bpy.path.abspath(fallback) if fallback else tempfile.gettempdir())
    folder = (folder / "poseanything").absolute()
    return folder, f"the .blend is not saved, so outputs go to {folder}; save it to keep them"


def shot_task(
    scene: bpy.types.Scene, shot: ShotRange, folder: Path, armature: bpy.types.Object
) -> ShotTask:
    """The export settings of ``shot`` from ``scene``'s PoseAnything settings."""
    props = scene.poseanything
    if shot.frame_end < shot.frame_start:
        raise GenerateError(
            f"shot {shot.name!r}: the frame range {shot.frame_start}:{shot.frame_end} is empty; "
            "the end frame must not come before the start"
        )
    use_image = props.reference_mode == "IMAGE"
    if use_image and not props.reference_image:
        raise GenerateError("Reference is set to an image file, but no image is chosen; pick one")
    settings = ExportSettings(
        scene=shot.scene,
        armature=armature.name,
        out=folder / shot.name,
        camera=shot.camera,
        frames=(shot.frame_start, shot.frame_end),
        skeleton=skeleton_options(props),
        reference_image=Path(bpy.path.abspath(props.reference_image)) if use_image else None,
        render_background=props.render_background,
        prompt=props.prompt,
        seed=props.seed,
        guidance=Guidance(props.subject_guidance, props.camera_guidance),
        pose_frames=pose_frames(
            props.sparse_poses, props.pose_every, armature, shot.frame_start, shot.frame_end
        ),
    )
    return ShotTask(shot.name, settings, shot.frame_start, shot.frame_end)


def check_camera(scene: bpy.types.Scene, camera: str | None) -> None:
    if camera is None and scene.camera is None:
        raise GenerateError(
            f"scene {scene.name!r} has no camera; add one and make it the scene camera "
            "(Ctrl+Numpad 0), or pick a Camera in the PoseAnything panel"
        )


def scene_task(scene: bpy.types.Scene, view_layer, preferences=None) -> tuple[ShotTask, Path, str]:
    """The panel's shot: its armature, camera and range; the folder; a warning or ""."""
    props = scene.poseanything
    armature = resolve_armature(scene, view_layer, props.armature)
    camera = props.camera.name if props.camera is not None else None
    check_camera(scene, camera)
    folder, warning = shots_folder(props.output_folder, preferences)
    shot = ShotRange(bpy.path.clean_name(scene.name), scene.name, camera, *scene_range(scene))
    return shot_task(scene, shot, folder, armature), folder, warning or ""


def batch_tasks(
    scene: bpy.types.Scene, view_layer, preferences=None
) -> tuple[list[ShotTask], list[ShotResult], Path, str]:
    """Every shot of the file (camera markers of ``scene``, else each scene) as tasks; shots
    whose settings are unusable come back as failed results, so the others still run."""
    folder, warning = shots_folder(scene.poseanything.output_folder, preferences)
    tasks, unusable = [], []
    for shot in batch_shots(scene):
        shot_scene = bpy.data.scenes[shot.scene]
        layer = view_layer if shot_scene == scene else shot_scene.view_layers[0]
        try:
            check_camera(shot_scene, shot.camera)
            armature = resolve_armature(shot_scene, layer, shot_scene.poseanything.armature)
            tasks.append(shot_task(shot_scene, shot, folder, armature))
        except GenerateError as error:
            unusable.append(ShotResult(shot.name, "failed", error=str(error)))
    return tasks, unusable, folder, warning or ""
