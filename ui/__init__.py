"""Blender UI: the scene's settings, the extension preferences, the sidebar panels and the
status bar progress; the viewport overlay follows the scenes' overlay toggles."""

import bpy

from . import panels, preferences, properties

CLASSES = (*properties.CLASSES, *preferences.CLASSES, *panels.CLASSES)


def register() -> None:
    from ..poseanything_blender import overlay

    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.poseanything = bpy.props.PointerProperty(
        type=properties.PoseAnythingSceneSettings
    )
    bpy.types.STATUSBAR_HT_header.append(panels.draw_status_bar)
    bpy.app.handlers.load_post.append(overlay.on_load)
    overlay.refresh()


def unregister() -> None:
    from ..poseanything_blender import overlay

    overlay.remove()
    bpy.app.handlers.load_post.remove(overlay.on_load)
    bpy.types.STATUSBAR_HT_header.remove(panels.draw_status_bar)
    del bpy.types.Scene.poseanything
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
