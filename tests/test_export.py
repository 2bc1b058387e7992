"""Scene to shot folder: the command line, the Python API and the operator, end to end.

Real bpy, real rigs, real files: a small animated tentacle rig seen by the factory camera,
saved as a .blend, exported, and read back with the engine's shot reader.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from masks import grow
from rigs import RIGIFY_METARIGS, add_metarig, build_armature, chain, tentacle_tree

from poseanything.engine.contract.shot import read_reference, read_shot
from poseanything.engine.contract.skeleton import write_png

pytestmark = pytest.mark.blender

WIDTH, HEIGHT = 96, 64
FRAMES = (1, 6)


def build_small_scene():
    """The factory scene plus an animated tentacle rig carrying the factory cube (its body), an
    armature without bones and a second scene without a camera; small render size and few
    frames keep exports quick."""
    import bpy

    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = WIDTH, HEIGHT
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = FRAMES
    rig = build_armature("Rig", tentacle_tree())
    rig.scale = (0.5, 0.5, 0.5)
    trunk = rig.pose.bones["trunk.00"]
    trunk.rotation_mode = "XYZ"
    for frame, angle in ((1, 0.0), (6, 0.8)):
        trunk.rotation_euler = (0.0, angle, 0.0)
        trunk.keyframe_insert("rotation_euler", frame=frame)
    rig.location = (0.0, 0.0, 0.0)
    bpy.data.objects["Cube"].parent = rig
    rig.keyframe_insert("location", frame=1)
    rig.location = (0.5, 0.0, 0.0)
    rig.keyframe_insert("location", frame=6)
    empty_rig = bpy.data.objects.new("Empty Rig", bpy.data.armatures.new("Empty Rig"))
    scene.collection.objects.link(empty_rig)
    bpy.data.scenes.new("No Camera").collection.objects.link(rig)
    scene.frame_set(1)
    return rig


@pytest.fixture
def small_blend(fresh_scene, tmp_path) -> Path:
    import bpy

    build_small_scene()
    path = tmp_path / "small.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path


def export_settings(out: Path, **overrides):
    import bpy

    from poseanything.poseanything_blender.shot_export import ExportSettings

    values = {"scene": bpy.context.scene.name, "armature": "Rig", "out": out}
    return ExportSettings(**(values | overrides))


def test_command_line_export_writes_a_shot_that_reads_back(small_blend, tmp_path):
    out = tmp_path / "shots" / "tentacles"
    command = [sys.executable, "-m", "poseanything.poseanything_blender.cli", "export"]
    args = [str(small_blend), "--armature", "Rig", "--frames", "2:5", "--out", str(out)]
    completed = subprocess.run(command + args, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert f"shot: {out}" in completed.stdout

    shot = read_shot(out)
    assert (shot.frame_start, shot.frame_end, shot.num_frames) == (2, 5, 4)
    assert (shot.width, shot.height) == (WIDTH, HEIGHT)
    assert shot.skeleton.bone_names == tuple(bone[0] for bone in tentacle_tree())
    assert shot.joints2d.shape == (4, shot.skeleton.num_joints, 2)
    assert shot.visible.any()
    assert (shot.armature, shot.camera, shot.source_blend) == ("Rig", "Camera", str(small_blend))
    assert read_reference(out).shape == (HEIGHT, WIDTH, 3)
    assert len(list((out / "poses").glob("*.png"))) == 4
    assert len(list((out / "background").glob("*.png"))) == 4
    assert "Fra:" not in completed.stdout  # Blender's per-frame lines of the plates are quiet
    # The rig moves, so its joints must too.
    assert not np.allclose(shot.joints3d[0], shot.joints3d[-1])
    plain = tmp_path / "plain"
    args = [str(small_blend), "--armature", "Rig", "--no-background", "--out", str(plain)]
    completed = subprocess.run(command + args, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert not (plain / "background").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scene", "Nope"], "no scene named 'Nope'"),
        (["--armature", "Nope"], "no object named 'Nope' in scene 'Scene'; its armatures are"),
        (["--armature", "Cube"], "'Cube' is a mesh object, not an armature"),
        (["--armature", "Empty Rig"], "'Empty Rig' has no bones"),
        (["--camera", "Cube"], "'Cube' is a mesh, not a camera"),
        (["--scene", "No Camera"], "has no camera; set a scene camera or pass --camera"),
        (["--frames", "5:2"], "the frame range 5:2 is empty"),
        (["--out", "{file}/shot"], "is a file; choose another folder"),
        (["--out", "{file}"], "is a file; give a folder for the shot"),
        (["--reference", "{missing}"], "no reference image at"),
        (["--reference", "{file}"], "not an image format Blender reads"),
        (["--bone-collection", "Nope"], "has no bone collection 'Nope'"),
    ],
)
def test_bad_input_exits_with_code_2_and_says_what_to_fix(
    small_blend, tmp_path, capsys, args, message
):
    from poseanything.poseanything_blender import cli

    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    paths = {"file": a_file, "missing": tmp_path / "missing.png"}
    given = dict(zip(args[::2], [value.format(**paths) for value in args[1::2]], strict=True))
    argv = {"--armature": "Rig", "--out": str(tmp_path / "shot")} | given
    flat = [str(small_blend)] + [item for pair in argv.items() for item in pair]

    assert cli.main(["export", *flat]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "shot").exists()


def test_missing_or_broken_blend_exits_with_code_2(tmp_path, capsys):
    from poseanything.poseanything_blender import cli

    missing = tmp_path / "missing.blend"
    assert cli.main(["export", str(missing), "--armature", "Rig", "--out", str(tmp_path)]) == 2
    assert f"no such file: {missing}" in capsys.readouterr().err
    broken = tmp_path / "broken.blend"
    broken.write_text("not a blend file")
    assert cli.main(["export", str(broken), "--armature", "Rig", "--out", str(tmp_path)]) == 2
    assert "cannot open" in capsys.readouterr().err


def test_malformed_frame_range_is_a_usage_error(capsys):
    from poseanything.poseanything_blender import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", "x.blend", "--armature", "Rig", "--frames", "1-5", "--out", "o"])
    assert exit_info.value.code == 2
    assert "write START:END" in capsys.readouterr().err


def test_linked_armature_exports_the_same_joints(small_blend, tmp_path):
    import bpy

    from poseanything.poseanything_blender.shot_export import export_shot

    local = export_shot(export_settings(tmp_path / "local"))

    bpy.ops.wm.read_homefile(use_empty=False, app_template="")
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = WIDTH, HEIGHT
    scene.frame_start, scene.frame_end = FRAMES
    with bpy.data.libraries.load(str(small_blend), link=True) as (_, data_to):
        data_to.objects = ["Rig"]
    linked = data_to.objects[0]
    scene.collection.objects.link(linked)
    assert linked.library is not None and linked.animation_data.action.library is not None

    result = export_shot(export_settings(tmp_path / "linked"))
    np.testing.assert_allclose(
        read_shot(result.path).joints3d, read_shot(local.path).joints3d, atol=1e-6
    )


def scene_fingerprint(scene) -> dict:
    """What an export must leave as it was: frame, selection, active object, modes, actions,
    render and output settings, the scene camera, the pose, and which data-blocks exist."""
    import bpy

    def plain_settings(struct) -> dict:
        values = {}
        for prop in struct.bl_rna.properties:
            if prop.type in {"POINTER", "COLLECTION"} or prop.identifier == "rna_type":
                continue
            value = getattr(struct, prop.identifier)
            values[prop.identifier] = tuple(value) if getattr(prop, "array_length", 0) else value
        return values

    view_layer = bpy.context.view_layer
    animated = [obj for obj in bpy.data.objects if obj.animation_data is not None]
    poses = {}
    for obj in scene.objects:
        if obj.pose is not None:
            matrices = np.empty(len(obj.pose.bones) * 16, dtype=np.float32)
            obj.pose.bones.foreach_get("matrix_basis", matrices)
            poses[obj.name] = matrices.tobytes()
    return {
        "frame": (scene.frame_current, scene.frame_subframe),
        "selected": sorted(obj.name for obj in scene.objects if obj.select_get()),
        "active": view_layer.objects.active.name if view_layer.objects.active else None,
        "mode": bpy.context.mode,
        "object_modes": {obj.name: obj.mode for obj in scene.objects},
        "actions": {
            obj.name: (obj.animation_data.action.name, obj.animation_data.action_slot.identifier)
            for obj in animated
            if obj.animation_data.action is not None
        },
        "camera": scene.camera.name if scene.camera else None,
        "render": plain_settings(scene.render),
        "hide_render": {obj.name: obj.hide_render for obj in scene.objects},
        "image_settings": plain_settings(scene.render.image_settings),
        "poses": poses,
        "datablocks": {
            kind: sorted(item.name for item in getattr(bpy.data, kind))
            for kind in ("scenes", "objects", "images", "actions", "cameras", "armatures")
        },
    }


def set_unusual_user_state(scene, rig) -> None:
    """Settings an export touches or could trip over, set away from their defaults."""
    import bpy

    from poseanything.poseanything_blender.blender_versions import file_format_changes

    render = scene.render
    render.engine = "CYCLES"
    for owner, attribute, value in file_format_changes(render.image_settings, "FFMPEG"):
        setattr(owner, attribute, value)
    render.filepath = "//renders/take_"
    render.use_sequencer = True
    render.use_border = True
    render.use_stamp = True
    render.film_transparent = True
    scene.frame_set(4)
    for obj in scene.objects:
        obj.select_set(obj.name in {"Cube", "Rig"})
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="POSE")
    rig.pose.bones["left.01"].location = (0.1, 0.2, 0.3)  # an unkeyed tweak the user made


def test_scene_is_unchanged_after_an_export_and_after_a_failed_one(fresh_scene, tmp_path):
    from poseanything.poseanything_blender.shot_export import ExportError, export_shot

    rig = build_small_scene()
    set_unusual_user_state(fresh_scene, rig)
    before = scene_fingerprint(fresh_scene)

    assert before["mode"] == "POSE" and before["render"]["engine"] == "CYCLES"
    export_shot(export_settings(tmp_path / "shot"))
    assert read_shot(tmp_path / "shot").num_frames == FRAMES[1] - FRAMES[0] + 1
    assert scene_fingerprint(fresh_scene) == before

    # Fails after evaluating every frame: panoramic cameras cannot be exported.
    fresh_scene.camera.data.type = "PANO"
    before = scene_fingerprint(fresh_scene)
    with pytest.raises(ExportError, match="camera 'Camera'.*Perspective or Orthographic"):
        export_shot(export_settings(tmp_path / "failed"))
    assert scene_fingerprint(fresh_scene) == before
    assert not (tmp_path / "failed").exists()


def test_reference_render_restores_render_settings_even_when_it_fails(fresh_scene, tmp_path):
    import bpy

    from poseanything.poseanything_blender.reference import render_reference

    rig = build_small_scene()
    set_unusual_user_state(fresh_scene, rig)
    before = scene_fingerprint(fresh_scene)
    not_a_folder = tmp_path / "a_file"
    not_a_folder.write_text("")
    with pytest.raises(RuntimeError, match="cannot save"):
        render_reference(fresh_scene, bpy.data.objects["Camera"], 2, not_a_folder / "ref.png")
    assert scene_fingerprint(fresh_scene) == before


def test_the_rendered_reference_mask_is_the_subject_and_only_the_subject(fresh_scene, tmp_path):
    import bpy
    from mathutils import Matrix

    from poseanything.engine.contract.shot import read_reference_mask
    from poseanything.poseanything_blender.shot_export import export_shot

    build_small_scene()
    before = scene_fingerprint(fresh_scene)
    full = read_reference_mask(export_shot(export_settings(tmp_path / "shot")).path)
    assert scene_fingerprint(fresh_scene) == before
    assert full.shape == (HEIGHT, WIDTH)
    assert 0.02 < (full > 0.5).mean() < 0.5
    # A mesh the rig does not carry, between the camera and the cube, is not the subject.
    bpy.ops.mesh.primitive_plane_add(size=0.8)
    camera = fresh_scene.camera.matrix_world
    bpy.context.object.matrix_world = camera @ Matrix.Translation((0.3, 0.0, -4.0))
    before = scene_fingerprint(fresh_scene)
    cut = read_reference_mask(export_shot(export_settings(tmp_path / "occluded")).path)
    assert scene_fingerprint(fresh_scene) == before
    np.testing.assert_array_equal(cut, full)
    assert (read_reference(tmp_path / "occluded") != read_reference(tmp_path / "shot")).any()


def test_an_armature_without_a_visible_mesh_warns_to_give_a_reference_image(fresh_scene, tmp_path):
    import bpy

    from poseanything.poseanything_blender.shot_export import export_shot

    build_small_scene()
    bpy.data.objects["Cube"].parent = None
    result = export_shot(export_settings(tmp_path / "shot"))
    assert any("--reference IMAGE" in warning for warning in result.warnings)
    assert not (result.path / "reference_mask.png").exists()


def test_the_background_plates_are_the_set_without_the_subject_through_each_frames_camera(
    fresh_scene, tmp_path
):
    import bpy

    from poseanything.engine.contract.shot import (
        read_background,
        read_image,
        read_reference_mask,
    )
    from poseanything.poseanything_blender.reference import render_reference
    from poseanything.poseanything_blender.shot_export import export_shot

    build_small_scene()
    bpy.ops.mesh.primitive_plane_add(size=30.0, location=(0.0, 0.0, -1.0))  # the set: a floor
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.6, location=(-1.5, 2.0, 0.0))  # and a ball
    camera = fresh_scene.camera
    camera.keyframe_insert("location", frame=1)
    camera.location.x += 1.5
    camera.keyframe_insert("location", frame=6)
    before = scene_fingerprint(fresh_scene)
    folder = export_shot(export_settings(tmp_path / "shot")).path
    assert scene_fingerprint(fresh_scene) == before
    shot = read_shot(folder)
    plates = read_background(folder, shot)
    assert sorted(plates) == list(range(shot.num_frames))
    first, reference = plates[0].astype(int), read_reference(folder).astype(int)
    subject = read_reference_mask(folder) > 0.02
    grown, inner = grow(subject, 2), ~grow(~subject, 1)
    assert np.abs(first - reference)[~grown].max() <= 2  # the set as the reference shows it
    assert np.abs(first - reference)[inner].mean() > 20  # where the cube was: what it hid
    # Frame 6's plate is the set seen by frame 6's camera (the ball moved in view).
    cube = [(bpy.data.objects["Cube"], "hide_render", True)]
    still = render_reference(fresh_scene, camera, 6, tmp_path / "f6.png", extra_changes=cube)
    np.testing.assert_array_equal(plates[5], read_image(still, "RGB"))
    assert np.abs(plates[5].astype(int) - first).max() > 40
    unrendered = export_shot(export_settings(tmp_path / "plain", render_background=False)).path
    assert read_background(unrendered, read_shot(unrendered)) is None


def test_a_given_reference_image_is_scaled_to_the_shot_and_its_alpha_is_the_mask(
    fresh_scene, tmp_path
):
    from poseanything.engine.contract.shot import read_reference_mask
    from poseanything.poseanything_blender.shot_export import ExportError, export_shot

    build_small_scene()
    # Twice the shot's size; a red subject whose alpha is the mask, on a transparent ground.
    image = np.zeros((2 * HEIGHT, 2 * WIDTH, 4), dtype=np.uint8)
    image[..., 2] = 255
    image[40:90, 60:120] = (255, 0, 0, 255)
    write_png(tmp_path / "big.png", image)

    result = export_shot(export_settings(tmp_path / "shot", reference_image=tmp_path / "big.png"))
    assert not (result.path / "background").exists()  # the image's backdrop is its own
    reference = read_reference(result.path)
    assert reference.shape == (HEIGHT, WIDTH, 3)
    assert any("scaled to the shot's 96x64" in note for note in result.notes)
    assert (reference[32, 45] > (200, -1, -1)).all() and reference[32, 45, 2] < 50
    mask = read_reference_mask(result.path)
    assert mask[32, 45] > 0.99 and mask[5, 5] < 0.01
    assert abs((mask > 0.5).mean() - 25 * 30 / (HEIGHT * WIDTH)) < 0.02

    opaque = image.copy()
    opaque[..., 3] = 255
    write_png(tmp_path / "opaque.png", opaque[..., :3])
    result = export_shot(
        export_settings(tmp_path / "opaque", reference_image=tmp_path / "opaque.png")
    )
    assert read_reference_mask(result.path) is None
    assert any("no transparency" in note for note in result.notes)

    write_png(tmp_path / "square.png", image[:, : 2 * HEIGHT])
    with pytest.raises(ExportError, match="does not have the shot's aspect"):
        export_shot(export_settings(tmp_path / "square", reference_image=tmp_path / "square.png"))


def test_operator_and_python_api_give_the_same_shot(fresh_scene, tmp_path):
    import bpy

    import poseanything
    from poseanything.poseanything_blender.armature import SkeletonOptions
    from poseanything.poseanything_blender.shot_export import export_shot

    rig = build_small_scene()
    api = export_shot(
        export_settings(
            tmp_path / "api",
            frames=(2, 4),
            skeleton=SkeletonOptions(deform_only=False),
            prompt="a tentacle waves",
            seed=7,
        )
    )

    poseanything.register()
    try:
        settings = fresh_scene.poseanything
        settings.armature = rig
        settings.use_frame_range = True
        settings.frame_start, settings.frame_end = 2, 4
        settings.deform_only = "OFF"
        settings.prompt = "a tentacle waves"
        settings.seed = 7
        settings.output_folder = str(tmp_path / "operator")
        assert bpy.ops.poseanything.export_shot() == {"FINISHED"}
        assert (tmp_path / "operator" / "Scene" / "background").is_dir()
        settings.render_background = False
        settings.output_folder = str(tmp_path / "plain")
        assert bpy.ops.poseanything.export_shot() == {"FINISHED"}
        assert not (tmp_path / "plain" / "Scene" / "background").exists()

        settings.armature = bpy.data.objects["Empty Rig"]
        with pytest.raises(RuntimeError, match="'Empty Rig' has no bones"):
            bpy.ops.poseanything.export_shot()
    finally:
        poseanything.unregister()
    assert not hasattr(bpy.types.Scene, "poseanything")

    from_api = read_shot(api.path)
    from_operator = read_shot(tmp_path / "operator" / "Scene")
    for name in ("joints3d", "joints2d", "depth", "visible"):
        np.testing.assert_array_equal(getattr(from_operator, name), getattr(from_api, name))
    np.testing.assert_array_equal(from_operator.camera_path.K, from_api.camera_path.K)
    assert (from_operator.prompt, from_operator.seed) == ("a tentacle waves", 7)
    assert from_operator.skeleton.bone_names == from_api.skeleton.bone_names
    np.testing.assert_array_equal(
        read_reference(tmp_path / "operator" / "Scene"), read_reference(api.path)
    )


def test_demo_builds_saves_and_exports(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "poseanything.poseanything_blender.cli",
            "demo",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert f"demo scene: {tmp_path / 'demo.blend'}" in completed.stdout
    shot = read_shot(tmp_path / "Walk")
    assert shot.num_frames == 72 and shot.fps == 24
    assert all(name.startswith("DEF-") for name in shot.skeleton.bone_names)
    assert shot.skeleton.num_parts == 5
    # The camera pans to follow: the hips stay near the middle of the frame throughout.
    hips = shot.skeleton.joint_names.index("DEF-spine:head")
    assert (np.abs(shot.joints2d[:, hips, 0] - shot.width / 2) < shot.width / 4).all()


def test_operator_on_an_unsaved_file_writes_to_the_temporary_folder(
    fresh_scene, tmp_path, monkeypatch
):
    """A path relative to an unsaved .blend has no anchor; the shot goes to a stand-in folder
    and the user is told where."""
    import tempfile

    import bpy

    import poseanything

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    build_small_scene()
    bpy.context.view_layer.objects.active = bpy.data.objects["Rig"]
    poseanything.register()
    try:
        assert fresh_scene.poseanything.output_folder.startswith("//")
        assert bpy.ops.poseanything.export_shot() == {"FINISHED"}
    finally:
        poseanything.unregister()
    assert read_shot(tmp_path / "poseanything" / "Scene").armature == "Rig"


SELF_BUILT_RIGS = {
    "single_bone": [("bone", (0, 0, 0), (0, 0, 1), None, False)],
    "tentacle_tree": tentacle_tree(),
    "disconnected_multi_root": chain("left", (-1, 0, 0), (0, 0, 0.5), 3)
    + chain("right", (1, 0, 0), (0, 0, 0.5), 2)
    + [("floating", (0, 1, 1), (0, 1, 1.5), None, False)],
}


@pytest.mark.parametrize("rig", [*RIGIFY_METARIGS, *SELF_BUILT_RIGS])
def test_every_metarig_and_built_rig_exports_with_blenders_projection(fresh_scene, tmp_path, rig):
    """Each shipped Rigify metarig and each rig built here exports; the shot's pixels are
    where Blender's world_to_camera_view puts its joints (within 0.01 px)."""
    import bpy
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    from poseanything.poseanything_blender.shot_export import export_shot

    fresh_scene.render.resolution_x, fresh_scene.render.resolution_y = WIDTH, HEIGHT
    armature = add_metarig(rig) if rig in RIGIFY_METARIGS else None
    if armature is None:
        armature = build_armature(rig, SELF_BUILT_RIGS[rig])
    armature.rotation_euler.z = 0.3
    armature.keyframe_insert("rotation_euler", frame=1)
    armature.rotation_euler.z = -0.3
    armature.keyframe_insert("rotation_euler", frame=2)

    result = export_shot(export_settings(tmp_path / rig, armature=armature.name, frames=(1, 2)))
    shot = read_shot(result.path)
    assert len(shot.skeleton.bone_names) == len(armature.data.bones)
    camera = bpy.data.objects["Camera"]
    for index, frame in enumerate((1, 2)):
        fresh_scene.frame_set(frame)
        ndc = np.array(
            [
                tuple(world_to_camera_view(fresh_scene, camera, Vector(p)))
                for p in shot.joints3d[index]
            ]
        )
        expected = np.stack([ndc[:, 0] * WIDTH, (1.0 - ndc[:, 1]) * HEIGHT], axis=-1)
        np.testing.assert_allclose(shot.joints2d[index], expected, atol=0.01)
        np.testing.assert_allclose(shot.depth[index], ndc[:, 2], rtol=1e-6, atol=1e-6)
