"""Blender UI: the scene's export settings, the extension preferences and the sidebar panel."""

import bpy

from . import panels, preferences, properties

CLASSES = (*properties.CLASSES, *preferences.CLASSES, *panels.CLASSES)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.poseanything = bpy.props.PointerProperty(
        type=properties.PoseAnythingSceneSettings
    )


def unregister() -> None:
    del bpy.types.Scene.poseanything
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
