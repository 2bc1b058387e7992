"""Export Shot: the scene's PoseAnything settings, written as a shot folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

import bpy

# ``bl_ext.<repo>.poseanything`` when Blender loads the extension, ``poseanything`` from pip.
ADDON_PACKAGE = __package__.rpartition(".")[0]
DEFORM_ONLY = {"AUTO": None, "ON": True, "OFF": False}


def _armature(context: bpy.types.Context, chosen: bpy.types.Object | None):
    """The chosen armature, else the active object if it is one, else the scene's only one."""
    if chosen is not None:
        return chosen
    active = context.view_layer.objects.active
    if active is not None and active.type == "ARMATURE":
        return active
    armatures = [obj for obj in context.scene.objects if obj.type == "ARMATURE"]
    return armatures[0] if len(armatures) == 1 else None


def _shots_folder(context: bpy.types.Context, output_folder: str) -> tuple[Path, str | None]:
    """The folder the scene's shots go in, and a warning when it had to be a stand-in.

    A path relative to an unsaved .blend has nothing to be relative to, so shots then go to the
    folder set in the preferences, or the system's temporary folder.
    """
    if not (output_folder.startswith("//") and not bpy.data.filepath):
        return Path(bpy.path.abspath(output_folder)), None
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    fallback = addon.preferences.unsaved_output_folder if addon is not None else ""
    folder = Path(bpy.path.abspath(fallback) if fallback else tempfile.gettempdir())
    folder /= "poseanything"
    return folder, f"the .blend is not saved, so the shot went to {folder}"


class POSEANYTHING_OT_export_shot(bpy.types.Operator):
    """Write the armature's motion through the camera as a shot folder"""

    bl_idname = "poseanything.export_shot"
    bl_label = "Export Shot"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..poseanything_blender.armature import SkeletonOptions
        from ..poseanything_blender.shot_export import ExportError, ExportSettings, export_shot

        props = context.scene.poseanything
        armature = _armature(context, props.armature)
        if armature is None:
            self.report({"ERROR"}, "Pick an armature in the PoseAnything panel, or select one")
            return {"CANCELLED"}
        folder, warning = _shots_folder(context, props.output_folder)
        settings = ExportSettings(
            scene=context.scene.name,
            armature=armature.name,
            out=folder / bpy.path.clean_name(context.scene.name),
            camera=props.camera.name if props.camera is not None else None,
            frames=(props.frame_start, props.frame_end) if props.use_frame_range else None,
            skeleton=SkeletonOptions(
                deform_only=DEFORM_ONLY[props.deform_only],
                bone_collections=(props.bone_collection,) if props.bone_collection else (),
                include_hidden=props.include_hidden,
            ),
            reference_image=(
                Path(bpy.path.abspath(props.reference_image)) if props.reference_image else None
            ),
            prompt=props.prompt,
            seed=props.seed,
        )
        try:
            result = export_shot(settings)
        except ExportError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        for note in result.notes:
            self.report({"INFO"}, note)
        if warning:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, f"Shot written to {result.path}")
        return {"FINISHED"}


CLASSES = (POSEANYTHING_OT_export_shot,)
