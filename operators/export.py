"""Export Shot: the scene's PoseAnything settings, written as a shot folder (no video)."""

from __future__ import annotations

import bpy


class POSEANYTHING_OT_export_shot(bpy.types.Operator):
    """Write the armature's motion through the camera as a shot folder"""

    bl_idname = "poseanything.export_shot"
    bl_label = "Export Shot"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..engine.errors import BadInput
        from ..poseanything_blender.generate import addon_preferences
        from ..poseanything_blender.shot_export import export_shot
        from ..poseanything_blender.tasks import scene_task

        try:
            task, _folder, warning = scene_task(
                context.scene, context.view_layer, addon_preferences(context)
            )
            result = export_shot(task.export)
        except BadInput as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        for note in result.notes:
            self.report({"INFO"}, note)
        for shot_warning in result.warnings:
            self.report({"WARNING"}, shot_warning)
        if warning:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, f"Shot written to {result.path}")
        return {"FINISHED"}


CLASSES = (POSEANYTHING_OT_export_shot,)
