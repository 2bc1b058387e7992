"""Check Models, Download (size first, then the files) and Cancel: buttons around ``models``.

Download is two steps: the first press asks the hub for the sizes (``models --plan``), the
preferences then list the files and the button becomes "Download 23.4 GB", which asks once more
and fetches them. Both need Blender's "Allow Online Access"; without it they are greyed out and
say so.
"""

from __future__ import annotations

import bpy


def _engine(context: bpy.types.Context):
    """The engine settings of the preferences (weights folders, engine Python, online access)."""
    from ..poseanything_blender.engine_process import resolve_engine_python
    from ..poseanything_blender.generate import addon_preferences, engine_options

    engine = engine_options(context.scene, addon_preferences(context))
    return engine.settings(resolve_engine_python(engine.python))


def _start(operator: bpy.types.Operator, context: bpy.types.Context, mode: str) -> set[str]:
    from ..engine.errors import BadInput
    from ..poseanything_blender import models

    try:
        models.start(mode, _engine(context))
    except BadInput as error:
        operator.report({"ERROR"}, str(error))
        return {"CANCELLED"}
    return {"FINISHED"}


def _idle_and_online(cls, context: bpy.types.Context) -> bool:
    from ..poseanything_blender import models

    if not bpy.app.online_access:
        cls.poll_message_set(models.ONLINE_ACCESS_OFF)
        return False
    if models.STATE.process is not None:
        cls.poll_message_set(f"a model {models.STATE.mode} is running")
        return False
    return True


class POSEANYTHING_OT_check_models(bpy.types.Operator):
    """List the full model's files on this computer, present or missing, with their sizes
    (no network)"""

    bl_idname = "poseanything.check_models"
    bl_label = "Check Models"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        from ..poseanything_blender import models

        return models.STATE.process is None

    def execute(self, context: bpy.types.Context) -> set[str]:
        return _start(self, context, "check")


class POSEANYTHING_OT_plan_download(bpy.types.Operator):
    """Ask the Hugging Face hub which files the full model needs and how big they are; nothing
    is downloaded yet"""

    bl_idname = "poseanything.plan_download"
    bl_label = "Download"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _idle_and_online(cls, context)

    def execute(self, context: bpy.types.Context) -> set[str]:
        return _start(self, context, "plan")


class POSEANYTHING_OT_download_models(bpy.types.Operator):
    """Download the full model's missing files (the listed size) into the Hugging Face cache"""

    bl_idname = "poseanything.download_models"
    bl_label = "Download Models"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        from ..poseanything_blender import models

        if not _idle_and_online(cls, context):
            return False
        if models.STATE.plan is None:
            cls.poll_message_set("press Download first to see what it fetches")
            return False
        return True

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        from ..poseanything_blender import models

        plan = models.STATE.plan
        return context.window_manager.invoke_confirm(
            self,
            event,
            title=f"{plan.button_text} ({len(plan.to_fetch)} files)?",
            message="Into the Hugging Face cache; you can cancel and resume later",
            confirm_text=plan.button_text,
        )

    def execute(self, context: bpy.types.Context) -> set[str]:
        return _start(self, context, "download")


class POSEANYTHING_OT_cancel_models(bpy.types.Operator):
    """Stop the model check or download; downloaded files stay in the cache"""

    bl_idname = "poseanything.cancel_models"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        from ..poseanything_blender import models

        return models.STATE.process is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..poseanything_blender import models

        models.cancel()
        return {"FINISHED"}


CLASSES = (
    POSEANYTHING_OT_check_models,
    POSEANYTHING_OT_plan_download,
    POSEANYTHING_OT_download_models,
    POSEANYTHING_OT_cancel_models,
)
