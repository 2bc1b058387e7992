"""Per-frame joints and camera: the isolated evaluation must equal the whole scene's."""

import numpy as np
import pytest
from rigs import (
    RIGIFY_METARIGS,
    add_metarig,
    build_armature,
    chain,
    save_generated_rigify,
    tentacle_tree,
)

from poseanything.poseanything_blender.armature import extract_skeleton
from poseanything.poseanything_blender.camera_path import read_camera_state
from poseanything.poseanything_blender.motion import (
    TEMPORARY_SCENE_NAME,
    evaluation_dependencies,
    sample_motion,
)

pytestmark = pytest.mark.blender

FRAMES = (1, 4, 9, 15, 22, 30)


@pytest.fixture(scope="module")
def generated_rigify_blend(tmp_path_factory):
    return save_generated_rigify(tmp_path_factory.mktemp("rigify"))


def add_empty(name: str, parent=None):
    import bpy

    empty = bpy.data.objects.new(name, None)
    empty.parent = parent
    bpy.context.scene.collection.objects.link(empty)
    return empty


def key(datablock, path: str, frames_values) -> None:
    for frame, value in frames_values:
        setattr(datablock, path, value)
        datablock.keyframe_insert(path, frame=frame)


def add_driver(pose_bone, source, expression: str, id_type: str = "OBJECT", path="location.x"):
    fcurve = pose_bone.driver_add("rotation_euler", 0)
    variable = fcurve.driver.variables.new()
    variable.name = "value"
    variable.targets[0].id_type = id_type
    variable.targets[0].id = source
    variable.targets[0].data_path = path
    fcurve.driver.expression = expression


def build_hard_scene():
    """A rig that needs everything evaluated: a moving parent, non-uniform scale, a bone
    constraint to an external (parented) target, a driver, NLA strips, a tracking camera."""
    import bpy

    scene = bpy.context.scene
    carrier = add_empty("carrier")
    key(carrier, "location", [(1, (0, 0, 0)), (30, (4, -2, 1))])
    key(carrier, "rotation_euler", [(1, (0, 0, 0)), (30, (0.3, 0, 1.2))])

    rig = build_armature("rig", chain("arm", (0, 0, 0), (0, 0, 1), 4))
    rig.parent = carrier
    rig.scale = (1.0, 2.0, 0.5)
    rig.rotation_euler = (0.2, -0.4, 0.1)

    target_parent = add_empty("target_parent")
    key(target_parent, "location", [(1, (2, 0, 3)), (30, (-1, 3, 2))])
    target = add_empty("target", parent=target_parent)
    key(target, "location", [(1, (0, 1, 0)), (30, (1, 0, 1))])
    track = rig.pose.bones["arm.01"].constraints.new("DAMPED_TRACK")
    track.target = target

    knob = add_empty("knob")
    key(knob, "location", [(1, (0, 0, 0)), (30, (2, 0, 0))])
    for bone in rig.pose.bones:
        bone.rotation_mode = "XYZ"
    add_driver(rig.pose.bones["arm.02"], knob, "value * 0.7")

    tip = rig.pose.bones["arm.03"]
    key(tip, "rotation_euler", [(1, (0, 0, 0)), (10, (0.5, 0.2, 0)), (20, (-0.4, 0, 0.6))])
    animation = rig.animation_data
    strip = animation.nla_tracks.new().strips.new("swing", 3, animation.action)
    strip.repeat = 2.0
    strip.scale = 0.8
    animation.action = None
    root = rig.pose.bones["arm.00"]
    key(root, "location", [(1, (0, 0, 0)), (30, (0.3, 0.1, 0))])

    camera = scene.camera
    look_at = add_empty("look_at")
    key(look_at, "location", [(1, (0, 0, 1)), (30, (3, -1, 2))])
    camera.constraints.new("TRACK_TO").target = look_at
    key(camera.data, "lens", [(1, 35.0), (30, 70.0)])
    key(camera.data, "shift_x", [(1, 0.0), (30, 0.1)])
    return scene, rig, camera


def full_scene_reference(scene, rig, camera, skeleton, frames):
    """The cost to beat, read the plain way: frame_set on the whole scene, a loop over joints."""
    import bpy

    joints, cameras, states = [], [], []
    for frame in frames:
        scene.frame_set(frame)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        rig_eval = rig.evaluated_get(depsgraph)
        bones = rig_eval.pose.bones
        names = skeleton.pose_bone_names
        joints.append(
            [
                rig_eval.matrix_world @ (bones[names[b]].tail if tail else bones[names[b]].head)
                for b, tail in zip(skeleton.joint_bone, skeleton.joint_is_tail, strict=True)
            ]
        )
        if camera is not None:
            camera_eval = camera.evaluated_get(depsgraph)
            cameras.append(np.array(camera_eval.matrix_world))
            states.append(read_camera_state(camera_eval))
    return np.array(joints), np.array(cameras), np.array(states)


def scene_fingerprint(scene, objects) -> dict:
    """What a user would notice if an export changed it."""
    import bpy

    return {
        "frame": (scene.frame_current, scene.frame_subframe),
        "mode": bpy.context.mode,
        "active": bpy.context.view_layer.objects.active.name,
        "selected": sorted(o.name for o in bpy.context.selected_objects),
        "scenes": sorted(s.name for s in bpy.data.scenes),
        "objects": sorted(o.name for o in bpy.data.objects),
        "actions": sorted(a.name for a in bpy.data.actions),
        "transforms": [tuple(o.matrix_basis.col[3]) + tuple(o.rotation_euler) for o in objects],
        "pose": [
            tuple(b.location) + tuple(b.rotation_euler)
            for o in objects
            if o.pose
            for b in o.pose.bones
        ],
        "lens": scene.camera.data.lens,
    }


def test_isolated_evaluation_equals_the_whole_scene(fresh_scene):
    import bpy

    scene, rig, camera = build_hard_scene()
    bpy.ops.mesh.primitive_monkey_add()  # a bystander: must not be evaluated with the rig
    skeleton = extract_skeleton(rig)
    scene.frame_set(7)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="POSE")
    watched = list(bpy.data.objects)
    before = scene_fingerprint(scene, watched)

    motion = sample_motion(scene, rig, camera, FRAMES, skeleton)

    assert scene_fingerprint(scene, watched) == before
    assert motion.isolated
    assert motion.frames.tolist() == list(FRAMES)
    joints, camera_world, camera_states = full_scene_reference(scene, rig, camera, skeleton, FRAMES)
    assert motion.joints3d.shape == (len(FRAMES), skeleton.graph.num_joints, 3)
    assert np.ptp(motion.joints3d, axis=0).max() > 1.0  # it really moves
    np.testing.assert_allclose(motion.joints3d, joints, atol=1e-5)
    np.testing.assert_allclose(motion.camera_world, camera_world, atol=1e-5)
    np.testing.assert_allclose(motion.camera_states, camera_states, atol=1e-6)
    assert np.ptp(motion.camera_states, axis=0).max() > 1.0  # the lens is animated
    assert motion.has_camera


BUILT_RIGS = {
    "single_bone": [("bone", (0, 0, 0), (0, 0, 1), None, False)],
    "tentacle_tree": tentacle_tree(),
    "multi_root": chain("a", (0, 0, 0), (0, 0, 1), 2) + chain("b", (3, 0, 0), (0, 1, 1), 3),
}


@pytest.mark.parametrize("rig_name", RIGIFY_METARIGS + tuple(BUILT_RIGS))
def test_every_rig_samples_like_the_whole_scene(fresh_scene, rig_name):
    if rig_name in BUILT_RIGS:
        rig = build_armature(rig_name, BUILT_RIGS[rig_name])
    else:
        rig = add_metarig(rig_name)
    rng = np.random.default_rng(0)
    for bone in list(rig.pose.bones)[::3]:
        bone.rotation_mode = "XYZ"
        key(bone, "rotation_euler", [(1, (0, 0, 0)), (9, tuple(rng.uniform(-0.5, 0.5, 3)))])
    key(rig, "location", [(1, (0, 0, 0)), (9, (1, 2, 0))])
    skeleton = extract_skeleton(rig)
    frames = (1, 5, 9)
    motion = sample_motion(fresh_scene, rig, fresh_scene.camera, frames, skeleton)
    joints, camera_world, _ = full_scene_reference(
        fresh_scene, rig, fresh_scene.camera, skeleton, frames
    )
    np.testing.assert_allclose(motion.joints3d, joints, atol=1e-5)
    np.testing.assert_allclose(motion.camera_world, camera_world, atol=1e-6)


def test_dependencies_are_the_rig_camera_and_what_they_read(fresh_scene):
    import bpy

    scene, rig, camera = build_hard_scene()
    bpy.ops.mesh.primitive_monkey_add()
    dependencies, reads_scene = evaluation_dependencies([rig, camera])
    names = {obj.name for obj in dependencies}
    assert names == {"rig", "Camera", "carrier", "target", "target_parent", "knob", "look_at"}
    assert not reads_scene


def test_a_driver_reading_the_scene_evaluates_the_whole_scene(fresh_scene):
    scene, rig, camera = build_hard_scene()
    add_driver(rig.pose.bones["arm.00"], scene, "value * 0.05", "SCENE", "frame_current")
    skeleton = extract_skeleton(rig)
    motion = sample_motion(scene, rig, None, FRAMES, skeleton)
    assert not motion.isolated
    assert scene.frame_current == 1
    joints, _, _ = full_scene_reference(scene, rig, None, skeleton, FRAMES)
    np.testing.assert_allclose(motion.joints3d, joints, atol=1e-5)


def test_without_camera_the_camera_arrays_are_empty(fresh_scene):
    rig = build_armature("single", [("bone", (0, 0, 0), (0, 0, 1), None, False)])
    motion = sample_motion(fresh_scene, rig, None, range(1, 4), extract_skeleton(rig))
    assert motion.camera_world.shape == (3, 0, 0)
    assert motion.camera_states.shape == (3, 0)
    assert not motion.has_camera
    np.testing.assert_allclose(motion.joints3d[:, 1], [[0, 0, 1]] * 3, atol=1e-6)


def test_generated_rigify_rig_matches_the_whole_scene(fresh_scene, generated_rigify_blend):
    import bpy

    bpy.ops.wm.open_mainfile(filepath=str(generated_rigify_blend))
    scene = bpy.context.scene
    rig = bpy.data.objects["rig"]
    controls = rig.pose.bones
    key(controls["torso"], "location", [(1, (0, 0, 0)), (20, (0.2, 0, -0.3))])
    key(controls["hand_ik.L"], "location", [(1, (0, 0, 0)), (20, (-0.2, 0.1, 0.3))])
    key(controls["thigh_fk.R"], "rotation_quaternion", [(1, (1, 0, 0, 0)), (20, (0.9, 0.4, 0, 0))])
    skeleton = extract_skeleton(rig)
    frames = (1, 10, 20)
    motion = sample_motion(scene, rig, scene.camera, frames, skeleton)
    joints, camera_world, _ = full_scene_reference(scene, rig, scene.camera, skeleton, frames)
    np.testing.assert_allclose(motion.joints3d, joints, atol=1e-5)
    np.testing.assert_allclose(motion.camera_world, camera_world, atol=1e-5)
    assert np.abs(motion.joints3d[2] - motion.joints3d[0]).max() > 0.1


def test_linked_armature_samples_without_writing(fresh_scene, tmp_path):
    import bpy

    scene, rig, _ = build_hard_scene()
    library = tmp_path / "library.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(library))
    bpy.ops.wm.read_homefile(use_empty=False, app_template="")
    with bpy.data.libraries.load(str(library), link=True) as (data_from, data_to):
        data_to.objects = ["rig"]
    linked = data_to.objects[0]
    scene = bpy.context.scene
    scene.collection.objects.link(linked)
    skeleton = extract_skeleton(linked)
    motion = sample_motion(scene, linked, scene.camera, FRAMES, skeleton)
    joints, _, _ = full_scene_reference(scene, linked, None, skeleton, FRAMES)
    np.testing.assert_allclose(motion.joints3d, joints, atol=1e-5)
    assert TEMPORARY_SCENE_NAME not in bpy.data.scenes


def test_bad_input(fresh_scene):
    import bpy

    rig = build_armature("single", [("bone", (0, 0, 0), (0, 0, 1), None, False)])
    skeleton = extract_skeleton(rig)
    with pytest.raises(ValueError, match="frame range is empty"):
        sample_motion(fresh_scene, rig, None, [], skeleton)
    with pytest.raises(ValueError, match="not an armature"):
        sample_motion(fresh_scene, bpy.data.objects["Cube"], None, [1], skeleton)
    other = build_armature("other", chain("x", (0, 0, 0), (0, 0, 1), 2))
    with pytest.raises(ValueError, match="extract the skeleton again"):
        sample_motion(fresh_scene, other, None, [1], skeleton)
