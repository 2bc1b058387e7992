"""PoseAnythingPipeline on synthetic shots with a tiny randomly initialised model."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from synthetic_shots import make_shot, reference_image
from tiny_models import (  # noqa: F401
    TINY_PIPELINE,
    one_torch_thread,
    tiny_model_folder,
    tiny_pipeline,
    tiny_wan_codec,
)

from poseanything.engine.contract.shot import ShotError
from poseanything.engine.inference import pipeline as pl
from poseanything.engine.inference.sampling import Cancelled, CancelToken


@pytest.fixture(scope="module")
def pipeline():
    return tiny_pipeline()


def test_working_size_keeps_aspect_on_the_tile_grid():
    assert pl.working_size(1920, 1080, 64 * 64, 16) == (80, 48)
    assert pl.working_size(64, 64, 64 * 64, 16) == (64, 64)
    assert pl.working_size(1080, 1920, 64 * 64, 16) == (48, 80)
    assert pl.working_size(832, 480, 832 * 480, 32) == (832, 480)
    assert pl.working_size(5000, 20, 64 * 64, 16) == (1008, 16)  # never below one tile


def test_windows_cover_every_frame_once_and_end_on_the_last():
    assert pl.plan_windows(5, 16) == [0]
    assert pl.plan_windows(16, 16) == [0]
    for frames in (17, 40, 100, 250):
        starts = pl.plan_windows(frames, 16, 4)
        assert starts[0] == 0 and starts[-1] + 16 == frames
        assert all(0 < b - a <= 12 for a, b in zip(starts, starts[1:], strict=False))
    assert pl.window_length(10, 4) == 13 and pl.window_length(13, 4) == 13
    assert pl.window_length(10, 1) == 10
    with pytest.raises(ShotError, match="frames"):
        pl.plan_windows(0, 16)


def test_blend_weights_cross_fade_without_a_jump():
    weights = pl.blend_weights(4)
    np.testing.assert_allclose(weights, [0, 0.25, 0.5, 0.75])
    video = np.zeros((10, 1, 1, 3), np.float32)
    pl.stitch_window(video, np.full((6, 1, 1, 3), 100, np.float32), 0, 0)
    pl.stitch_window(video, np.full((6, 1, 1, 3), 200, np.float32), 4, 6)
    np.testing.assert_allclose(
        video[:, 0, 0, 0], [100, 100, 100, 100, 100, 150, 200, 200, 200, 200]
    )


def test_render_shapes_determinism_and_report(pipeline):
    shot = make_shot(num_frames=6, width=48, height=32)
    reference = reference_image(48, 32)
    settings = pl.RenderSettings(subject_guidance=1.5, camera_guidance=0.5)
    first = pipeline.render(shot, reference, settings)
    again = pipeline(shot, reference, settings)
    assert first.frames.shape == (6, 32, 48, 3) and first.frames.dtype == np.uint8
    np.testing.assert_array_equal(first.frames, again)
    other_seed = pipeline(shot, reference, pl.RenderSettings(1, 1.5, 0.5, seed=9))
    assert not np.array_equal(first.frames, other_seed)
    report = first.report
    assert report["anchors"] == ["camera", "subject", "full"]
    assert report["settings"]["seed"] == shot.seed and report["settings"]["steps"] == 2
    assert report["working_size"] == [40, 24]
    assert report["windows"] == [[0, 6]]
    correspondence = report["ptcm"]["part_correspondence"][0]
    assert len(correspondence) == 6 and len(correspondence[0]) == shot.skeleton.num_parts


def test_ptcm_switch_camera_guidance_and_camera_anchor_change_the_video(pipeline):
    shot = make_shot(num_frames=5, width=32, height=32, pan=0.2)
    reference = reference_image(32, 32)
    base = pipeline(shot, reference, pl.RenderSettings(subject_guidance=1.5))
    no_ptcm = pipeline(shot, reference, pl.RenderSettings(subject_guidance=1.5, ptcm=False))
    locked = pipeline(shot, reference, pl.RenderSettings(subject_guidance=1.5, camera_guidance=0.0))
    static_anchor = pipeline(
        shot, reference, pl.RenderSettings(subject_guidance=1.5, camera_anchor="static")
    )
    assert not np.array_equal(base, no_ptcm)
    assert not np.array_equal(base, locked)
    assert not np.array_equal(base, static_anchor)


def test_sparse_poses_blank_the_other_frames(pipeline):
    shot = make_shot(num_frames=6, width=32, height=32, pose_frames=(0, 5))
    encoded = []
    original = pipeline._encode

    def recording_encode(videos):
        encoded.append(videos)
        return original(videos)

    pipeline._encode = recording_encode
    try:
        pipeline(shot, reference_image(32, 32), pl.RenderSettings(ptcm=False))
    finally:
        del pipeline._encode
    pose_video = encoded[0][0]
    assert pose_video[[0, 5]].any(axis=(1, 2, 3)).all()
    assert not pose_video[1:5].any()
    dense = make_shot(num_frames=6, width=32, height=32)
    assert not np.array_equal(
        pipeline(shot, reference_image(32, 32)), pipeline(dense, reference_image(32, 32))
    )


def test_long_full_hd_shot_renders_every_frame_at_the_shot_size(pipeline):
    shot = make_shot(num_frames=100, width=1920, height=1080, pan=0.01)
    progress = []
    result = pipeline.render(
        shot, reference_image(1920, 1080), pl.RenderSettings(steps=1), callback=progress.append
    )
    assert result.frames.shape == (100, 1080, 1920, 3)
    width, height = result.report["working_size"]
    assert abs(width / height - 16 / 9) < 8 / height  # within one tile of the shot's aspect
    windows = result.report["windows"]
    assert windows[0][0] == 0 and windows[-1][0] + windows[-1][1] == 100
    assert [p.step for p in progress] == list(range(1, progress[-1].total + 1))
    assert progress[-1].eta_s == 0.0 and progress[-1].windows == len(windows)
    assert progress[-1].preview().shape == (height, width, 3)


def test_cancel_stops_the_render(pipeline):
    shot = make_shot(num_frames=20, width=32, height=32)
    cancel = CancelToken()
    seen = []

    def callback(progress):
        seen.append(progress.step)
        cancel.cancel()

    with pytest.raises(Cancelled):
        pipeline.render(shot, reference_image(32, 32), callback=callback, cancel=cancel)
    assert seen == [1]


def test_subject_too_small_for_the_working_size(pipeline):
    shot = make_shot(num_frames=3, width=2000, height=2000)
    tiny = shot.joints2d[:, :1] + (shot.joints2d - shot.joints2d[:, :1]) * 0.01
    small = dataclasses.replace(shot, joints2d=tiny)
    with pytest.raises(ShotError, match="too small"):
        pipeline(small, reference_image(64, 64))


def test_save_and_load_round_trip(tmp_path, pipeline):
    folder = tiny_model_folder(tmp_path / "model")
    loaded = pl.PoseAnythingPipeline.from_pretrained(folder)
    assert loaded.config == pipeline.config and loaded.model_id == "tiny-test"
    shot = make_shot(num_frames=3, width=32, height=32)
    np.testing.assert_array_equal(
        loaded(shot, reference_image(32, 32)), pipeline(shot, reference_image(32, 32))
    )


def test_missing_model_says_how_to_get_one(tmp_path):
    from poseanything.engine.checkpoints.weights import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="poseanything train"):
        pl.PoseAnythingPipeline.from_pretrained(tmp_path / "nowhere")


def test_size_multiple_must_give_whole_tokens():
    with pytest.raises(ValueError, match="size_multiple"):
        tiny_pipeline(pl.PipelineConfig(size_multiple=12))


def test_flow_can_start_from_the_reference_plus_noise():
    shot = make_shot(num_frames=4, width=32, height=32)
    reference = reference_image(32, 32)
    from_noise = tiny_pipeline()(shot, reference)
    config = dataclasses.replace(TINY_PIPELINE, reference_source=0.5)
    from_reference = tiny_pipeline(config)(shot, reference)
    assert from_reference.shape == from_noise.shape
    assert not np.array_equal(from_reference, from_noise)


def wan_codec_pipeline():
    tiny = tiny_pipeline()
    config = pl.PipelineConfig(window_frames=9, pixel_area=32 * 32, size_multiple=16, steps=2)
    return pl.PoseAnythingPipeline(
        tiny.model, tiny_wan_codec(), tiny.text_encoder, config, model_id="tiny-wan"
    )


def test_temporal_compression_windows_still_give_every_frame():
    """The full model's Wan VAE codes 1 + 4k frames; shots of any length still come out whole."""
    pipeline = wan_codec_pipeline()
    for frames in (3, 20):
        shot = make_shot(num_frames=frames, width=48, height=32)
        result = pipeline.render(shot, reference_image(48, 32), pl.RenderSettings())
        assert result.frames.shape == (frames, 32, 48, 3)
        windows = result.report["windows"]
        assert windows[-1][0] + windows[-1][1] == frames
        correspondence = result.report["ptcm"]["part_correspondence"][0]
        assert len(correspondence) == (2 if frames == 3 else 3)  # latent frames: 5 or 9 frames


def test_model_folder_names_its_component_classes(tmp_path):
    pipeline = wan_codec_pipeline()
    folder = tmp_path / "full"
    pipeline.model.save_pretrained(folder / "transformer")
    pipeline.text_encoder.save_pretrained(folder / "text_encoder")
    pipeline.codec.vae.save_pretrained(folder / "codec")
    meta = {
        "model_id": "tiny-wan",
        "config": dataclasses.asdict(pipeline.config),
        "components": {"codec": "WanVAECodec"},
    }
    (folder / "pipeline.json").write_text(json.dumps(meta))
    loaded = pl.PoseAnythingPipeline.from_pretrained(folder)
    assert type(loaded.codec).__name__ == "WanVAECodec" and loaded.codec.temporal_factor == 4
    meta["components"]["codec"] = "PickleCodec"
    (folder / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="PickleCodec"):
        pl.PoseAnythingPipeline.from_pretrained(folder)


def test_sparse_poses_give_part_masks_only_where_a_pose_is_shown(pipeline):
    shot = make_shot(num_frames=6, width=32, height=32, pose_frames=(2, 4))
    plan = pipeline.plan(shot)
    frames = np.arange(6)
    scale = np.array([plan.width / 32, plan.height / 32])
    latents = torch.zeros(1, 4, 6, plan.height // 4, plan.width // 4)
    masks = pipeline._part_masks(shot, frames, [2, 4], scale, plan, latents)
    shown = masks.posed_masks().flatten(2).any(-1).any(1)  # (F,) any part in the frame
    assert shown.tolist() == [True, False, True, False, True, False]  # frame 0: the reference
    dense = pipeline._part_masks(shot, frames, None, scale, plan, latents)
    assert dense.posed_masks().flatten(2).any(-1).any(1).all()
