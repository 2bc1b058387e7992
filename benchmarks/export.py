"""Motion export speed on a production-like shot: a 300-bone rig skinning a heavy mesh.

Prints, from one run:
- export time / a bare ``frame_set`` loop over the full scene (goal <= 0.33): the export
  evaluates only the rig and camera, so the skinned, subdivided mesh costs it nothing;
- read-out time, ``foreach_get`` + numpy versus a per-bone Python loop (goal >= 4x smaller),
  both measured on the same evaluated frames, so evaluation is not part of either figure.

Run: ``.venv/bin/python benchmarks/export.py`` (about a minute on two cores).
"""

from __future__ import annotations

import time

import bpy
import numpy as np

from poseanything.poseanything_blender.armature import extract_skeleton
from poseanything.poseanything_blender.motion import JointReader, isolated_scene, sample_motion

FRAMES = range(1, 501)
SPINE_BONES = 20
TENTACLES = 10
TENTACLE_BONES = 28  # 20 + 10 * 28 = 300 bones
GRID_CUTS = 360  # 129,600 vertices
KEY_EVERY = 50


def build_rig():
    """A spine with ten tentacles, every bone keyed with pseudo-random rotations."""
    data = bpy.data.armatures.new("rig")
    rig = bpy.data.objects.new("rig", data)
    bpy.context.scene.collection.objects.link(rig)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    parent = None
    for i in range(SPINE_BONES):
        bone = data.edit_bones.new(f"spine.{i:02d}")
        bone.head, bone.tail = (0, 0, i * 0.25), (0, 0, (i + 1) * 0.25)
        bone.parent, bone.use_connect = parent, parent is not None
        parent = bone
    for t in range(TENTACLES):
        angle = 2 * np.pi * t / TENTACLES
        step = np.array((np.cos(angle), np.sin(angle), 0.05)) * 0.15
        parent = data.edit_bones[f"spine.{2 * t:02d}"]
        head = np.array(parent.tail)
        for i in range(TENTACLE_BONES):
            bone = data.edit_bones.new(f"tentacle{t}.{i:02d}")
            bone.head, bone.tail = head, head + step
            bone.parent, bone.use_connect = parent, i > 0
            parent, head = bone, head + step
    bpy.ops.object.mode_set(mode="OBJECT")

    rng = np.random.default_rng(0)
    for pose_bone in rig.pose.bones:
        pose_bone.rotation_mode = "XYZ"
        for frame in range(FRAMES.start, FRAMES.stop + 1, KEY_EVERY):
            pose_bone.rotation_euler = rng.uniform(-0.3, 0.3, 3)
            pose_bone.keyframe_insert("rotation_euler", frame=frame)
    return rig


def build_skinned_mesh(rig) -> int:
    """A densely subdivided grid over the rig, each vertex skinned to its nearest bone.

    Subdivided in the mesh data, not by a modifier: a last-in-stack Subdivision modifier is
    left to the viewport's GPU, so it would not load the CPU evaluation this measures.
    """
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=GRID_CUTS, y_subdivisions=GRID_CUTS, size=10)
    mesh_obj = bpy.context.object
    mesh_obj.location = (0, 0, 2.5)
    points = np.empty(len(mesh_obj.data.vertices) * 3)
    mesh_obj.data.vertices.foreach_get("co", points)
    points = points.reshape(-1, 3) + np.array(mesh_obj.location)
    bones = rig.data.bones
    centres = np.array([(np.array(b.head_local) + b.tail_local) / 2 for b in bones])
    nearest = np.concatenate(
        [
            np.argmin(((chunk[:, None] - centres[None]) ** 2).sum(axis=2), axis=1)
            for chunk in np.array_split(points, 32)
        ]
    )
    for index, bone in enumerate(bones):
        group = mesh_obj.vertex_groups.new(name=bone.name)
        group.add(np.flatnonzero(nearest == index).tolist(), 1.0, "REPLACE")
    mesh_obj.modifiers.new("Armature", "ARMATURE").object = rig
    return len(mesh_obj.data.vertices)


def python_loop_readout_of(skeleton):
    """The plain way to read joints: per bone, head or tail, times the world matrix."""
    sources = list(zip(skeleton.joint_bone.tolist(), skeleton.joint_is_tail.tolist(), strict=True))

    def read(armature_eval) -> np.ndarray:
        matrix_world = armature_eval.matrix_world
        bones = list(armature_eval.pose.bones)
        return np.array(
            [matrix_world @ (bones[b].tail if is_tail else bones[b].head) for b, is_tail in sources]
        )

    return read


def main() -> None:
    bpy.ops.wm.read_homefile(use_empty=False, app_template="")
    scene = bpy.context.scene
    bpy.data.objects.remove(bpy.data.objects["Cube"])
    scene.frame_start, scene.frame_end = FRAMES.start, FRAMES.stop - 1
    rig = build_rig()
    vertices = build_skinned_mesh(rig)
    camera = scene.camera
    print(f"scene: {len(rig.data.bones)} bones, a skinned mesh of {vertices} vertices")

    start = time.perf_counter()
    for frame in FRAMES:
        scene.frame_set(frame)
    full_scene = time.perf_counter() - start
    scene.frame_set(FRAMES.start)

    start = time.perf_counter()
    skeleton = extract_skeleton(rig)
    motion = sample_motion(scene, rig, camera, FRAMES, skeleton)
    export = time.perf_counter() - start
    assert motion.joints3d.shape == (len(FRAMES), skeleton.graph.num_joints, 3)

    # Both read-outs run on every evaluated frame, first one then the other in turn, so
    # neither always pays for reading memory the evaluation left cold.
    read_joints = JointReader(skeleton)
    readouts = {"foreach_get": read_joints, "python loop": python_loop_readout_of(skeleton)}
    seconds = dict.fromkeys(readouts, 0.0)
    evaluation = 0.0
    with isolated_scene(scene, [rig]) as (temporary, depsgraph):
        for frame in FRAMES:
            start = time.perf_counter()
            temporary.frame_set(frame)
            rig_eval = rig.evaluated_get(depsgraph)
            evaluation += time.perf_counter() - start
            order = list(readouts) if frame % 2 else list(reversed(readouts))
            joints = []
            for name in order:
                start = time.perf_counter()
                joints.append(readouts[name](rig_eval))
                seconds[name] += time.perf_counter() - start
            np.testing.assert_allclose(joints[0], joints[1], atol=1e-5)
    vectorised, python_loop = seconds["foreach_get"], seconds["python loop"]

    frames = len(FRAMES)
    print(f"{frames} frames, {skeleton.graph.num_joints} joints")
    print(f"full-scene frame_set loop: {full_scene:8.3f} s")
    print(f"export (extract + sample): {export:8.3f} s")
    print(f"rig-only frame_set loop  : {evaluation:8.3f} s (temporary scene, no read-out)")
    print(f"export / full scene      : {export / full_scene:8.3f}   (goal <= 0.33)")
    print(f"read-out, foreach_get    : {vectorised:8.4f} s")
    print(f"read-out, per-bone loop  : {python_loop:8.4f} s")
    print(f"per-bone loop / foreach  : {python_loop / vectorised:8.1f} x (goal >= 4)")


if __name__ == "__main__":
    main()
