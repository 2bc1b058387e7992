"""Install Engine (Repair), Remove Engine, Check Engine and Cancel: buttons around
``engine_setup``. Install needs Blender's "Allow Online Access"; without it the button is greyed
out and says so. Progress, the outcome and the log path are drawn by the preferences.
"""

from __future__ import annotations

import bpy


def _busy(cls) -> bool:
    from ..poseanything_blender import engine_install

    run = engine_install.STATE.run
    if run is not None:
        kind = "Install Engine" if run.kind == "install" else "Check Engine"
        cls.poll_message_set(f"{kind} is running; wait for it or press Cancel")
    return run is not None


def _report(operator: bpy.types.Operator, start) -> set[str]:
    """Run ``start``; a refusal (``BadInput``) becomes the operator's error report."""
    from ..engine.errors import BadInput

    try:
        message = start()
    except BadInput as error:
        operator.report({"ERROR"}, str(error))
        return {"CANCELLED"}
    if isinstance(message, str):
        operator.report({"INFO"}, message)
    return {"FINISHED"}


class POSEANYTHING_OT_install_engine(bpy.types.Operator):
    """Make the engine's own Python environment in the extension's user folder (torch and the
    rest from the package index) and use it as the Engine Python; Repair makes it anew"""

    bl_idname = "poseanything.install_engine"
    bl_label = "Install Engine"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        from ..poseanything_blender.engine_install import online_access_off
        from ..poseanything_blender.engine_setup import install_plan

        if not bpy.app.online_access:
            cls.poll_message_set(online_access_off(install_plan(_preferences(context))))
            return False
        return not _busy(cls)

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        from ..poseanything_blender.engine_setup import install_plan, installed

        plan = install_plan(_preferences(context))
        action = "Repair Engine" if installed() else "Install Engine"
        return context.window_manager.invoke_confirm(
            self,
            event,
            title=f"{action}: torch {plan.torch.name} build?",
            message=f"{plan.torch.cost}, into {plan.target}",
            confirm_text=action,
        )

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..poseanything_blender import engine_setup

        return _report(self, lambda: engine_setup.start_install(_preferences(context)))


class POSEANYTHING_OT_remove_engine(bpy.types.Operator):
    """Delete the engine environment Install Engine made (the models and your files stay)"""

    bl_idname = "poseanything.remove_engine"
    bl_label = "Remove Engine"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        from ..poseanything_blender.engine_setup import installed

        if _busy(cls):
            return False
        if not installed():
            cls.poll_message_set("no engine is installed in the extension's folder")
            return False
        return True

    def invoke(self, context: bpy.types.Context, event) -> set[str]:
        from ..poseanything_blender.engine_setup import engine_folder

        return context.window_manager.invoke_confirm(
            self,
            event,
            title="Remove the installed engine?",
            message=f"Deletes {engine_folder()}; Install Engine makes it again",
            confirm_text="Remove",
        )

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..poseanything_blender import engine_setup

        return _report(self, lambda: engine_setup.remove_engine(_preferences(context)))


class POSEANYTHING_OT_check_engine(bpy.types.Operator):
    """Ask the Engine Python which Python and torch it has and the device it will use"""

    bl_idname = "poseanything.check_engine"
    bl_label = "Check Engine"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return not _busy(cls)

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..poseanything_blender import engine_setup
        from ..poseanything_blender.engine_process import resolve_engine_python
        from ..poseanything_blender.generate import engine_options

        def start() -> None:
            engine = engine_options(context.scene, _preferences(context))
            engine_setup.check_engine(engine.settings(resolve_engine_python(engine.python)))

        return _report(self, start)


class POSEANYTHING_OT_cancel_engine_install(bpy.types.Operator):
    """Stop Install Engine (nothing half-made is left; an engine installed before stays) or
    Check Engine"""

    bl_idname = "poseanything.cancel_engine_install"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        from ..poseanything_blender import engine_install

        return engine_install.STATE.run is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..poseanything_blender import engine_install

        engine_install.cancel()
        return {"FINISHED"}


def _preferences(context: bpy.types.Context):
    from ..poseanything_blender.generate import addon_preferences

    return addon_preferences(context)


CLASSES = (
    POSEANYTHING_OT_install_engine,
    POSEANYTHING_OT_remove_engine,
    POSEANYTHING_OT_check_engine,
    POSEANYTHING_OT_cancel_engine_install,
)
