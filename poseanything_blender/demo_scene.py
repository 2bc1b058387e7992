"""The built-in demo scene, built in code: a Rigify character walking while the camera pans.

It is what a user's shot looks like (a generated Rigify rig, a mesh skinned to its DEF bones,
animation keyed on the controls, a camera that follows), so the demo exercises the same path as
a real production file, and builds in a few seconds from what ships with Blender.
"""

from __future__ import annotations

from dataclasses import dataclass

import bmesh
import bpy
import numpy as np
from mathutils import Vector

from .addons import ensure_rigify

FPS = 24
NUM_FRAMES = 72
FRAMES_PER_STEP = 12
STEP_LENGTH = 0.5
"""Metres the character travels per step; forward is -Y, the way Rigify's metarig faces."""
FOOT_LIFT = 0.12
ARM_SWING = 0.6
"""Hand swing as a fraction of the opposite foot's distance from the hips."""
RESOLUTION = (832, 480)
TORSO_RADIUS = 0.12
HEAD_RADIUS = 0.1
BODY_COLOR = (0.85, 0.45, 0.2, 1.0)
FLOOR_COLOR = (0.5, 0.5, 0.5, 1.0)


@dataclass(frozen=True)
class DemoScene:
    scene: bpy.types.Scene
    armature: bpy.types.Object
    body: bpy.types.Object
    camera: bpy.types.Object


def build_demo_scene(scene: bpy.types.Scene) -> DemoScene:
    """Fill ``scene`` (best an empty one) with the demo and return its main objects."""
    scene.render.fps = FPS
    scene.render.fps_base = 1.0
    scene.frame_start = 1
    scene.frame_end = NUM_FRAMES
    scene.render.resolution_x, scene.render.resolution_y = RESOLUTION
    scene.render.resolution_percentage = 100
    scene.display.shading.color_type = "OBJECT"

    rig = _generate_rigify_human(scene)
    body = _add_capsule_body(scene, rig)
    _key_walk_cycle(rig)
    _add_floor(scene)
    camera = _add_following_camera(scene, rig)
    scene.frame_set(scene.frame_start)
    return DemoScene(scene=scene, armature=rig, body=body, camera=camera)


def _generate_rigify_human(scene: bpy.types.Scene) -> bpy.types.Object:
    """Rigify's human metarig, generated into a control rig; the metarig is removed after."""
    ensure_rigify()
    with bpy.context.temp_override(scene=scene, view_layer=scene.view_layers[0]):
        bpy.ops.object.armature_human_metarig_add()
        metarig = bpy.context.view_layer.objects.active
        bpy.ops.pose.rigify_generate()
        rig = bpy.context.view_layer.objects.active
    bpy.data.objects.remove(metarig)
    rig.name = "Walker"
    return rig


def _add_capsule_body(scene: bpy.types.Scene, rig: bpy.types.Object) -> bpy.types.Object:
    """A mannequin: one smooth ellipsoid along each sizeable DEF bone, rigidly weighted to it.

    The face's many small DEF bones are left out; the head bone gets one round ellipsoid.
    """
    sphere = bmesh.new()
    bmesh.ops.create_uvsphere(sphere, u_segments=12, v_segments=8, radius=1.0)
    unit_verts = np.array([v.co for v in sphere.verts])
    unit_faces = [[v.index for v in face.verts] for face in sphere.faces]
    sphere.free()

    bones = [
        bone
        for bone in rig.data.bones
        if bone.use_deform
        and bone.length >= 0.06
        and not any(parent.name == "ORG-face" for parent in bone.parent_recursive)
    ]
    verts, faces = [], []
    for index, bone in enumerate(bones):
        length = bone.length
        if bone.name.startswith("DEF-spine"):
            radius = HEAD_RADIUS if bone.name == "DEF-spine.006" else TORSO_RADIUS
        else:
            radius = float(np.clip(0.3 * length, 0.035, 0.09))
        # Short spine bones get rounder ellipsoids, so the torso reads as one column.
        half_length = max(length / 2, 0.8 * radius)
        local = unit_verts * (radius, half_length, radius) + (0.0, length / 2, 0.0)
        rest = np.array(bone.matrix_local)
        verts.append(local @ rest[:3, :3].T + rest[:3, 3])
        faces.extend([[i + index * len(unit_verts) for i in face] for face in unit_faces])

    mesh = bpy.data.meshes.new("Body")
    mesh.from_pydata(np.concatenate(verts).tolist(), [], faces)
    mesh.shade_smooth()
    body = bpy.data.objects.new("Body", mesh)
    body.color = BODY_COLOR
    scene.collection.objects.link(body)
    for index, bone in enumerate(bones):
        first = index * len(unit_verts)
        group = body.vertex_groups.new(name=bone.name)
        group.add(range(first, first + len(unit_verts)), 1.0, "REPLACE")
    body.parent = rig
    body.modifiers.new("Armature", "ARMATURE").object = rig
    return body


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return x * x * (3.0 - 2.0 * x)


def _foot_track(cycles: np.ndarray, phase_offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Forward (Y) and lift (Z) of one foot: planted for one step, then swung two steps ahead."""
    stride = 2.0 * STEP_LENGTH
    shifted = cycles - phase_offset
    cycle, fraction = np.floor(shifted), shifted - np.floor(shifted)
    swing = np.clip((fraction - 0.5) / 0.5, 0.0, 1.0)
    forward = -stride * (cycle + _smoothstep(swing)) - STEP_LENGTH / 2 - stride * phase_offset
    lift = FOOT_LIFT * np.sin(np.pi * swing)
    return forward, lift


def _key_walk_cycle(rig: bpy.types.Object) -> None:
    """Key torso, IK feet and IK hands every frame: a steady walk towards -Y."""
    frames = np.arange(NUM_FRAMES)
    cycles = frames / (2 * FRAMES_PER_STEP)
    torso_forward = -2.0 * STEP_LENGTH * cycles
    # Hips are lowest when the legs are spread (contact), highest when they pass.
    torso_drop = -0.07 + 0.03 * (1.0 - np.cos(4.0 * np.pi * cycles)) / 2.0
    zeros = np.zeros(NUM_FRAMES)

    offsets = {"torso": np.stack([zeros, torso_forward, torso_drop], axis=1)}
    for side, phase_offset in (("L", 0.0), ("R", 0.5)):
        forward, lift = _foot_track(cycles, phase_offset)
        offsets[f"foot_ik.{side}"] = np.stack([zeros, forward, lift], axis=1)
    for side, other in (("L", "R"), ("R", "L")):
        # Hands hang by the hips and swing against the opposite foot.
        rest = rig.data.bones[f"hand_ik.{side}"].head_local
        hang = Vector((np.sign(rest.x) * 0.25, rest.y, 1.08)) - rest
        other_foot = offsets[f"foot_ik.{other}"][:, 1] - torso_forward
        swing = torso_forward + ARM_SWING * other_foot
        offsets[f"hand_ik.{side}"] = np.stack(
            [zeros + hang.x, swing + hang.y, torso_drop + hang.z], axis=1
        )

    for bone_name, armature_offsets in offsets.items():
        # Offsets move the rest pose in armature space; Blender converts them to the control's
        # own location channels (its parents stay at rest, so this is exact every frame).
        pose_bone = rig.pose.bones[bone_name]
        rest = pose_bone.bone.matrix_local
        for frame, offset in zip(frames, armature_offsets, strict=True):
            target = rest.copy()
            target.translation = rest.translation + Vector(offset)
            local = rig.convert_space(
                pose_bone=pose_bone, matrix=target, from_space="POSE", to_space="LOCAL"
            )
            pose_bone.location = local.translation
            pose_bone.keyframe_insert("location", frame=int(frame) + 1, group=bone_name)


def _add_floor(scene: bpy.types.Scene) -> None:
    size = 12.0
    mesh = bpy.data.meshes.new("Floor")
    corners = [(-size, -size, 0.0), (size, -size, 0.0), (size, size, 0.0), (-size, size, 0.0)]
    mesh.from_pydata(corners, [], [(0, 1, 2, 3)])
    floor = bpy.data.objects.new("Floor", mesh)
    floor.color = FLOOR_COLOR
    scene.collection.objects.link(floor)


def _add_following_camera(scene: bpy.types.Scene, rig: bpy.types.Object) -> bpy.types.Object:
    """A camera beside the path that pans to keep the hips in frame (a Track To constraint)."""
    walk_length = 2.0 * STEP_LENGTH * NUM_FRAMES / (2 * FRAMES_PER_STEP)
    data = bpy.data.cameras.new("Camera")
    data.lens = 35.0
    camera = bpy.data.objects.new("Camera", data)
    camera.location = (3.5, -walk_length / 2, 1.2)
    scene.collection.objects.link(camera)
    track = camera.constraints.new("TRACK_TO")
    track.target = rig
    track.subtarget = "torso"
    track.track_axis = "TRACK_NEGATIVE_Z"
    track.up_axis = "UP_Y"
    scene.camera = camera
    return camera
