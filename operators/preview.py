"""Preview Skeleton: the shot's skeleton images as an image-sequence strip, before generating.

What the model sees, in the Sequencer at the shot's frames, so an animator can spot a wrong bone
filter or a limb leaving the frame before spending minutes on a video.
"""

from __future__ import annotations

import bpy

PREVIEW_DIR = "skeleton_preview"


class POSEANYTHING_OT_preview_skeleton(bpy.types.Operator):
    """Export the shot and put its skeleton images in the Sequencer as an image strip"""

    bl_idname = "poseanything.preview_skeleton"
    bl_label = "Preview Skeleton"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..engine.errors import BadInput
        from ..poseanything_blender.generate import addon_preferences
        from ..poseanything_blender.preview import write_skeleton_preview
        from ..poseanything_blender.sequencer import add_image_sequence_strip
        from ..poseanything_blender.shot_export import export_shot
        from ..poseanything_blender.tasks import scene_task

        scene = context.scene
        try:
            task, _folder, warning = scene_task(
                scene, context.view_layer, addon_preferences(context)
            )
            shot_dir = export_shot(task.export).path
            images = write_skeleton_preview(
                shot_dir, shot_dir / PREVIEW_DIR, scene.poseanything.part_colors
            )
            strip = add_image_sequence_strip(
                scene, images, f"{task.name}_skeleton", task.frame_start
            )
        except BadInput as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        if warning:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, f"Skeleton preview strip {strip.name!r} added")
        return {"FINISHED"}


CLASSES = (POSEANYTHING_OT_preview_skeleton,)
