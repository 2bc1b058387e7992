"""The full model's pipeline settings as the release runs it: working size, reference, skeleton
images, part masks, and the release's own test inputs rendered end to end (tiny fakes, CPU)."""

import dataclasses
import json

import numpy as np
import pytest
from fake_full_model import make_fake_cache
from synthetic_shots import make_shot
from test_official_layout import release_data  # noqa: F401
from tiny_models import one_torch_thread, tiny_pipeline  # noqa: F401

from poseanything.engine import cli
from poseanything.engine.contract.shot import read_shot
from poseanything.engine.contract.video import read_video
from poseanything.engine.inference import release_poses
from poseanything.engine.inference.pipeline import FULL_MODEL_CONFIG


@pytest.fixture
def full_settings_pipeline():
    """A tiny pipeline with the full model's pipeline settings."""
    return tiny_pipeline(dataclasses.replace(FULL_MODEL_CONFIG, size_multiple=16))


@pytest.mark.parametrize(
    "size, release, budget",
    [((1920, 1080), (832, 448), (832, 480)), ((1024, 1024), (832, 832), (640, 640))],
)
def test_the_release_working_size_is_its_long_side_rule(size, release, budget):
    assert release_poses.long_side_size(*size) == release
    shot = make_shot(num_frames=2, width=size[0], height=size[1])
    pipeline = tiny_pipeline(FULL_MODEL_CONFIG)
    assert pipeline.working_size(shot) == release
    pipeline.config = dataclasses.replace(pipeline.config, working_size_rule="pixel_area")
    assert pipeline.working_size(shot) == budget


def test_the_reference_is_resized_without_a_crop(full_settings_pipeline):
    reference = np.zeros((100, 200, 3), np.uint8)
    reference[:, :10] = 255  # a white left edge a centre crop would cut away
    fitted = full_settings_pipeline.fit_reference(reference, 64, 64)
    assert fitted.shape == (64, 64, 3) and fitted[:, 0].min() == 255


def test_bones_too_short_to_read_are_left_out():
    joints = np.array([[[0, 0], [100, 0], [102, 1], [100, 60]]], float)  # a finger of 2 px
    edges = np.array([[0, 1], [1, 2], [1, 3]])
    keep = release_poses.readable_edges(joints, np.ones((1, 4), bool), edges, 6.0)
    assert keep.tolist() == [True, False, True]
    style = release_poses.ReleaseStyle((120, 80), (120, 80), min_bone=6.0)
    track = type("Track", (), {"joints2d": joints, "in_front": np.ones((1, 4), bool)})()
    track.edges = edges
    video = style.video(track, np.array([0]), None)
    # Without the finger, joint 1 has two bones: no red junction dot, and green tips at 0 and 3.
    red = (video[0, ..., 0] > 200) & (video[0, ..., 1] < 50)
    assert not red.any() and video[0, 60, 100, 1] == 255


def test_a_blender_shot_renders_with_release_images_masks_and_schedule(full_settings_pipeline):
    shot = make_shot(num_frames=9, width=64, height=48)
    reference = np.full((48, 64, 3), 120, np.uint8)
    mask = np.zeros((48, 64), np.float32)
    mask[8:40, 16:48] = 1.0
    pipeline = full_settings_pipeline
    pipeline.config = dataclasses.replace(
        pipeline.config, working_size_rule="pixel_area", pixel_area=64 * 48, steps=4
    )
    result = pipeline.render(shot, reference, subject_mask=mask)
    assert result.frames.shape == (9, 48, 64, 3) and result.report["working_size"] == [64, 48]
    assert result.report["ptcm"]["enabled"] and result.report["ptcm"]["part_correspondence"]


def test_the_release_test_inputs_render_on_the_full_model(
    release_data,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    cache = tmp_path / "hf" / "hub"
    make_fake_cache(cache)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shots = tmp_path / "shots"
    assert cli.main(["import-official", str(release_data), "--out", str(shots)]) == 0
    out = tmp_path / "deer.mp4"
    args = ["render", str(shots / "EZwrDYL6YIw_69"), "--out", str(out), "--full", "--allow-cpu"]
    # A 64x32 budget instead of the release's 832x448, so the CPU renders 81 frames in seconds.
    args += ["--device", "cpu", "--steps", "2", "--pixel-area", "2048", "--progress", "none"]
    assert cli.main(args) == 0, capsys.readouterr()
    frames, fps = read_video(out)
    assert frames.shape == (81, 18, 32, 3) and fps == 24.0
    report = json.loads((tmp_path / "engine.json").read_text())
    assert report["seed"] == 123 and report["working_size"] == [64, 32]
    assert report["ptcm"]["enabled"] and report["settings"]["steps"] == 2
    shot = read_shot(shots / "EZwrDYL6YIw_69")
    assert tiny_pipeline(FULL_MODEL_CONFIG).plan(shot).width == 832  # the release's size
