"""Per-frame joint positions and camera state, fully evaluated, without evaluating the scene.

A production shot carries heavy meshes (skinned, subdivided, simulated) that the skeleton does
not need, and a frame change evaluates all of them. So the armature and camera are evaluated in
a temporary scene that links only them and what they depend on (parents, constraint targets,
driver targets, recursively): the same depsgraph code on fewer objects gives the same joints.
Joints are read with one ``foreach_get`` call a frame, not a Python loop over bones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import bpy
import numpy as np

from .armature import ExtractedSkeleton
from .camera_path import read_camera_state

TEMPORARY_SCENE_NAME = "PoseAnything motion (temporary)"
TIMING_SETTINGS = ("fps", "fps_base", "frame_map_old", "frame_map_new")
"""Render settings that change which time a frame number evaluates at."""


@dataclass(frozen=True)
class Motion:
    """What the shot needs from the scene, per frame: world joints and the camera."""

    frames: np.ndarray
    """(F,) scene frame numbers."""
    joints3d: np.ndarray
    """(F, J, 3) float64 world-space joint positions."""
    camera_world: np.ndarray
    """(F, 4, 4) float64 camera ``matrix_world``; (F, 0, 0) without a camera."""
    camera_states: np.ndarray
    """(F, N) float64 rows of ``camera_path.read_camera_state``; (F, 0) without a camera."""
    isolated: bool
    """True when evaluated in a temporary scene; False when the whole scene had to be."""

    @property
    def has_camera(self) -> bool:
        return self.camera_world.shape[1] > 0


def _constraint_objects(constraint) -> Iterator:
    """Every object a constraint reads: target, pole, space object, Armature-constraint targets."""
    for prop in constraint.bl_rna.properties:
        if prop.type != "POINTER" and prop.type != "COLLECTION":
            continue
        value = getattr(constraint, prop.identifier)
        if prop.type == "POINTER" and isinstance(value, bpy.types.Object):
            yield value
        elif prop.type == "COLLECTION" and prop.identifier != "rna_type":
            for item in value:
                target = getattr(item, "target", None)
                if isinstance(target, bpy.types.Object):
                    yield target


def _driver_ids(id_data) -> Iterator:
    """The IDs that the drivers of an ID (and of its object data) read."""
    owners = [id_data]
    if isinstance(id_data, bpy.types.Object) and id_data.data is not None:
        owners.append(id_data.data)
    for owner in owners:
        animation = getattr(owner, "animation_data", None)
        if animation is None:
            continue
        for fcurve in animation.drivers:
            for variable in fcurve.driver.variables:
                for target in variable.targets:
                    if target.id is not None:
                        yield target.id


def evaluation_dependencies(objects: Sequence) -> tuple[list, bool]:
    """The objects that must be evaluated with ``objects``, and whether a driver reads a scene.

    Follows parents, object and bone constraints and driver targets recursively. A driver that
    reads a scene (its frame, a property) cannot be reproduced in another scene, so the caller
    evaluates the real one then.
    """
    found: list = []
    reads_scene = False
    pending = list(objects)
    while pending:
        obj = pending.pop()
        if obj in found:
            continue
        found.append(obj)
        if obj.parent is not None:
            pending.append(obj.parent)
        constraints = list(obj.constraints)
        if obj.pose is not None:
            constraints += [c for bone in obj.pose.bones for c in bone.constraints]
        for constraint in constraints:
            pending.extend(_constraint_objects(constraint))
        for target in _driver_ids(obj):
            if isinstance(target, bpy.types.Object):
                pending.append(target)
            elif isinstance(target, bpy.types.Scene):
                reads_scene = True
    return found, reads_scene


def _ensure_depsgraph(scene):
    """The depsgraph of the scene's view layer, created if needed (``frame_set`` only updates
    depsgraphs that exist)."""
    view_layer = scene.view_layers[0]
    if bpy.context.scene == scene and bpy.context.view_layer is not None:
        view_layer = bpy.context.view_layer
    view_layer.update()
    return view_layer.depsgraph


@contextmanager
def isolated_scene(scene, objects: Sequence) -> Iterator[tuple]:
    """A temporary scene holding only ``objects``, with ``scene``'s timing; yields it and its
    depsgraph, then removes it.

    Evaluating writes animated values back to the original data (as any frame change does), so
    on the way out the temporary scene is evaluated once more at the user's frame, which puts
    back exactly what the user's own evaluation had there.
    """
    temporary = bpy.data.scenes.new(TEMPORARY_SCENE_NAME)
    try:
        for setting in TIMING_SETTINGS:
            setattr(temporary.render, setting, getattr(scene.render, setting))
        temporary.frame_start, temporary.frame_end = scene.frame_start, scene.frame_end
        for obj in objects:
            temporary.collection.objects.link(obj)
        yield temporary, _ensure_depsgraph(temporary)
    finally:
        temporary.frame_set(scene.frame_current, subframe=scene.frame_subframe)
        bpy.data.scenes.remove(temporary)


@contextmanager
def _whole_scene(scene) -> Iterator[tuple]:
    """The user's scene itself, its frame put back afterwards."""
    frame, subframe = scene.frame_current, scene.frame_subframe
    try:
        yield scene, _ensure_depsgraph(scene)
    finally:
        scene.frame_set(frame, subframe=subframe)


class JointReader:
    """Reads all joints of an evaluated armature into numpy, in world space.

    One ``foreach_get`` fills the pose matrices of every bone (armature space). A joint is its
    bone's head (the matrix's translation) plus its offset along the bone's Y axis (the second
    column, scaled as the pose scales the bone), which is how Blender places the tail itself.
    One matrix product then moves all joints to world space.
    """

    def __init__(self, skeleton: ExtractedSkeleton):
        self._matrices = np.empty((len(skeleton.pose_bone_names), 4, 4), dtype=np.float32)
        self._joint_bone = skeleton.joint_bone
        self._offset = skeleton.joint_offset.astype(np.float32)[:, None]

    def __call__(self, armature_eval) -> np.ndarray:
        armature_eval.pose.bones.foreach_get("matrix", self._matrices.ravel())
        matrices = self._matrices[self._joint_bone]
        local = matrices[:, 3, :3] + self._offset * matrices[:, 1, :3]
        world = np.array(armature_eval.matrix_world, dtype=np.float64)
        return local @ world[:3, :3].T + world[:3, 3]


def _check_matches(armature_obj, skeleton: ExtractedSkeleton) -> None:
    pose_names = tuple(bone.name for bone in armature_obj.pose.bones)
    if pose_names != skeleton.pose_bone_names:
        raise ValueError(
            f"the skeleton was extracted from {skeleton.armature_name!r} with other bones than "
            f"armature {armature_obj.name!r} has now; extract the skeleton again"
        )


def sample_motion(
    scene, armature_obj, camera_obj, frames: Sequence[int], skeleton: ExtractedSkeleton
) -> Motion:
    """Evaluate ``frames`` and return world joints and camera per frame.

    Only the armature, the camera and their dependencies are evaluated (in a temporary scene),
    unless a driver reads a scene, when the whole scene is. The user's frame, selection, active
    object, mode and data are as before afterwards. ``camera_obj`` may be None.
    """
    frames = np.asarray(frames, dtype=np.int64).reshape(-1)
    if len(frames) == 0:
        raise ValueError("the frame range is empty; give at least one frame")
    if armature_obj.type != "ARMATURE":
        raise ValueError(f"object {armature_obj.name!r} is not an armature; pick an armature")
    _check_matches(armature_obj, skeleton)
    watched = [armature_obj] + ([camera_obj] if camera_obj is not None else [])
    dependencies, reads_scene = evaluation_dependencies(watched)

    read_joints = JointReader(skeleton)
    joints3d = np.empty((len(frames), len(skeleton.joint_bone), 3))
    camera_world = np.empty((len(frames), 4, 4) if camera_obj is not None else (len(frames), 0, 0))
    camera_rows: list[np.ndarray] = []
    evaluation = _whole_scene(scene) if reads_scene else isolated_scene(scene, dependencies)
    with evaluation as (evaluated_scene, depsgraph):
        for i, frame in enumerate(frames.tolist()):
            evaluated_scene.frame_set(frame)
            joints3d[i] = read_joints(armature_obj.evaluated_get(depsgraph))
            if camera_obj is not None:
                camera_eval = camera_obj.evaluated_get(depsgraph)
                camera_world[i] = np.array(camera_eval.matrix_world, dtype=np.float64)
                camera_rows.append(read_camera_state(camera_eval))
    camera_states = np.array(camera_rows) if camera_rows else np.empty((len(frames), 0))
    return Motion(
        frames=frames,
        joints3d=joints3d,
        camera_world=camera_world,
        camera_states=camera_states,
        isolated=not reads_scene,
    )
