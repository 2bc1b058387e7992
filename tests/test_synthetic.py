"""Synthetic pose-video pairs: rigs, rendered clips, determinism, resume, metarig eval clips.

Clips are rendered for real at 32x32 pixels and 4 frames, which keeps the whole file fast.
"""

import io
import json

import numpy as np
import pytest
from masks import grow
from PIL import Image

from poseanything.engine.contract.shot import read_background, read_reference, read_shot
from poseanything.engine.errors import BadInput

pytestmark = pytest.mark.blender

SIZE = 32
FRAMES = 4


def _png(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _clip_arrays(folder) -> dict[str, np.ndarray]:
    """What a clip teaches: its joints, camera and every frame and mask."""
    with np.load(folder / "poses.npz") as npz:
        arrays = {key: npz[key] for key in ("joints3d", "joints2d", "K", "w2c")}
    for kind in ("frames", "masks"):
        arrays[kind] = np.stack([_png(p) for p in sorted((folder / kind).glob("*.png"))])
    return arrays


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_body_plan_is_one_connected_skeleton_of_at_most_five_parts(fresh_scene, seed):
    from poseanything.poseanything_blender.armature import extract_skeleton
    from poseanything.poseanything_blender.synthetic.rigs import TOPOLOGY_KINDS, random_rig

    for kind in TOPOLOGY_KINDS:
        armature_obj, made = random_rig(fresh_scene.collection, np.random.default_rng(seed), kind)
        skeleton = extract_skeleton(armature_obj)
        graph = skeleton.graph
        assert made == kind
        assert len(graph.bone_names) == len(armature_obj.data.bones) >= 4
        # One tree: every bone starts on a joint its parent already has.
        assert graph.num_joints == len(graph.bone_names) + 1, kind
        assert 1 <= graph.num_parts <= 5
        extent = np.ptp(skeleton.rest_joints, axis=0).max()
        assert 0.9 < extent < 3.1, kind
        assert abs(skeleton.rest_joints[:, 2].min()) < 1e-4, f"{kind} does not stand on z = 0"


def test_rig_generation_is_deterministic_and_varies_with_the_seed():
    from poseanything.poseanything_blender.synthetic.rigs import generate_bones

    def heads(seed):
        return np.array([b.head for b in generate_bones("tree", np.random.default_rng(seed))])

    np.testing.assert_array_equal(heads(5), heads(5))
    assert heads(5).shape != heads(6).shape or not np.allclose(heads(5), heads(6))
    with pytest.raises(ValueError, match="choose one of"):
        generate_bones("dragon", np.random.default_rng(0))


def test_dataset_clips_are_shots_with_matching_frames_masks_and_joints(fresh_scene, tmp_path):
    import bpy

    from poseanything.poseanything_blender.synthetic.dataset import make_dataset

    counts_before = {name: len(getattr(bpy.data, name)) for name in ("objects", "meshes", "images")}
    calls = []
    paths = make_dataset(
        tmp_path, 2, seed=11, size=SIZE, frames=FRAMES, progress=lambda *a: calls.append(a)
    )

    assert [p.name for p in paths] == ["clip_000000", "clip_000001"]
    assert calls == [(0, 2), (1, 2), (2, 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_000000", "clip_000001"]
    kinds = []
    for folder in paths:
        shot = read_shot(folder)
        meta = json.loads((folder / "clip.json").read_text())
        kinds.append(meta["kind"])
        assert shot.name == folder.name
        assert (shot.num_frames, shot.width, shot.height) == (FRAMES, SIZE, SIZE)
        assert meta["camera_motion"] in ("static", "pan", "orbit", "dolly", "zoom")
        frames = [_png(p) for p in sorted((folder / "frames").glob("*.png"))]
        masks = [_png(p) for p in sorted((folder / "masks").glob("*.png"))]
        assert len(frames) == len(masks) == len(list((folder / "poses").glob("*.png"))) == FRAMES
        assert frames[0].shape == (SIZE, SIZE, 3) and masks[0].shape == (SIZE, SIZE)
        np.testing.assert_array_equal(read_reference(folder), frames[0])
        # The subject is in every frame: some coverage, never all of it.
        coverage = np.array([(m > 127).mean() for m in masks])
        assert (coverage > 0.005).all() and (coverage < 0.95).all(), coverage
        # The exported skeleton lies on the rendered subject at the first frame.
        mask = masks[0] > 0
        grown = mask | np.roll(mask, 1, 0) | np.roll(mask, -1, 0)
        grown |= np.roll(grown, 1, 1) | np.roll(grown, -1, 1)
        on_screen = shot.visible[0]
        pixels = np.clip(shot.joints2d[0][on_screen].astype(int), 0, SIZE - 1)
        assert on_screen.sum() >= 2
        assert grown[pixels[:, 1], pixels[:, 0]].mean() > 0.9
    assert kinds == ["biped", "quadruped"]
    # Everything made for the clips is gone again; the open file is as it was.
    assert bpy.context.scene == fresh_scene
    assert {name: len(getattr(bpy.data, name)) for name in counts_before} == counts_before


def test_same_seed_same_clip_whatever_the_resume_order(fresh_scene, tmp_path):
    from poseanything.poseanything_blender.synthetic.dataset import make_dataset

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    make_dataset(whole, 2, seed=4, size=SIZE, frames=FRAMES, progress=None)
    make_dataset(resumed, 1, seed=4, size=SIZE, frames=FRAMES, progress=None)
    first = resumed / "clip_000000" / "shot.json"
    mtime = first.stat().st_mtime_ns
    stale = resumed / ".clip_000001.interrupted.tmp"
    stale.mkdir()
    calls = []
    make_dataset(resumed, 2, seed=4, size=SIZE, frames=FRAMES, progress=lambda *a: calls.append(a))

    assert first.stat().st_mtime_ns == mtime, "a finished clip was rebuilt"
    assert calls == [(1, 2), (2, 2)]
    assert not stale.exists()
    for name in ("clip_000000", "clip_000001"):
        files = sorted(p.relative_to(whole) for p in (whole / name).rglob("*") if p.is_file())
        assert files == sorted(
            p.relative_to(resumed) for p in (resumed / name).rglob("*") if p.is_file()
        )
        for file in files:  # byte for byte: joints, camera, frames, masks, metadata
            assert (whole / file).read_bytes() == (resumed / file).read_bytes(), file
    for changed in ({"seed": 5}, {"size": 2 * SIZE}):
        recipe = {"seed": 4, "size": SIZE, **changed}
        with pytest.raises(BadInput, match="use the same seed, size, frames and fps"):
            make_dataset(resumed, 3, frames=FRAMES, progress=None, **recipe)
    assert not (resumed / "clip_000002").exists()
    other = tmp_path / "other"
    make_dataset(other, 1, seed=5, size=SIZE, frames=FRAMES, progress=None)
    for key in ("joints3d", "frames"):
        assert not np.array_equal(
            _clip_arrays(other / "clip_000000")[key], _clip_arrays(whole / "clip_000000")[key]
        )


def test_render_clip_restores_every_setting_it_touches(fresh_scene, tmp_path):
    from poseanything.poseanything_blender.synthetic.render import render_clip

    scene = fresh_scene
    shading = scene.display.shading

    def fingerprint():
        render, image, view = scene.render, scene.render.image_settings, scene.view_settings
        return (
            scene.frame_current,
            scene.frame_start,
            scene.frame_end,
            render.engine,
            render.resolution_x,
            render.resolution_percentage,
            render.filepath,
            render.fps,
            image.file_format,
            image.color_mode,
            view.view_transform,
            scene.display.render_aa,
            shading.light,
            shading.color_type,
            tuple(shading.single_color),
            tuple(scene.world.color),
            [obj.hide_render for obj in scene.objects],
        )

    scene.frame_set(7)
    before = fingerprint()
    cube = scene.objects["Cube"]
    frames, masks = render_clip(
        scene, scene.camera, 2, tmp_path / "f", tmp_path / "m", [cube], size=SIZE
    )
    assert fingerprint() == before
    assert [p.name for p in frames] == [p.name for p in masks] == ["0001.png", "0002.png"]
    assert _png(frames[0]).std() > 0  # the cube is in the default camera's view ...
    assert _png(masks[0]).max() == 0  # ... but it was hidden for the matte: no subject


def test_a_metarig_eval_clip_uses_the_metarig_and_rejects_unknown_rigs(fresh_scene, tmp_path):
    from poseanything.poseanything_blender.synthetic.dataset import make_eval_clips

    (folder,) = make_eval_clips(
        tmp_path, rigs=("basic_human",), clips_per_rig=1, size=SIZE, frames=FRAMES, progress=None
    )
    shot = read_shot(folder)
    meta = json.loads((folder / "clip.json").read_text())
    assert folder.name == "basic_human_000"
    assert (meta["source"], meta["kind"]) == ("metarig", "metarig:basic_human")
    assert len(shot.skeleton.bone_names) == meta["bones"] == 29
    assert len(list((folder / "masks").glob("*.png"))) == FRAMES
    # Background plates, as a user's shot has them: each frame's set where the subject is not.
    assert meta["background"] is True
    plates = read_background(folder, shot)
    for index in (0, FRAMES - 1):
        frame = _png(folder / "frames" / f"{index + 1:04d}.png").astype(int)
        mask = _png(folder / "masks" / f"{index + 1:04d}.png") > 0
        clear = ~grow(mask, 6)  # beyond Workbench's screen-space edges around the subject
        assert np.abs(plates[index].astype(int) - frame)[clear].max() <= 2
        assert np.abs(plates[index].astype(int) - frame)[mask].mean() > 5
    with pytest.raises(ValueError, match="no metarig named 'dragon'"):
        make_eval_clips(tmp_path, rigs=("dragon",))
    with pytest.raises(ValueError, match="at least one clip"):
        make_eval_clips(tmp_path, clips_per_rig=0)


def test_progress_bar_counts_clips_and_estimates_from_this_run_only():
    from poseanything.poseanything_blender.synthetic.dataset import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(stream=stream)
    bar(3, 5)
    bar(4, 5)
    bar(5, 5)
    lines = stream.getvalue().split("\r")
    assert "clips 3/5" in lines[1] and "ETA ?" in lines[1]
    assert "clips 4/5" in lines[2] and "s/clip" in lines[2] and "ETA 0m00s" in lines[2]
    assert stream.getvalue().endswith("\n")


def test_make_dataset_command_checks_arguments_and_writes_clips(fresh_scene, tmp_path, capsys):
    from poseanything.poseanything_blender.cli import main

    for wrong in (
        ["make-dataset", "--out", str(tmp_path)],
        ["make-dataset", "--out", str(tmp_path), "--clips", "0"],
        ["make-dataset", "--out", str(tmp_path), "--clips", "1", "--size", "8"],
        ["make-eval-clips", "--out", str(tmp_path), "--rigs", "human,dragon"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(wrong)
        assert exit_info.value.code == 2
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert main(["make-dataset", "--out", str(blocked / "data"), "--clips", "1"]) == 2
    assert "choose a writable folder" in capsys.readouterr().err

    out = tmp_path / "data"
    argv = ["make-dataset", "--out", str(out), "--clips", "1", "--seed", "3"]
    assert main([*argv, "--size", str(SIZE), "--frames", str(FRAMES)]) == 0
    read_shot(out / "clip_000000")
    assert "clips 1/1" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["static", "pan", "orbit", "dolly", "zoom"])
def test_camera_moves_do_what_they_say_and_start_with_the_subject_in_frame(fresh_scene, kind):
    from poseanything.engine.contract.camera import project_points
    from poseanything.poseanything_blender.camera_path import (
        camera_path,
        gather_render_size,
        read_camera_state,
    )
    from poseanything.poseanything_blender.synthetic.animation import animate_camera

    scene = fresh_scene
    scene.render.resolution_x = scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100
    rng = np.random.default_rng(7)
    points = rng.normal(0.0, 1.0, (40, 3)) * [0.3, 0.3, 1.0] + [2.0, -1.0, 1.0]
    frames = np.arange(1, 9, dtype=float)
    camera, made = animate_camera(scene.collection, rng, frames, points, kind)
    worlds, states = [], []
    for frame in frames:
        scene.frame_set(int(frame))
        worlds.append(np.array(camera.matrix_world))
        states.append(read_camera_state(camera))
    path = camera_path(np.array(worlds), np.array(states), gather_render_size(scene))
    _, depth, visible = project_points(
        np.broadcast_to(points, (len(frames), *points.shape)),
        path.K,
        path.w2c,
        path.cam_type,
        SIZE,
        SIZE,
    )
    assert made == kind
    assert visible[0].all() and (depth[0] > 0).all(), "the subject must start in frame"

    location = np.array(worlds)[:, :3, 3]
    moved = not np.allclose(location[0], location[-1])
    turned = not np.allclose(path.w2c[0, :3, :3], path.w2c[-1, :3, :3])
    zoomed = not np.allclose(path.K[0], path.K[-1])
    assert (moved, turned, zoomed) == {
        "static": (False, False, False),
        "pan": (False, True, False),
        "orbit": (True, True, False),
        "dolly": (True, False, False),
        "zoom": (False, False, True),
    }[kind]
