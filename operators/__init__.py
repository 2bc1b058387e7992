"""Blender operators: buttons that copy their settings once and call ``poseanything_blender``;
and the ``--command poseanything`` command line of ``blender -b FILE.blend``."""

import bpy

from . import engine, export, generate, models, preview

CLASSES = (
    *engine.CLASSES,
    *export.CLASSES,
    *generate.CLASSES,
    *models.CLASSES,
    *preview.CLASSES,
)
CLI_COMMAND = "poseanything"

_cli_handle = None


def register() -> None:
    global _cli_handle
    from ..poseanything_blender.cli import blender_command

    for cls in CLASSES:
        bpy.utils.register_class(cls)
    _cli_handle = bpy.utils.register_cli_command(CLI_COMMAND, blender_command)


def unregister() -> None:
    global _cli_handle
    from ..poseanything_blender import engine_setup, models
    from ..poseanything_blender.job import stop_all

    stop_all()
    models.stop()
    engine_setup.stop()
    if _cli_handle is not None:
        bpy.utils.unregister_cli_command(_cli_handle)
        _cli_handle = None
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
