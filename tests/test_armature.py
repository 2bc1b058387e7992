"""Any armature -> skeleton graph, on Blender's shipped Rigify rigs and rigs built here."""

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

from poseanything.engine.contract.skeleton import MAX_PARTS, joint_degrees
from poseanything.poseanything_blender.armature import (
    SkeletonError,
    SkeletonOptions,
    extract_skeleton,
)
from poseanything.poseanything_blender.blender_versions import POSE_BONE_HIDE, hidden_bones

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def generated_rigify_blend(tmp_path_factory):
    return save_generated_rigify(tmp_path_factory.mktemp("rigify"))


def assert_well_formed(skeleton, armature_obj) -> None:
    """Every edge is a kept bone at its rest place, labelled with one of at most 5 parts."""
    graph = skeleton.graph
    edges = graph.edges
    assert edges.shape == (len(graph.bone_names), 2)
    assert graph.edge_part.shape == (len(edges),)
    assert 1 <= graph.num_parts <= MAX_PARTS
    assert set(np.unique(graph.edge_part)) == set(range(graph.num_parts))
    assert set(np.unique(edges)) == set(range(len(graph.joint_names)))
    assert len(set(graph.joint_names)) == len(graph.joint_names)
    bones = armature_obj.data.bones
    rest_heads = np.array([bones[name].head_local for name in graph.bone_names])
    rest_tails = np.array([bones[name].tail_local for name in graph.bone_names])
    np.testing.assert_allclose(skeleton.rest_joints[edges[:, 1]], rest_tails, atol=1e-6)
    lengths = np.linalg.norm(rest_tails - rest_heads, axis=1)
    drift = np.linalg.norm(skeleton.rest_joints[edges[:, 0]] - rest_heads, axis=1)
    assert np.all(drift <= 1e-3 * lengths + 1e-7)
    lengths = np.array([bones[skeleton.pose_bone_names[b]].length for b in skeleton.joint_bone])
    np.testing.assert_allclose(skeleton.joint_offset, skeleton.joint_is_tail * lengths)
    names = [bone.name for bone in armature_obj.pose.bones]
    assert list(skeleton.pose_bone_names) == names


@pytest.mark.parametrize("metarig", RIGIFY_METARIGS)
def test_every_shipped_metarig_exports_all_its_bones(fresh_scene, metarig):
    armature_obj = add_metarig(metarig)
    skeleton = extract_skeleton(armature_obj)
    assert_well_formed(skeleton, armature_obj)
    assert skeleton.graph.bone_names == tuple(b.name for b in armature_obj.data.bones)
    assert skeleton.graph.num_parts == MAX_PARTS
    head_joint = dict(zip(skeleton.graph.bone_names, skeleton.graph.edges[:, 0], strict=True))
    tail_joint = dict(zip(skeleton.graph.bone_names, skeleton.graph.edges[:, 1], strict=True))
    for bone in armature_obj.data.bones:
        if bone.use_connect:
            assert head_joint[bone.name] == tail_joint[bone.parent.name]


def test_generated_rigify_rig_exports_only_def_bones(fresh_scene, generated_rigify_blend):
    import bpy

    bpy.ops.wm.open_mainfile(filepath=str(generated_rigify_blend))
    rig = bpy.data.objects["rig"]
    skeleton = extract_skeleton(rig)
    assert_well_formed(skeleton, rig)
    def_bones = {b.name for b in rig.data.bones if b.name.startswith("DEF-")}
    assert set(skeleton.graph.bone_names) == def_bones
    assert any("Rigify" in note for note in skeleton.notes)
    # DEF-pelvis.L hangs from ORG bones, yet starts where DEF-spine starts: one shared joint.
    index = skeleton.graph.bone_names.index
    edges = skeleton.graph.edges
    assert edges[index("DEF-pelvis.L"), 0] == edges[index("DEF-spine"), 0]
    assert edges[index("DEF-forearm.L"), 0] == edges[index("DEF-upper_arm.L.001"), 1]

    everything = extract_skeleton(rig, SkeletonOptions(deform_only=False))
    hidden = int(hidden_bones(rig).sum())
    assert len(everything.graph.bone_names) == len(rig.data.bones) - hidden > len(def_bones)
    metarig_skeleton = extract_skeleton(bpy.data.objects["metarig"])
    assert len(metarig_skeleton.graph.bone_names) == len(bpy.data.objects["metarig"].data.bones)


def test_single_bone(fresh_scene):
    armature_obj = build_armature("single", [("bone", (0, 0, 0), (0, 0, 1), None, False)])
    skeleton = extract_skeleton(armature_obj)
    assert_well_formed(skeleton, armature_obj)
    assert skeleton.graph.joint_names == ("bone:head", "bone:tail")
    assert skeleton.graph.edges.tolist() == [[0, 1]]
    assert skeleton.graph.edge_part.tolist() == [0]
    assert skeleton.notes == ()


def test_branching_tentacle_tree_is_one_connected_tree(fresh_scene):
    armature_obj = build_armature("tentacles", tentacle_tree())
    skeleton = extract_skeleton(armature_obj)
    assert_well_formed(skeleton, armature_obj)
    graph = skeleton.graph
    assert graph.num_joints == len(graph.bone_names) + 1  # a tree: one more joint than bones
    degrees = joint_degrees(graph.edges, graph.num_joints)
    assert sorted(degrees[degrees >= 3].tolist()) == [3, 4]  # the fork and the trunk's top
    assert (degrees == 1).sum() == 5  # the trunk's root and four tentacle tips
    assert graph.num_parts == MAX_PARTS


def test_disconnected_multi_root_rig(fresh_scene):
    bones = chain("a", (0, 0, 0), (0, 0, 1), 2) + chain("b", (3, 0, 0), (0, 0, 1), 2)
    bones.append(("floating", (0.5, 0, 1), (0.5, 0, 1.5), "a.00", False))
    armature_obj = build_armature("roots", bones)
    skeleton = extract_skeleton(armature_obj)
    assert_well_formed(skeleton, armature_obj)
    assert skeleton.graph.num_joints == 3 + 3 + 2
    graph = skeleton.graph
    joints_of = {name: set(e) for name, e in zip(graph.bone_names, graph.edges, strict=True)}
    assert not joints_of["floating"] & (joints_of["a.00"] | joints_of["a.01"])


def test_zero_length_bone_is_dropped_with_a_note_and_its_child_reattached(fresh_scene):
    tiny = ("tiny", (0, 0, 1), (0, 0, 1 + 2e-5), "base", False)
    bones = [("base", (0, 0, 0), (0, 0, 1), None, False), tiny]
    bones.append(("tip", (0, 0, 1), (0, 0, 2), "tiny", False))
    armature_obj = build_armature("zero", bones)
    skeleton = extract_skeleton(armature_obj)
    assert skeleton.graph.bone_names == ("base", "tip")
    assert skeleton.graph.edges.tolist() == [[0, 1], [1, 2]]
    assert skeleton.notes == ("dropped 1 zero-length bones: tiny",)


def test_filtered_parent_passes_its_children_to_the_nearest_kept_ancestor(fresh_scene):
    bones = chain("limb", (0, 0, 0), (0, 0, 1), 3)
    armature_obj = build_armature("limb", bones)
    armature_obj.data.bones["limb.01"].use_deform = False
    skeleton = extract_skeleton(armature_obj, SkeletonOptions(deform_only=True))
    assert skeleton.graph.bone_names == ("limb.00", "limb.02")
    # limb.02 starts at limb.01's tail, not at limb.00's: its own joint, 4 in all.
    assert skeleton.graph.num_joints == 4
    armature_obj.data.bones["limb.02"].use_deform = False
    armature_obj.data.bones["limb.01"].use_deform = True
    skeleton = extract_skeleton(armature_obj, SkeletonOptions(deform_only=True))
    assert skeleton.graph.edges.tolist() == [[0, 1], [1, 2]]


def make_collections(armature_obj) -> None:
    data = armature_obj.data
    body = data.collections.new("Body")
    fingers = data.collections.new("Fingers", parent=body)
    extra = data.collections.new("Extra")
    for bone in data.bones:
        target = fingers if bone.name.startswith("left") else body
        target.assign(bone)
    extra.assign(data.bones["right.02"])


def test_bone_collection_filter(fresh_scene):
    armature_obj = build_armature("tentacles", tentacle_tree())
    make_collections(armature_obj)
    only_extra = extract_skeleton(armature_obj, SkeletonOptions(bone_collections=("Extra",)))
    assert only_extra.graph.bone_names == ("right.02",)
    body = extract_skeleton(armature_obj, SkeletonOptions(bone_collections=("Body",)))
    assert len(body.graph.bone_names) == len(armature_obj.data.bones)  # nested Fingers too
    fingers = extract_skeleton(armature_obj, SkeletonOptions(bone_collections=("Fingers",)))
    assert fingers.graph.bone_names == ("left.00", "left.01", "left.02")

    with pytest.raises(SkeletonError, match="no bone collection 'Face'.*Body, Extra, Fingers"):
        extract_skeleton(armature_obj, SkeletonOptions(bone_collections=("Face",)))
    armature_obj.data.collections.new("Empty")
    with pytest.raises(SkeletonError, match="change bone_collections"):
        extract_skeleton(armature_obj, SkeletonOptions(bone_collections=("Empty",)))


def test_hidden_bones_are_skipped_unless_asked_for(fresh_scene):
    armature_obj = build_armature("tentacles", tentacle_tree())
    if POSE_BONE_HIDE:  # 5.0+: hidden in pose mode only, or in edit mode only
        armature_obj.pose.bones["left.02"].hide = True
    else:
        armature_obj.data.bones["left.02"].hide = True
    armature_obj.data.bones["right.02"].hide = True
    default = extract_skeleton(armature_obj)
    assert "left.02" not in default.graph.bone_names
    assert "right.02" not in default.graph.bone_names
    assert "skipped 2 hidden bones" in default.notes
    with_hidden = extract_skeleton(armature_obj, SkeletonOptions(include_hidden=True))
    assert len(with_hidden.graph.bone_names) == len(armature_obj.data.bones)

    for bone in armature_obj.pose.bones if POSE_BONE_HIDE else armature_obj.data.bones:
        bone.hide = True
    with pytest.raises(SkeletonError, match="--include-hidden on the command line"):
        extract_skeleton(armature_obj)


def test_deform_only(fresh_scene):
    armature_obj = build_armature("tentacles", tentacle_tree())
    for name in ("front_a.00", "front_a.01"):
        armature_obj.data.bones[name].use_deform = False
    assert len(extract_skeleton(armature_obj).graph.bone_names) == len(armature_obj.data.bones)
    deform = extract_skeleton(armature_obj, SkeletonOptions(deform_only=True))
    assert len(deform.graph.bone_names) == len(armature_obj.data.bones) - 2
    assert "front_a.00" not in deform.graph.bone_names

    for bone in armature_obj.data.bones:
        bone.use_deform = False
    with pytest.raises(SkeletonError, match="set deform_only=False"):
        extract_skeleton(armature_obj, SkeletonOptions(deform_only=True))


def test_errors_say_what_is_wrong(fresh_scene):
    import bpy

    with pytest.raises(SkeletonError, match="'Cube' is a mesh object, not an armature"):
        extract_skeleton(bpy.data.objects["Cube"])
    empty = bpy.data.objects.new("Empty rig", bpy.data.armatures.new("Empty rig"))
    with pytest.raises(SkeletonError, match="'Empty rig' has no bones"):
        extract_skeleton(empty)


def test_linked_armature_is_read_without_writing(fresh_scene, tmp_path):
    import bpy

    build_armature("tentacles", tentacle_tree())
    library = tmp_path / "library.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(library))
    bpy.ops.wm.read_homefile(use_empty=False, app_template="")
    with bpy.data.libraries.load(str(library), link=True) as (data_from, data_to):
        data_to.objects = ["tentacles"]
    linked = data_to.objects[0]
    bpy.context.scene.collection.objects.link(linked)
    assert linked.library is not None
    skeleton = extract_skeleton(linked)
    assert len(skeleton.graph.bone_names) == len(tentacle_tree())
