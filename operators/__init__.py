"""Blender operators: buttons that copy their settings once and call ``poseanything_blender``."""

import bpy

from . import export

CLASSES = (*export.CLASSES,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
