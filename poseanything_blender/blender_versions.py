"""What differs between the Blender versions the add-on supports (4.5 LTS, 5.0, 5.2 LTS).

Every version check lives here, so the rest of the add-on reads one API. Blender's own
changes are listed where it changed, with the version that brought them.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import bpy
import numpy as np

POSE_BONE_HIDE = bpy.app.version >= (5, 0, 0)
"""Blender 5.0 split a bone's hide flag: ``PoseBone.hide`` hides it in pose mode, ``Bone.hide``
in edit mode. Before 5.0 ``Bone.hide`` alone hides it in both."""


def hidden_bones(armature_obj: bpy.types.Object) -> np.ndarray:
    """One bool per bone of ``armature_obj.data.bones``: hidden in the viewport by its own flag."""
    bones = armature_obj.data.bones
    hidden = np.empty(len(bones), dtype=bool)
    bones.foreach_get("hide", hidden)
    if POSE_BONE_HIDE and armature_obj.pose is not None:
        pose_hidden = np.empty(len(armature_obj.pose.bones), dtype=bool)
        armature_obj.pose.bones.foreach_get("hide", pose_hidden)
        hidden |= pose_hidden
    return hidden


MEDIA_TYPE = bpy.app.version >= (5, 0, 0)
"""Blender 5.0 added ``ImageFormatSettings.media_type`` (image, multilayer or video), which
limits ``file_format`` to formats of that kind; before 5.0 ``file_format`` alone chose (FFMPEG
for video)."""


def file_format_changes(image_settings: bpy.types.ImageFormatSettings, file_format: str) -> list:
    """``(owner, attribute, value)`` changes that make ``image_settings`` write ``file_format``:
    from 5.0 its media type first, since setting that picks a matching format."""
    media_type = "VIDEO" if file_format == "FFMPEG" else "IMAGE"
    kind = [(image_settings, "media_type", media_type)] if MEDIA_TYPE else []
    return [*kind, (image_settings, "file_format", file_format)]


MATERIALS_ALWAYS_NODES = bpy.app.version >= (5, 0, 0)
"""From Blender 5.0 every new material has its node tree (``use_nodes`` is deprecated); before,
a new material has none until ``use_nodes`` is switched on."""


def new_node_material(name: str) -> bpy.types.Material:
    """A new material with its default node tree (a Principled BSDF into the output)."""
    material = bpy.data.materials.new(name)
    if not MATERIALS_ALWAYS_NODES:
        material.use_nodes = True
    return material


EXIT_CAN_CRASH = bpy.app.version < (5, 0, 0)
"""bpy 4.5 can crash (SIGSEGV, EGL_BAD_MATCH) or hang while its interpreter shuts down after a
Workbench render, turning a finished command into exit code -11."""


def exit_process(code: int) -> NoReturn:
    """Exit with ``code``; where the shutdown can crash, flush and leave without it."""
    if EXIT_CAN_CRASH:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
