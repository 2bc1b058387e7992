"""PoseAnything for Blender: an armature's motion through the scene camera, as a generated video.

Registering only: every module with bpy types is imported inside ``register`` so that the engine
(``poseanything.engine``) stays importable from a plain Python without bpy.
"""


def register() -> None:
    from . import operators, ui

    ui.register()
    operators.register()


def unregister() -> None:
    from . import operators, ui

    operators.unregister()
    ui.unregister()
