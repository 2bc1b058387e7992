"""Generate in Blender, end to end: a generated Rigify rig, a tiny random model saved to a
folder, the engine as a real child process, the take as a real movie strip.

Timers never fire in the bpy module, so the tests call ``job.tick`` (through ``job.wait``) as
Blender's timer would. Sizes are tiny (64x48, a handful of frames, two sampling steps) to keep
the module quick.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import in_engine_python
from rigs import save_generated_rigify
from safetensors_files import safetensors_bytes
from test_export import scene_fingerprint

from poseanything.engine.contract.video import read_video

pytestmark = pytest.mark.blender

WIDTH, HEIGHT = 64, 48
FRAMES = (1, 5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    save = "import sys, tiny_models; print(tiny_models.tiny_model_folder(sys.argv[1]))"
    return Path(in_engine_python(save, str(tmp_path_factory.mktemp("model"))).split()[-1])


@pytest.fixture(scope="module")
def rig_blend(tmp_path_factory) -> Path:
    """Rigify's basic human, generated, walking a little in front of the factory camera."""
    import bpy

    folder = tmp_path_factory.mktemp("rigify")
    save_generated_rigify(folder)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = WIDTH, HEIGHT
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = FRAMES
    rig = bpy.data.objects["rig"]
    torso = rig.pose.bones["torso"]
    for frame, x in ((1, 0.0), (3, 0.3), (5, 0.6)):
        torso.location = (x, 0.0, 0.0)
        torso.keyframe_insert("location", frame=frame)
    bpy.data.objects.remove(bpy.data.objects["metarig"])
    scene.frame_set(1)
    path = folder / "rigify_walk.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path


@pytest.fixture
def shot_file(rig_blend, tmp_path, model_dir, monkeypatch):
    """A private copy of the rig file, open and with the extension registered; outputs go
    beside it (``//poseanything/``); the engine finds the tiny model through the environment."""
    import bpy

    import poseanything

    monkeypatch.setenv("POSEANYTHING_MODEL", str(model_dir))
    path = tmp_path / "shot.blend"
    shutil.copyfile(rig_blend, path)
    bpy.ops.wm.open_mainfile(filepath=str(path))
    poseanything.register()
    bpy.context.scene.poseanything.steps = 2
    yield path
    poseanything.unregister()


def strips(scene) -> dict:
    editor = scene.sequence_editor
    return {} if editor is None else {strip.name: strip for strip in editor.strips}


def generate_and_wait(all_shots: bool = False):
    import bpy

    from poseanything.poseanything_blender.job import wait

    operator = bpy.ops.poseanything.generate_all if all_shots else bpy.ops.poseanything.generate
    assert operator() == {"FINISHED"}
    return wait(bpy.context.scene, poll_s=0.05)


def test_generate_adds_a_take_strip_cancel_leaves_nothing_and_takes_never_overwrite(shot_file):
    import bpy

    from poseanything.poseanything_blender.job import job_for, tick, wait

    scene = bpy.context.scene
    rig = bpy.data.objects["rig"]
    bpy.context.view_layer.objects.active = rig
    scene.frame_set(3)
    before = scene_fingerprint(scene)

    job = generate_and_wait()
    assert job.results[0].status == "done", scene.poseanything.job_message
    shot_dir = shot_file.parent / "poseanything" / "Scene"
    take1 = shot_dir / "takes" / "take001" / "Scene_take001.mp4"
    strip = strips(scene)["Scene_take001"]
    assert strip.type == "MOVIE" and Path(strip.filepath) == take1
    assert (strip.frame_final_start, strip.frame_final_duration) == (1, 5)
    frames, fps = read_video(take1)
    assert frames.shape == (5, HEIGHT, WIDTH, 3) and fps == scene.render.fps
    assert (shot_dir / "takes" / "take001" / "engine.json").is_file()
    assert not (shot_dir / "takes" / "take001" / "engine.log").exists()
    assert scene.poseanything.job_ok and "Scene_take001" in scene.poseanything.job_message
    assert job_for(scene) is None
    assert (
        scene_fingerprint(scene) == before
    )  # the strip (and the scene's settings) are the only change

    # A second take: cancelled once the engine is sampling; no strip, no file, take001 intact.
    take1_bytes = hashlib.sha256(take1.read_bytes()).hexdigest()
    scene.poseanything.steps = 40
    assert bpy.ops.poseanything.generate() == {"FINISHED"}
    with pytest.raises(RuntimeError, match="already generating|is running"):
        bpy.ops.poseanything.generate()
    job = job_for(scene)
    while job.process is None or job.process.status.step < 1:
        tick()
        assert job_for(scene) is not None, scene.poseanything.job_message
    assert job.preview_image() is not None  # the engine's latest frame, live in the panel
    assert bpy.ops.poseanything.cancel() == {"FINISHED"}
    wait(scene, poll_s=0.05)
    assert set(strips(scene)) == {"Scene_take001"}
    assert sorted(p.name for p in (shot_dir / "takes").iterdir()) == ["take001"]
    assert hashlib.sha256(take1.read_bytes()).hexdigest() == take1_bytes
    assert scene.poseanything.job_message.startswith("cancelled")
    assert job.preview_image() is None and not job.preview_file.exists()

    # The next take is a new file and a new strip beside the first.
    scene.poseanything.steps = 2
    assert generate_and_wait().results[0].status == "done"
    second = strips(scene)["Scene_take002"]
    assert second.frame_final_start == 1 and second.channel != strip.channel
    assert (shot_dir / "takes" / "take002" / "Scene_take002.mp4").is_file()


def test_the_button_a_script_and_the_command_line_make_the_same_take(shot_file):
    """MolecularNodes' habit: the operator, the Python call and the command line share one
    start (``generate.start_generate``), so each makes the same take: the same frames, a strip
    at the same place, the same engine settings."""
    import bpy

    from poseanything.poseanything_blender.cli import blender_command
    from poseanything.poseanything_blender.generate import start_generate
    from poseanything.poseanything_blender.job import wait

    scene = bpy.context.scene
    bpy.context.view_layer.objects.active = bpy.data.objects["rig"]
    assert bpy.ops.poseanything.generate() == {"FINISHED"}
    by_operator = wait(scene, poll_s=0.05)
    by_python = start_generate(scene, bpy.context.view_layer)
    assert wait(scene, poll_s=0.05) is by_python
    assert blender_command(["generate"]) == 0

    assert [r.status for r in by_operator.results + by_python.results] == ["done", "done"]
    takes = shot_file.parent / "poseanything" / "Scene" / "takes"
    names = [f"Scene_take{number:03d}" for number in (1, 2, 3)]
    assert [by_operator.results[0].output, by_python.results[0].output] == [
        str(takes / f"take{number:03d}" / f"{names[number - 1]}.mp4") for number in (1, 2)
    ]
    made = strips(scene)
    assert sorted(made) == names
    assert {(made[name].frame_final_start, made[name].frame_final_duration) for name in names} == {
        (1, FRAMES[1] - FRAMES[0] + 1)
    }
    videos = [read_video(made[name].filepath)[0] for name in names]
    assert all(np.array_equal(videos[0], video) for video in videos[1:])
    settings = [
        json.loads((takes / f"take{number:03d}" / "engine.json").read_text())["settings"]
        for number in (1, 2, 3)
    ]
    assert settings[0] == settings[1] == settings[2]


@pytest.mark.parametrize("bug", [ValueError, TypeError])
def test_a_bug_of_ours_is_a_traceback_never_bad_input(shot_file, tmp_path, monkeypatch, bug):
    """A ValueError or TypeError from our own code (here a shape bug while reading the bones)
    is a bug: it reaches the user as a traceback (exit 1), not as "bad input" (exit 2) that
    tells them to fix a scene that is fine."""
    import bpy

    from poseanything.poseanything_blender import armature, cli

    def shape_bug(*args, **kwargs):
        raise bug("cannot reshape array of size 7 into shape (2,3)")

    monkeypatch.setattr(armature, "_bone_arrays", shape_bug)
    with pytest.raises(RuntimeError, match="(?s)Python: Traceback.*cannot reshape"):
        bpy.ops.poseanything.generate()
    with pytest.raises(bug, match="cannot reshape"):
        cli.blender_command(["generate"])
    out = tmp_path / "shot"
    with pytest.raises(bug, match="cannot reshape"):
        cli.main(["export", str(shot_file), "--armature", "rig", "--out", str(out)])
    assert not out.exists() and strips(bpy.context.scene) == {}


def add_marker_shots(scene):
    """Three camera markers; the middle camera looks away from the rig (a broken shot)."""
    import bpy

    cameras = []
    for index, rotation_z in enumerate((0.0, np.pi, 0.0)):
        camera = bpy.data.objects.new(f"Cam{index}", scene.camera.data)
        camera.matrix_world = scene.camera.matrix_world
        if rotation_z:
            camera.rotation_euler.rotate_axis("Y", rotation_z)
        scene.collection.objects.link(camera)
        cameras.append(camera)
    for index, (frame, camera) in enumerate(zip((1, 3, 5), cameras, strict=True)):
        marker = scene.timeline_markers.new(f"shot{index}", frame=frame)
        marker.camera = camera
    scene.frame_end = 6


def test_batch_over_three_marker_shots_reports_one_failure_and_adds_two_strips(shot_file):
    import bpy

    from poseanything.poseanything_blender.shots import batch_shots

    scene = bpy.context.scene
    add_marker_shots(scene)
    assert [(s.name, s.frame_start, s.frame_end) for s in batch_shots(scene)] == [
        ("shot0", 1, 2),
        ("shot1", 3, 4),
        ("shot2", 5, 6),
    ]
    from poseanything.poseanything_blender.job import wait

    assert bpy.ops.poseanything.generate_all() == {"FINISHED"}
    # The .blend is saved elsewhere while the job runs: takes still land, by absolute path.
    moved = shot_file.parent / "moved" / "renamed.blend"
    moved.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(moved))
    job = wait(scene, poll_s=0.05)
    # shot1 has no joint in front of its camera: refused at export, before anything rendered
    assert [(result.shot, result.status) for result in job.export_failures] == [("shot1", "failed")]
    assert [result.status for result in job.results] == ["done", "done"]
    made = strips(scene)
    assert set(made) == {"shot0_take001", "shot2_take001"}
    last = made["shot2_take001"]
    assert (last.frame_final_start, last.frame_final_duration) == (5, 2)
    message = scene.poseanything.job_message
    assert message.startswith("2 of 3 shots generated") and "shot1" in message
    assert "is in view of camera 'Cam1'" in message
    assert not scene.poseanything.job_ok


def test_error_messages_say_what_to_do(shot_file, model_dir, tmp_path, monkeypatch):
    import bpy

    from poseanything.poseanything_blender.job import job_for

    scene = bpy.context.scene
    settings = scene.poseanything

    settings.use_frame_range = True
    settings.frame_start, settings.frame_end = 5, 2
    with pytest.raises(RuntimeError, match="frame range 5:2 is empty"):
        bpy.ops.poseanything.generate()
    settings.use_frame_range = False

    camera = scene.camera
    scene.camera = None
    with pytest.raises(RuntimeError, match="has no camera; add one"):
        bpy.ops.poseanything.generate()
    scene.camera = camera

    (tmp_path / "blocked").write_text("a file where the output folder should be")
    settings.output_folder = str(tmp_path / "blocked" / "shots")
    with pytest.raises(RuntimeError, match="is a file; choose another folder"):
        bpy.ops.poseanything.generate()
    settings.output_folder = "//poseanything/"

    # A model folder without a model: said at once, with how to get one; nothing starts.
    monkeypatch.setenv("POSEANYTHING_MODEL", str(tmp_path / "no_model"))
    with pytest.raises(RuntimeError, match="was not found .*poseanything train"):
        bpy.ops.poseanything.generate()
    assert job_for(scene) is None and strips(scene) == {}

    # A damaged model file: refused before anything is exported, with what to do.
    broken = tmp_path / "broken_model"
    shutil.copytree(model_dir, broken)
    for weights in broken.rglob("*.safetensors"):
        weights.write_bytes(b"not safetensors")
    monkeypatch.setenv("POSEANYTHING_MODEL", str(broken))
    before = scene_fingerprint(scene)
    with pytest.raises(RuntimeError, match="is damaged .*copy the model folder again"):
        bpy.ops.poseanything.generate()
    assert job_for(scene) is None and strips(scene) == {}

    # Whole safetensors files holding the wrong tensors: the engine refuses them while loading
    # (never a video from randomly started weights), and says what to do.
    for weights in broken.rglob("*.safetensors"):
        weights.write_bytes(safetensors_bytes({"unrelated": [0.0]}))
    job = generate_and_wait()
    assert job.results[0].status == "failed"
    assert "do not fit PoseAnythingTransformer" in settings.job_message
    assert "copy the model folder again" in settings.job_message
    assert strips(scene) == {} and scene_fingerprint(scene) == before

    # No armature anywhere: say how to pick one.
    for obj in [o for o in scene.objects if o.type == "ARMATURE"]:
        bpy.data.objects.remove(obj)
    with pytest.raises(RuntimeError, match="no armature; pick one"):
        bpy.ops.poseanything.generate()
    assert job_for(scene) is None


def test_unsaved_file_outputs_go_to_a_temporary_folder_with_a_warning(fresh_scene, tmp_path):
    import tempfile

    from poseanything.poseanything_blender.tasks import shots_folder

    folder, warning = shots_folder("//poseanything/")
    assert folder == Path(tempfile.gettempdir()).absolute() / "poseanything"
    assert f"outputs go to {folder}" in warning and "save it" in warning
    assert shots_folder(str(tmp_path)) == (tmp_path.absolute(), None)


def test_headless_generate_on_a_saved_blend_saves_only_where_told(shot_file, model_dir, tmp_path):
    import bpy

    input_hash = hashlib.sha256(shot_file.read_bytes()).hexdigest()
    out = tmp_path / "with_strip.blend"
    command = [sys.executable, "-m", "poseanything.poseanything_blender.cli", "generate"]
    completed = subprocess.run(
        [*command, str(shot_file), "--model", str(model_dir), "--steps", "2", "--save", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert f"blend: {out}" in completed.stdout and "Scene_take001.mp4" in completed.stdout
    assert hashlib.sha256(shot_file.read_bytes()).hexdigest() == input_hash
    bpy.ops.wm.open_mainfile(filepath=str(out))
    strip = strips(bpy.context.scene)["Scene_take001"]
    assert strip.frame_final_duration == FRAMES[1] - FRAMES[0] + 1
    assert read_video(strip.filepath)[0].shape[0] == strip.frame_final_duration


def test_blender_command_is_registered_and_reports_bad_input(shot_file, capsys):
    import bpy

    from poseanything import operators
    from poseanything.poseanything_blender.cli import blender_command

    assert operators._cli_handle is not None
    assert blender_command(["generate", "--armature", "nobody"]) == 2
    assert "no armature named 'nobody'" in capsys.readouterr().err
    assert blender_command(["generate", "--frames", "oops"]) == 2
    assert strips(bpy.context.scene) == {}


def test_demo_generates_and_saves_the_blend_with_the_strip(model_dir, tmp_path):
    import bpy

    command = [sys.executable, "-m", "poseanything.poseanything_blender.cli", "demo"]
    completed = subprocess.run(
        [*command, "--out", str(tmp_path), "--model", str(model_dir), "--steps", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    video = tmp_path / "Walk" / "takes" / "take001" / "Walk_take001.mp4"
    assert f"video: {video}" in completed.stdout
    assert f"demo scene: {tmp_path / 'demo.blend'}" in completed.stdout
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "demo.blend"))
    strip = strips(bpy.context.scene)["Walk_take001"]
    assert (strip.frame_final_start, strip.frame_final_duration) == (1, 72)
    frames, _fps = read_video(video)
    assert frames.shape == (72, 480, 832, 3)


INSTALLED_GENERATE = r"""
import json, sys
zip_path, blend = sys.argv[1:3]
import bpy

bpy.ops.extensions.package_install_files(
    filepath=zip_path, repo="user_default", enable_on_install=True
)
bpy.ops.wm.open_mainfile(filepath=blend)
scene = bpy.context.scene
scene.poseanything.steps = 2
result = bpy.ops.poseanything.generate()
job_module = sys.modules["bl_ext.user_default.poseanything.poseanything_blender.job"]
job = job_module.wait(scene, poll_s=0.05)
strip = scene.sequence_editor.strips[0]


def registered():
    return sorted(name for name in dir(bpy.types) if "poseanything" in name.lower())


enabled = registered()
preferences = bpy.context.preferences.addons["bl_ext.user_default.poseanything"].preferences
panels = sys.modules["bl_ext.user_default.poseanything.ui.panels"]
default_model_chosen = {}
for choice in ("DEFAULT", "FULL", "DEFAULT"):
    preferences.model_choice = choice
    default_model_chosen[choice] = panels._default_model_chosen(bpy.context)
cycles = []
for _ in range(2):
    bpy.ops.preferences.addon_disable(module="bl_ext.user_default.poseanything")
    cycles.append([registered(), hasattr(bpy.types.Scene, "poseanything")])
    bpy.ops.preferences.addon_enable(module="bl_ext.user_default.poseanything")
    cycles.append([registered(), hasattr(bpy.types.Scene, "poseanything")])
print("REPORT " + json.dumps({
    "enabled_types": enabled,
    "cycles": cycles,
    "default_model_chosen": default_model_chosen,
    "operator": sorted(result),
    "message": scene.poseanything.job_message,
    "strip": [strip.name, strip.frame_final_start, strip.frame_final_duration, strip.filepath],
    "engine_module": job_module.__file__,
}))
"""


def test_installed_zip_generates_a_take(rig_blend, model_dir, tmp_path):
    """The extension as a user installs it: the zip from Blender's tool, in a temporary user
    folder; its Generate runs the engine from the installed copy."""
    from test_extension_install import REPO_ROOT

    built = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "build_extension.py"),
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    resources = tmp_path / "user_resources"
    resources.mkdir()
    blend = tmp_path / "shot.blend"
    shutil.copyfile(rig_blend, blend)
    env = os.environ | {
        "BLENDER_USER_RESOURCES": str(resources),
        "POSEANYTHING_MODEL": str(model_dir),
    }
    completed = subprocess.run(
        [sys.executable, "-c", INSTALLED_GENERATE, built.stdout.strip(), str(blend)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    line = next(line for line in completed.stdout.splitlines() if line.startswith("REPORT"))
    report = json.loads(line.removeprefix("REPORT "))
    assert report["operator"] == ["FINISHED"], report
    enabled = report["enabled_types"]
    assert "POSEANYTHING_OT_generate" in enabled and "SEQUENCER_PT_poseanything" in enabled
    assert report["cycles"] == [[[], False], [enabled, True]] * 2  # disable/enable, no leaks
    assert Path(report["engine_module"]).is_relative_to(resources)
    assert report["default_model_chosen"] == {"DEFAULT": True, "FULL": False}  # greyed
    name, start, duration, filepath = report["strip"]
    assert (name, start, duration) == ("Scene_take001", 1, FRAMES[1] - FRAMES[0] + 1)
    assert read_video(filepath)[0].shape[0] == duration


def test_all_shots_on_a_local_ray_cluster_become_takes_and_strips(shot_file, model_dir, capsys):
    """With a Ray address, Generate All Shots is one ``poseanything batch --ray`` child; its
    videos become versioned takes and strips as the local path's do, the broken shot a report."""
    import bpy

    from poseanything.poseanything_blender.cli import blender_command

    scene = bpy.context.scene
    add_marker_shots(scene)
    argv = ["generate", "--all-shots", "--ray", "local", "--model", str(model_dir)]
    assert blender_command([*argv, "--steps", "1"]) == 1  # one shot failed
    out = capsys.readouterr()
    assert "failed: shot1:" in out.err and "camera" in out.err
    made = strips(scene)
    assert set(made) == {"shot0_take001", "shot2_take001"}
    assert (
        made["shot2_take001"].frame_final_start,
        made["shot2_take001"].frame_final_duration,
    ) == (
        5,
        2,
    )
    shots = shot_file.parent / "poseanything"
    assert read_video(shots / "shot0" / "takes" / "take001" / "shot0_take001.mp4")[0].shape[0] == 2
    assert not list(shots.glob(".ray-batch-*"))  # the staging folder is gone
