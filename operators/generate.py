"""Generate, Generate All Shots, Cancel, Open Output Folder: buttons around ``generate``.

The Generate buttons hand their context to ``generate.start_generate`` (the same call the
command line and scripts make) and report what it said; ``job.tick`` then follows the render
from a timer, so the UI stays responsive while the video renders.
"""

from __future__ import annotations

import bpy


def _start(operator: bpy.types.Operator, context: bpy.types.Context, all_shots: bool) -> set:
    from ..engine.errors import BadInput
    from ..poseanything_blender.generate import start_generate

    try:
        job = start_generate(context.scene, context.view_layer, all_shots=all_shots)
    except BadInput as error:  # anything else is a bug: Blender shows its traceback
        operator.report({"ERROR"}, str(error))
        return {"CANCELLED"}
    for note in job.notes:
        operator.report({"INFO"}, note)
    for warning in job.warnings:
        operator.report({"WARNING"}, warning)
    return {"FINISHED"}


class POSEANYTHING_OT_generate(bpy.types.Operator):
    """Render the shot as a video in the background; it arrives as a new strip in the
    Sequencer"""

    bl_idname = "poseanything.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        return _start(self, context, all_shots=False)


class POSEANYTHING_OT_generate_all(bpy.types.Operator):
    """Generate every shot: each timeline marker bound to a camera, or else each scene"""

    bl_idname = "poseanything.generate_all"
    bl_label = "Generate All Shots"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        return _start(self, context, all_shots=True)


class POSEANYTHING_OT_cancel(bpy.types.Operator):
    """Stop the running job: no strip and no file from the take in progress"""

    bl_idname = "poseanything.cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        from ..poseanything_blender.job import job_for

        return job_for(context.scene) is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..poseanything_blender.job import cancel_job

        cancel_job(context.scene)
        return {"FINISHED"}


class POSEANYTHING_OT_open_output_folder(bpy.types.Operator):
    """Open the folder with the shot folders and takes in the system's file browser"""

    bl_idname = "poseanything.open_output_folder"
    bl_label = "Open Output Folder"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..poseanything_blender.generate import addon_preferences
        from ..poseanything_blender.tasks import shots_folder

        folder, _warning = shots_folder(
            context.scene.poseanything.output_folder, addon_preferences(context)
        )
        if not folder.is_dir():
            self.report({"ERROR"}, f"{folder} does not exist yet; export or generate a shot first")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=str(folder))
        return {"FINISHED"}


CLASSES = (
    POSEANYTHING_OT_generate,
    POSEANYTHING_OT_generate_all,
    POSEANYTHING_OT_cancel,
    POSEANYTHING_OT_open_output_folder,
)
