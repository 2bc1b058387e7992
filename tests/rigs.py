"""Rigs the bpy tests build: armatures from bone lists, shipped Rigify metarigs, a generated rig."""

from __future__ import annotations

from pathlib import Path

from poseanything.poseanything_blender.addons import ensure_rigify
from poseanything.poseanything_blender.synthetic import METARIGS as RIGIFY_METARIGS  # noqa: F401


def add_metarig(name: str):
    """Add a shipped Rigify metarig to the current scene and return its object."""
    import bpy

    ensure_rigify()
    getattr(bpy.ops.object, f"armature_{name}_metarig_add")()
    return bpy.context.object


def build_armature(name: str, bones: list[tuple], location=(0.0, 0.0, 0.0)):
    """An armature object from ``(name, head, tail, parent_name | None, connected)`` tuples."""
    import bpy

    data = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, data)
    obj.location = location
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    for bone_name, head, tail, parent, connected in bones:
        edit_bone = data.edit_bones.new(bone_name)
        edit_bone.head, edit_bone.tail = head, tail
        if parent is not None:
            edit_bone.parent = data.edit_bones[parent]
            edit_bone.use_connect = connected
    bpy.ops.object.mode_set(mode="OBJECT")
    return obj


def chain(prefix: str, start, step, count: int, parent: str | None = None) -> list[tuple]:
    """``count`` connected bones from ``start``, each ``step`` long, under ``parent``."""
    bones = []
    head = tuple(start)
    for i in range(count):
        tail = tuple(h + s for h, s in zip(head, step, strict=True))
        bones.append((f"{prefix}.{i:02d}", head, tail, parent, parent is not None))
        parent, head = f"{prefix}.{i:02d}", tail
    return bones


def tentacle_tree() -> list[tuple]:
    """A trunk that splits into three tentacles, one of which forks again."""
    bones = chain("trunk", (0, 0, 0), (0, 0, 1), 3)
    top = (0, 0, 3)
    bones += chain("left", top, (-1, 0, 0.5), 3, parent="trunk.02")
    bones += chain("right", top, (1, 0, 0.5), 3, parent="trunk.02")
    bones += chain("front", top, (0, -1, 0.5), 2, parent="trunk.02")
    fork = (0, -2, 4)
    bones += chain("front_a", fork, (0.5, -1, 0), 2, parent="front.01")
    bones += chain("front_b", fork, (-0.5, -1, 0), 2, parent="front.01")
    return bones


def save_generated_rigify(folder: Path) -> Path:
    """Save Rigify's basic human metarig and the rig generated from it to a .blend.

    Generating is the slow step, so test modules do it once (a module-scoped fixture) and
    their tests open the saved file.
    """
    import bpy

    bpy.ops.wm.read_homefile(use_empty=False, app_template="")
    add_metarig("basic_human")
    bpy.ops.pose.rigify_generate()
    path = folder / "generated.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path
