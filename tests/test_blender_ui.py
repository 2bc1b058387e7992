"""The extension's Blender side without the engine: registration, panels, takes, strips,
batch shots, sparse poses, the skeleton preview and the overlay's data.

The bpy module has no windows, so panels cannot be drawn here; their registration in both
editors, their parents and the properties they draw are checked instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rigs import build_armature, chain

from poseanything.engine.contract.shot import read_shot

pytestmark = pytest.mark.blender


@pytest.fixture
def registered(fresh_scene):
    import poseanything

    poseanything.register()
    yield fresh_scene
    poseanything.unregister()


def extension_state() -> dict:
    """Everything registering adds to Blender, to compare before, between and after."""
    import bpy

    from poseanything.poseanything_blender import job, overlay

    return {
        "types": sorted(name for name in dir(bpy.types) if "poseanything" in name.lower()),
        "scene_settings": hasattr(bpy.types.Scene, "poseanything"),
        "status_bar": len(bpy.types.STATUSBAR_HT_header._dyn_ui_initialize()),
        "load_post": len(bpy.app.handlers.load_post),
        "timer": bpy.app.timers.is_registered(job.tick),
        "overlay": overlay.is_drawing(),
    }


def test_register_and_unregister_twice_leaves_nothing_behind(fresh_scene):
    import bpy

    import poseanything
    from poseanything import operators

    before = extension_state()
    for _ in range(2):
        poseanything.register()
        registered = extension_state()
        assert registered["scene_settings"] and operators._cli_handle is not None
        assert registered["load_post"] == before["load_post"] + 1
        assert registered["status_bar"] == before["status_bar"] + 1
        assert not registered["overlay"]  # no UI in the bpy module: never a draw handler
        fresh_scene.poseanything.show_overlay = True
        assert not extension_state()["overlay"]
        poseanything.unregister()
        assert extension_state() == before
        assert operators._cli_handle is None
    assert not hasattr(bpy.types, "POSEANYTHING_OT_generate")


def test_panels_exist_in_the_viewport_and_the_sequencer(registered):
    import bpy

    from poseanything.ui import panels

    for prefix, space in (("VIEW3D", "VIEW_3D"), ("SEQUENCER", "SEQUENCE_EDITOR")):
        main = getattr(bpy.types, f"{prefix}_PT_poseanything")
        assert (main.bl_space_type, main.bl_region_type, main.bl_category) == (
            space,
            "UI",
            "PoseAnything",
        )
        for mixin in panels.PANELS[1:]:
            child = getattr(bpy.types, f"{prefix}_PT_poseanything{mixin.suffix}")
            assert child.bl_parent_id == f"{prefix}_PT_poseanything"
            assert child.bl_space_type == space
    settings = registered.poseanything
    for name in (
        "armature",
        "camera",
        "prompt",
        "reference_mode",
        "render_background",
        "seed",
        "steps",
        "subject_guidance",
        "camera_guidance",
        "sparse_poses",
        "pose_every",
        "show_overlay",
        "part_colors",
    ):
        assert name in settings.bl_rna.properties
    assert settings.camera_guidance == 1.0 and settings.sparse_poses == "ALL"
    for operator in (
        "generate",
        "generate_all",
        "cancel",
        "export_shot",
        "open_output_folder",
        "preview_skeleton",
    ):
        assert hasattr(bpy.ops.poseanything, operator)
    assert not bpy.ops.poseanything.cancel.poll()  # nothing runs: Cancel is greyed out


def test_takes_are_numbered_and_never_reuse_a_file(tmp_path):
    from poseanything.poseanything_blender.takes import discard_take, new_take, take_numbers

    first = new_take(tmp_path, "walk")
    assert first.video == tmp_path / "takes" / "take001" / "walk_take001.mp4"
    first.video.write_bytes(b"take one")
    second = new_take(tmp_path, "walk")
    assert second.number == 2 and second.video.name == "walk_take002.mp4"
    discard_take(second)
    assert take_numbers(tmp_path) == [1] and first.video.read_bytes() == b"take one"
    (tmp_path / "takes" / "take007").mkdir()
    assert new_take(tmp_path, "walk").number == 8


def test_movie_strip_needs_the_whole_video_and_a_free_channel(fresh_scene, tmp_path):
    import imageio.v2 as imageio

    from poseanything.poseanything_blender.sequencer import (
        StripError,
        add_movie_strip,
        free_channel,
    )

    with pytest.raises(StripError, match="is gone"):
        add_movie_strip(fresh_scene, tmp_path / "moved.mp4", "moved", 1, 4)
    assert len(fresh_scene.sequence_editor.strips) == 0  # no silent one-frame strip

    video = tmp_path / "clip.mp4"
    frames = np.zeros((4, 48, 64, 3), dtype=np.uint8)
    imageio.mimwrite(video, frames, fps=fresh_scene.render.fps, macro_block_size=16)
    first = add_movie_strip(fresh_scene, video, "clip", 10, 4)
    assert (first.channel, first.frame_final_start, first.frame_final_duration) == (1, 10, 4)
    assert add_movie_strip(fresh_scene, video, "clip", 12, 4).channel == 2
    assert free_channel(fresh_scene, 14, 4) == 1  # after the first strip ends
    with pytest.raises(StripError, match="holds 4 frames where the shot has 6"):
        add_movie_strip(fresh_scene, video, "short", 30, 6)
    assert {strip.name for strip in fresh_scene.sequence_editor.strips} == {"clip", "clip.001"}


def animated_rig(scene):
    rig = build_armature("Rig", chain("arm", (0, 0, 0), (0, 0, 0.5), 3))
    bone = rig.pose.bones["arm.00"]
    bone.rotation_mode = "XYZ"
    for frame, angle in ((1, 0.0), (4, 0.5), (9, 1.0)):
        bone.rotation_euler = (angle, 0.0, 0.0)
        bone.keyframe_insert("rotation_euler", frame=frame)
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    scene.frame_start, scene.frame_end = 1, 9
    return rig


def test_sparse_poses_every_nth_and_keyed_frames(registered, tmp_path):
    import bpy

    from poseanything.poseanything_blender.shot_export import export_shot
    from poseanything.poseanything_blender.shots import keyed_frames, pose_frames
    from poseanything.poseanything_blender.tasks import scene_task

    rig = animated_rig(registered)
    assert keyed_frames(rig).tolist() == [1, 4, 9]
    assert pose_frames("KEYED", 1, rig, 2, 9) == (4, 9)
    assert pose_frames("NTH", 3, rig, 2, 9) == (2, 5, 8)
    assert pose_frames("ALL", 3, rig, 2, 9) is None

    settings = registered.poseanything
    settings.output_folder = str(tmp_path)
    settings.sparse_poses = "KEYED"
    settings.camera_guidance = 0.0
    task, _folder, _warning = scene_task(registered, bpy.context.view_layer)
    shot = read_shot(export_shot(task.export).path)
    assert shot.pose_frames == (0, 3, 8) and shot.guidance.camera == 0.0
    images = shot.skeleton_images()
    assert images[1].max() == 0 and images[3].max() > 0  # unposed frames are black


def test_marker_shots_and_scene_shots(registered):
    import bpy

    from poseanything.poseanything_blender.shots import batch_shots, marker_shots

    scene = registered
    assert [(s.name, s.camera) for s in batch_shots(scene)] == [("Scene", None)]
    other = bpy.data.scenes.new("Second")
    other.frame_start, other.frame_end = 10, 20
    assert [(s.scene, s.frame_start, s.frame_end) for s in batch_shots(scene)] == [
        ("Scene", 1, 250),
        ("Second", 10, 20),
    ]
    camera = scene.camera
    scene.timeline_markers.new("plain", frame=50)  # no camera: not a shot boundary
    for name, frame in (("wide", 100), ("close", 1)):
        scene.timeline_markers.new(name, frame=frame).camera = camera
    assert [(s.name, s.frame_start, s.frame_end, s.camera) for s in marker_shots(scene)] == [
        ("close", 1, 99, "Camera"),
        ("wide", 100, 250, "Camera"),
    ]


def test_preview_skeleton_adds_an_image_sequence_strip(registered, tmp_path):
    import bpy

    animated_rig(registered)
    settings = registered.poseanything
    settings.output_folder = str(tmp_path)
    settings.part_colors = True
    assert bpy.ops.poseanything.preview_skeleton() == {"FINISHED"}
    strip = registered.sequence_editor.strips["Scene_skeleton"]
    assert strip.type == "IMAGE" and len(strip.elements) == 9
    assert (strip.frame_final_start, strip.frame_final_duration) == (1, 9)
    folder = tmp_path / "Scene" / "skeleton_preview"
    assert sorted(path.name for path in folder.iterdir()) == [f"{i:04d}.png" for i in range(1, 10)]
    assert Path(bpy.path.abspath(strip.directory)) == folder


def test_overlay_lines_follow_the_pose_coloured_by_part(registered):
    import bpy

    from poseanything.engine.contract.skeleton import PART_COLORS
    from poseanything.poseanything_blender.armature import SkeletonOptions
    from poseanything.poseanything_blender.overlay import skeleton_lines

    rig = animated_rig(registered)
    registered.frame_set(9)
    lines, colors, joints = skeleton_lines(
        rig, SkeletonOptions(), bpy.context.evaluated_depsgraph_get()
    )
    assert lines.shape == (6, 3) and colors.shape == (6, 4) and joints.shape == (4, 3)
    tip = np.array(rig.matrix_world @ rig.pose.bones["arm.02"].tail)
    np.testing.assert_allclose(joints[-1], tip, atol=1e-5)
    np.testing.assert_allclose(colors[0, :3], np.array(PART_COLORS[0]) / 255, atol=1e-6)
