"""Bad input on the Blender side, as a hostile new user tries it: every case ends with exit 2
(or 130 for Ctrl-C) and one line that says what to do, never a traceback, and leaves the user's
files as they were.

Real ``poseanything-blender`` processes on a saved .blend of a small tentacle rig (the one
``test_export`` builds); the cases that get as far as the engine use the tiny test model.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_export import build_small_scene
from tiny_models import tiny_model_folder

CLI = [sys.executable, "-m", "poseanything.poseanything_blender.cli"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("model"))


@pytest.fixture
def small_blend(fresh_scene, tmp_path) -> Path:
    """The tentacle rig saved to its own folder; Generate's outputs go beside it."""
    import bpy

    build_small_scene()
    path = tmp_path / "project" / "small.blend"
    path.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path


def variant(blend: Path, name: str, change) -> Path:
    """A copy of ``blend`` beside it with ``change(bpy)`` applied, the extension's settings
    included; the original file stays as it was."""
    import bpy

    import poseanything

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    poseanything.register()
    try:
        change(bpy)
        path = blend.with_name(f"{name}.blend")
        bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True)
    finally:
        poseanything.unregister()
    return path


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs
    )
    assert "Traceback" not in completed.stderr, completed.stderr
    return completed


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and its content hash: what "byte-identical" compares."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def our_lines(stderr: str) -> list[str]:
    """stderr without what Blender itself prints in a headless Workbench render (EGL notes)."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("EGL Error")]


def assert_refused(completed: subprocess.CompletedProcess, message: str, code: int = 2) -> None:
    assert completed.returncode == code, (completed.stdout, completed.stderr)
    assert message in completed.stderr, completed.stderr


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--steps", "-1", "is not a step count; give a whole number of at least 1"),
        ("--steps", "0", "is not a step count; give a whole number of at least 1"),
        ("--seed", "99999999999999999999", "is not a seed; give a whole number from 0 to"),
        ("--seed", "1e20", "is not a seed; give a whole number from 0 to 2147483647"),
        ("--seed", "-3", "is not a seed; give a whole number from 0 to 2147483647"),
        ("--guidance", "nan", "argument --guidance: nan is outside 0..10; use a number in"),
        ("--camera-guidance", "1e400", "inf is outside 0..10; use a number in that range"),
        ("--guidance", "-5", "-5.0 is outside 0..10; use a number in that range (1: as"),
        ("--guidance", "11", "11.0 is outside 0..10"),
        ("--guidance", "strong", "'strong' is not a number; use a number from 0 to 10"),
        ("--frames", "-5:3x", "'-5:3x' is not a frame range; write START:END"),
        ("--ray", "local", "--ray renders the shots of --all-shots; add --all-shots or leave"),
    ],
)
def test_generate_refuses_options_out_of_range_before_any_work(small_blend, option, value, message):
    before = digest(small_blend.parent)
    refused = run("generate", small_blend, option, value)
    assert_refused(refused, message)
    assert len(our_lines(refused.stderr)) == 1, refused.stderr
    assert digest(small_blend.parent) == before


def test_export_refuses_a_seed_out_of_range(small_blend, tmp_path):
    completed = run("export", small_blend, "--armature", "Rig", "--seed", "1e20", "--out", tmp_path)
    assert_refused(completed, "is not a seed")


@pytest.mark.parametrize("frames", [["--frames=-5:3"], ["--frames", "-5:3"]])
def test_negative_frame_ranges_are_frame_ranges(small_blend, tmp_path, frames):
    from poseanything.engine.contract.shot import read_background, read_reference, read_shot

    out = tmp_path / "shot"
    completed = run("export", small_blend, "--armature", "Rig", *frames, "--out", out)
    assert completed.returncode == 0, completed.stderr
    shot = read_shot(out)
    assert (shot.frame_start, shot.frame_end) == (-5, 3)
    # A scene's frame range cannot start below 0; the plates before frame 0 are rendered too.
    plates = read_background(out, shot)
    assert len(plates) == 9 and plates[0].shape == read_reference(out).shape


def test_save_under_a_file_is_refused_before_any_work(small_blend, tmp_path):
    """A regular file in the path stops root too, unlike a read-only folder."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    before = digest(small_blend.parent)
    for save, message in (
        (blocker / "out.blend", "is a file, not a folder; save elsewhere"),
        (tmp_path / "missing" / "out.blend", "does not exist; create it or save elsewhere"),
        (tmp_path, "give a file name ending in .blend"),
        (tmp_path / "out.txt", "give a file name ending in .blend"),
    ):
        assert_refused(run("generate", small_blend, "--save", save), message)
    assert digest(small_blend.parent) == before  # nothing exported, no shot folder


def test_a_save_that_fails_at_the_end_goes_beside_the_shots(small_blend, tmp_path, capsys):
    import bpy

    from poseanything.poseanything_blender.cli import save_blend

    bpy.ops.wm.open_mainfile(filepath=str(small_blend))
    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "out.blend").write_text("an earlier file, kept")
    blocker = tmp_path / "a_file"
    blocker.write_text("the folder --save named became a file while the video rendered")

    saved = save_blend(blocker / "out.blend", shots)
    assert saved == shots / "out_2.blend" and saved.is_file()
    assert (shots / "out.blend").read_text() == "an earlier file, kept"
    assert f"saved it as {saved} instead" in capsys.readouterr().out
    assert bpy.data.filepath == str(small_blend)  # a copy: the open file is still the user's


def wait_for_bpy(pid: int) -> None:
    """Until bpy's library is mapped into the process: it is importing bpy now."""
    maps = Path(f"/proc/{pid}/maps")
    deadline = time.monotonic() + 120
    while "bpy/__init__" not in maps.read_text():
        assert time.monotonic() < deadline, "bpy was never loaded"
        time.sleep(0.005)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
def engine_processes(folder: Path) -> list[int]:
    """Processes whose command line names ``folder``: the engine rendering a shot in it."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(folder) in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue  # the process ended meanwhile
    return found


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
@pytest.mark.parametrize(
    ("stop", "moment"),
    [
        (signal.SIGINT, "importing bpy"),
        (signal.SIGINT, "opening and exporting"),
        (signal.SIGINT, "rendering"),
        (signal.SIGTERM, "opening and exporting"),
        (signal.SIGTERM, "rendering"),
    ],
)
def test_ctrl_c_or_kill_at_any_moment_exits_130_with_one_line(small_blend, model_dir, stop, moment):
    """Case 10 on the Blender side: Ctrl-C, or a plain ``kill``, cancels as the panel's Cancel
    does: no take, nothing staged, no engine left running."""
    before = digest(small_blend.parent)
    process = subprocess.Popen(
        [*CLI, "generate", str(small_blend), "--model", str(model_dir), "--steps", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if moment == "rendering":
        while not process.stdout.readline().startswith("generating"):
            assert process.poll() is None, process.stderr.read()
    else:
        wait_for_bpy(process.pid)
        time.sleep(0.0 if moment == "importing bpy" else 1.0)
    process.send_signal(stop)
    _stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "cancelled" in stderr
    assert len(our_lines(stderr)) == 1, stderr
    after = digest(small_blend.parent)
    assert {name: after[name] for name in before} == before
    assert not [name for name in after if "take" in name or ".tmp" in name], after
    assert engine_processes(small_blend.parent / "poseanything") == []


def test_a_copy_of_a_blend_does_not_write_over_the_originals_shots(small_blend, tmp_path):
    """Case 1: the copy's absolute output folder holds the original's shot; refused, untouched.
    A copy of the whole project (shots relative, beside the file) is the copy's to write."""
    import shutil

    shots = tmp_path / "shots"
    original = variant(
        small_blend,
        "original",
        lambda bpy: setattr(bpy.context.scene.poseanything, "output_folder", str(shots)),
    )
    exported = run("export", original, "--armature", "Rig", "--out", shots / "Scene")
    assert exported.returncode == 0, exported.stderr
    before = digest(shots)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy = shutil.copyfile(original, elsewhere / "IN.blend")

    refused = run("generate", copy, "--save", elsewhere / "OUT.blend")
    assert_refused(refused, f"holds the shot of {original}, not of {copy}; choose another")
    assert "--output-folder on the command line" in refused.stderr
    assert_refused(
        run("export", copy, "--armature", "Rig", "--out", shots / "Scene"), "holds the shot of"
    )
    assert digest(shots) == before and sorted(p.name for p in elsewhere.iterdir()) == ["IN.blend"]

    project = tmp_path / "project"
    run("export", small_blend, "--armature", "Rig", "--out", project / "poseanything" / "Scene")
    copied = shutil.copytree(project, tmp_path / "project_copy")
    again = run(
        "export",
        copied / "small.blend",
        "--armature",
        "Rig",
        "--out",
        copied / "poseanything" / "Scene",
    )
    assert again.returncode == 0, again.stderr


def aim_camera_away(bpy) -> None:
    bpy.context.scene.camera.rotation_euler.z += 3.14159


@pytest.mark.parametrize(
    ("change", "frames", "warning"),
    [
        (aim_camera_away, [], "no joint of armature 'Rig' is in view of camera 'Camera'"),
        (
            None,
            ["--frames", "500:520"],
            "frames 500:520 reach outside the scene's frame range 1:6, and armature 'Rig' holds",
        ),
    ],
)
def test_a_shot_that_would_render_nothing_warns_at_export_and_generate_refuses(
    small_blend, tmp_path, model_dir, change, frames, warning
):
    """Case 5: the export is written with a warning; Generate refuses before rendering."""
    blend = variant(small_blend, "doubtful", change) if change else small_blend
    exported = run("export", blend, "--armature", "Rig", *frames, "--out", tmp_path / "shot")
    assert exported.returncode == 0, exported.stderr
    assert f"warning: {warning}" in exported.stderr
    before = digest(small_blend.parent)
    refused = run("generate", blend, "--armature", "Rig", "--model", model_dir, *frames)
    assert_refused(refused, warning)
    assert len(our_lines(refused.stderr)) == 1, refused.stderr
    assert not [name for name in digest(small_blend.parent) if "take" in name]
    assert {k: v for k, v in digest(small_blend.parent).items() if k in before} == before


def test_generate_all_shots_with_none_that_can_render_is_refused(small_blend, model_dir):
    """Every shot fails before rendering (no camera; nothing in view): bad input, exit 2."""
    away = variant(small_blend, "away", aim_camera_away)
    refused = run("generate", away, "--all-shots", "--model", model_dir)
    assert_refused(refused, "error: none of the 2 shots can be generated: No_Camera: scene")
    assert "Scene: no joint of armature 'Rig' is in view" in refused.stderr
    assert len(our_lines(refused.stderr)) == 1, refused.stderr
    assert not (small_blend.parent / "poseanything").exists()


def test_the_generate_operators_refuse_before_rendering(
    small_blend, tmp_path, model_dir, monkeypatch
):
    """The panel's buttons give the command line's answers as reports: another .blend's shots
    in the output folder (case 1), nothing in view (case 5)."""
    import shutil

    import bpy

    import poseanything

    monkeypatch.setenv("POSEANYTHING_MODEL", str(model_dir))
    other = shutil.copyfile(small_blend, tmp_path / "other.blend")
    shots = tmp_path / "shots"
    assert run("export", other, "--armature", "Rig", "--out", shots / "Scene").returncode == 0
    before = digest(shots)
    bpy.ops.wm.open_mainfile(filepath=str(small_blend))
    poseanything.register()
    try:
        settings = bpy.context.scene.poseanything
        settings.armature = bpy.data.objects["Rig"]
        settings.output_folder = str(shots)
        with pytest.raises(RuntimeError, match=f"holds the shot of {other}, not of {small_blend}"):
            bpy.ops.poseanything.generate()
        assert digest(shots) == before
        settings.output_folder = "//poseanything/"
        aim_camera_away(bpy)
        with pytest.raises(RuntimeError, match="no joint of armature 'Rig' is in view"):
            bpy.ops.poseanything.generate()
        with pytest.raises(RuntimeError, match="none of the 2 shots can be generated: No_Camera"):
            bpy.ops.poseanything.generate_all()
        takes = small_blend.parent / "poseanything" / "Scene" / "takes"
        assert not takes.exists() or not list(takes.iterdir())
    finally:
        poseanything.unregister()


def test_a_tiny_reference_image_is_refused_and_a_rig_without_mesh_warns(small_blend, tmp_path):
    """Case 6: a 1x1 image at a square shot, or 3x2 here at 96x64, is one blur."""
    import numpy as np

    from poseanything.engine.contract.skeleton import write_png

    write_png(tmp_path / "dot.png", np.full((2, 3, 3), 200, dtype=np.uint8))
    export = ("export", small_blend, "--armature", "Rig")
    tiny = run(*export, "--reference", tmp_path / "dot.png", "--out", tmp_path / "a")
    assert_refused(tiny, "is 3x2, too small for the shot's 96x64; give one of at least 24x16")
    assert not (tmp_path / "a").exists()

    no_mesh = variant(
        small_blend, "no_mesh", lambda bpy: setattr(bpy.data.objects["Cube"], "parent", None)
    )
    warned = run("export", no_mesh, "--armature", "Rig", "--out", tmp_path / "b")
    assert warned.returncode == 0, warned.stderr
    assert "warning: armature 'Rig' deforms or carries no mesh visible in frame 1" in warned.stderr


def hide_every_bone(bpy) -> None:
    for bone in bpy.data.objects["Rig"].data.bones:
        bone.hide = True


def test_all_bones_hidden_names_the_flag_that_helps(small_blend, tmp_path, model_dir):
    """Case 12: the message names --include-hidden (and the panel's option), which works."""
    hidden = variant(small_blend, "hidden", hide_every_bone)
    export = ("export", hidden, "--armature", "Rig", "--out", tmp_path / "shot")
    refused = run(*export)
    assert_refused(refused, "--include-hidden on the command line")
    assert "Include Hidden Bones in the PoseAnything panel" in refused.stderr
    assert_refused(
        run("generate", hidden, "--armature", "Rig", "--model", model_dir),
        "--include-hidden on the command line",
    )
    included = run(*export, "--include-hidden")
    assert included.returncode == 0, included.stderr


def test_a_device_the_machine_lacks_is_bad_input(small_blend, model_dir):
    """The engine refuses ``--device cuda`` without a GPU: exit 2 (a rerun cannot fix it), not 1,
    and the take it reserved is gone."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    refused = run("generate", small_blend, "--model", model_dir, "--device", "cuda")
    assert_refused(refused, "failed: Scene: device: --device cuda was asked for but no CUDA GPU")
    assert not [name for name in digest(small_blend.parent) if "take0" in name]


def test_a_generate_killed_outright_leaves_nothing_the_next_one_does_not_remove(
    small_blend, model_dir
):
    """Case 11 on the Blender side: SIGKILL mid-render cannot tidy up; its take folder and
    preview file carry its process id, and the next Generate of the shot removes them."""
    import tempfile

    shot = small_blend.parent / "poseanything" / "Scene"
    generate = ["generate", str(small_blend), "--model", str(model_dir)]
    process = subprocess.Popen(
        [*CLI, *generate, "--steps", "400"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while "step" not in process.stdout.readline():
        assert process.poll() is None, process.stderr.read()
    process.kill()
    process.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while engine_processes(shot):  # its engine dies at its next event: a broken pipe
        assert time.monotonic() < deadline, "the engine outlived its Blender"
        time.sleep(0.2)
    abandoned = shot / "takes" / "take001"
    assert (abandoned / ".rendering").read_text() == str(process.pid)
    previews = Path(tempfile.gettempdir()) / "poseanything-preview"
    assert list(previews.glob(f"preview-{process.pid}-*.png"))

    again = run(*generate, "--steps", "1")
    assert again.returncode == 0, again.stderr
    assert sorted(path.name for path in (shot / "takes").iterdir()) == ["take002"]
    assert sorted(path.name for path in (shot / "takes" / "take002").iterdir()) == [
        "Scene_take002.mp4",
        "engine.json",
    ]
    assert not list(previews.glob(f"preview-{process.pid}-*.png"))
