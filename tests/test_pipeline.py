"""PoseAnythingPipeline on synthetic shots with a tiny randomly initialised model.

As diffusers' pipeline tests: the tiny model is seeded (``tiny_models``) and torch on the CPU is
deterministic, so slices of its latents and frames are pinned; a change that alters the numbers
fails here, where "two outputs differ" would still pass. After a deliberate change, print the
new slices and update the pins.
"""

import dataclasses
import json
import warnings

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

from poseanything.engine.checkpoints.weights import CheckpointError
from poseanything.engine.configs import UnknownConfigKey
from poseanything.engine.contract.shot import ShotError
from poseanything.engine.inference import pipeline as pl
from poseanything.engine.inference.cancel import Cancelled, CancelToken

MIXED = pl.RenderSettings(subject_guidance=1.5, camera_guidance=0.5)
"""All three anchors in the guidance mix (camera -0.5, subject 1.0, full 0.5), PTCM on."""


@pytest.fixture(scope="module")
def pipeline():
    return tiny_pipeline()


def prepared(pipeline, shot, settings=None, reference=None):
    plan = pipeline.plan(shot, settings)
    if reference is None:
        reference = reference_image(shot.width, shot.height)
    return pipeline.prepare(shot, reference, plan)


def assert_latents(window, expected: list) -> None:
    """A window's latents at a fixed slice (8 numbers of the last latent frame) are the pinned
    ones. The tiny model's frames are a near-constant grey, so uint8 pixels would hide a change;
    its latents do not."""
    torch.testing.assert_close(
        window.latents[0, :, -1, 2, 4:6].flatten(), torch.tensor(expected), atol=1e-4, rtol=0
    )


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
    stitcher = pl.WindowStitcher()
    first = stitcher.add(np.full((6, 1, 1, 3), 100, np.float32), 0, next_start=4)
    assert first.shape == (4, 1, 1, 3) and stitcher.pending.shape == (2, 1, 1, 3)
    second = stitcher.add(np.full((6, 1, 1, 3), 200, np.float32), 4, next_start=None)
    video = np.concatenate([first, second])
    np.testing.assert_allclose(
        video[:, 0, 0, 0], [100, 100, 100, 100, 100, 150, 200, 200, 200, 200]
    )
    assert stitcher.done == 10 and len(stitcher.pending) == 0
    with pytest.raises(ValueError, match="pending"):
        stitcher.add(np.zeros((6, 1, 1, 3), np.float32), 8, None)  # not where the last ended


def test_prepare_mixes_the_anchors_and_fits_the_reference(pipeline):
    shot = make_shot(num_frames=6, width=48, height=32)
    inputs = prepared(pipeline, shot, MIXED, reference=reference_image(64, 32))
    assert inputs.plan.anchors == ("camera", "subject", "full")
    assert inputs.mix.tolist() == [-0.5, 1.0, 0.5]  # 1 - subject, subject - camera, camera
    assert sorted(inputs.tracks) == ["camera", "full", "subject"] and inputs.rectangle is None
    np.testing.assert_allclose(inputs.scale, [40 / 48, 24 / 32])
    assert inputs.reference.shape == (24, 40, 3) and inputs.pose_frames is None
    torch.testing.assert_close(
        inputs.text[0, :2, :4].flatten(),
        torch.tensor([-0.412, -0.5837, -0.0664, -0.3122, 0.21, -0.2873, -0.5981, -1.0072]),
        atol=1e-4,
        rtol=0,
    )
    blank = prepared(pipeline, shot, pl.RenderSettings(blank_pose=True))
    assert blank.pose_frames == frozenset()
    conditions = pipeline.condition_window(blank, 0, blank.reference)
    (pose_video,) = pipeline.pose_videos(blank, conditions.frames, conditions.poses)
    assert conditions.poses == [] and not pose_video.any()


def test_window_conditions_with_the_reference_as_flow_base(pipeline):
    shot = make_shot(num_frames=6, width=48, height=32)
    inputs = prepared(pipeline, shot, MIXED)
    conditions = pipeline.condition_window(inputs, 0, inputs.reference)
    assert conditions.frames.tolist() == list(range(6)) and conditions.poses is None
    assert conditions.pose_latents.shape == (3, 4, 6, 6, 10)
    torch.testing.assert_close(
        conditions.pose_latents[:, 0, -1, 2:4, 4].flatten(),
        torch.tensor([-0.0727, -0.0689, -0.076, -0.0653, -0.0731, -0.074]),
        atol=1e-4,
        rtol=0,
    )
    # The mix sums to one, so the mixed base is the reference latent in every frame.
    repeated = conditions.reference_latent.expand(-1, -1, 6, -1, -1)
    torch.testing.assert_close(conditions.base_latent, repeated)
    assert conditions.base_offsets is None and conditions.region is None
    parts = shot.skeleton.num_parts
    assert conditions.part_masks.masks.shape == (6, parts, 3, 5)  # every frame, token grid
    assert conditions.part_masks.first_parts == parts and conditions.part_masks.posed is None


def test_a_window_samples_to_pinned_latents_and_frames(pipeline):
    shot = make_shot(num_frames=6, width=48, height=32)
    inputs = prepared(pipeline, shot, MIXED)
    window = pipeline.sample_window(inputs, 0, inputs.reference)
    assert window.latents.shape == (1, 4, 6, 6, 10) and window.frames.shape == (6, 24, 40, 3)
    assert_latents(window, [1.4589, 0.0464, -1.4717, -1.2893, 0.8608, 1.5802, -0.7073, -0.441])
    pixels = [129.351, 132.364, 118.056, 129.347, 132.202, 118.08, 129.219, 131.929, 118.046]
    np.testing.assert_allclose(window.frames[-1, 12, 20:23].flatten(), pixels, atol=1e-3)
    identity = [0, 1, 2, 3, 4]
    assert window.correspondence.tolist() == [identity] * 3 + [[3, 1, 2, 0, 4]] + [identity] * 2
    other_seed = prepared(pipeline, shot, dataclasses.replace(MIXED, seed=9))
    assert_latents(
        pipeline.sample_window(other_seed, 0, other_seed.reference),
        [-0.3073, -3.3743, -0.1643, -1.25, 1.0266, 0.4523, -1.4944, -1.643],
    )


def test_windows_are_stitched_from_the_steps(pipeline):
    """Four windows of 8 frames sharing 4: each starts from a frame of the one before it, and the
    frames two windows share are cross-faded."""
    shot = make_shot(num_frames=20, width=32, height=32)
    settings = pl.RenderSettings(ptcm=False, upscale=False)
    result = pipeline.render(shot, reference_image(32, 32), settings)
    assert result.report["windows"] == [[0, 8], [4, 8], [8, 8], [12, 8]]
    inputs = prepared(pipeline, shot, settings)
    first = pipeline.sample_window(inputs, 0, inputs.reference)
    second = pipeline.sample_window(inputs, 1, np.rint(first.frames[4]).astype(np.uint8))
    assert_latents(second, [0.8294, 0.4863, -0.3213, 1.1309, -1.502, -0.7395, -1.5969, 3.7724])
    np.testing.assert_array_equal(result.frames[:5], np.rint(first.frames[:5]))
    faded = first.frames[5] * (1.0 - 0.25) + second.frames[1] * 0.25
    np.testing.assert_array_equal(result.frames[5], np.rint(faded))


def test_the_stream_hands_out_each_window_before_the_next_one_samples(pipeline):
    """A writer gets the frames no later window changes as soon as they are final: all frames
    before the next window's start after each window, the last window's all at the end; they
    are the frames ``render`` gathers, bit for bit."""
    shot = make_shot(num_frames=20, width=32, height=32)
    settings = pl.RenderSettings(ptcm=False)
    sampled = []
    stream = pipeline.stream(shot, reference_image(32, 32), settings, callback=sampled.append)
    handed, frames = [], []
    for finished in stream:
        assert finished.frames.dtype == np.uint8 and finished.frames.shape[1:] == (32, 32, 3)
        handed.append((finished.start, len(finished.frames), sampled[-1].window))
        frames.append(finished.frames)
    assert handed == [(0, 4, 1), (4, 4, 2), (8, 4, 3), (12, 8, 4)]
    result = pipeline.render(shot, reference_image(32, 32), settings)
    np.testing.assert_array_equal(np.concatenate(frames), result.frames)
    assert stream.report == result.report


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
    variants = {  # settings, pinned latents
        "base": (
            pl.RenderSettings(subject_guidance=1.5),
            [-2.8732, -0.1933, -0.7272, -0.2954, -0.398, 0.0322, 0.9535, 0.3711],
        ),
        "no_ptcm": (
            pl.RenderSettings(subject_guidance=1.5, ptcm=False),
            [-2.858, -0.2082, -0.7249, -0.3123, -0.3858, 0.0437, 0.9517, 0.3733],
        ),
        "locked": (
            pl.RenderSettings(subject_guidance=1.5, camera_guidance=0.0),
            [-2.8745, -0.1946, -0.7315, -0.2986, -0.3988, 0.0293, 0.956, 0.3674],
        ),
        "static_anchor": (
            pl.RenderSettings(subject_guidance=1.5, camera_anchor="static"),
            [-2.8706, -0.1936, -0.7293, -0.2962, -0.3974, 0.03, 0.9532, 0.3714],
        ),
    }
    base = pipeline(shot, reference, variants["base"][0])
    for name, (settings, expected) in variants.items():
        inputs = prepared(pipeline, shot, settings)
        assert_latents(pipeline.sample_window(inputs, 0, inputs.reference), expected)
        assert name == "base" or not np.array_equal(base, pipeline(shot, reference, settings)), name


def test_sparse_poses_blank_the_other_frames(pipeline):
    shot = make_shot(num_frames=6, width=32, height=32, pose_frames=(0, 5))
    inputs = prepared(pipeline, shot, pl.RenderSettings(ptcm=False))
    conditions = pipeline.condition_window(inputs, 0, inputs.reference)
    assert inputs.pose_frames == {0, 5} and conditions.poses == [0, 5]
    (pose_video,) = pipeline.pose_videos(inputs, conditions.frames, conditions.poses)
    assert pose_video[[0, 5]].any(axis=(1, 2, 3)).all()
    assert not pose_video[1:5].any()
    assert_latents(
        pipeline.sample_window(inputs, 0, inputs.reference),
        [0.0708, -0.3333, -2.2462, -1.4469, -2.5604, 0.4729, 1.1356, 0.5663],
    )
    sparse = pipeline(shot, reference_image(32, 32))
    dense = make_shot(num_frames=6, width=32, height=32)
    assert not np.array_equal(sparse, pipeline(dense, reference_image(32, 32)))


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
    pipeline = tiny_pipeline(dataclasses.replace(TINY_PIPELINE, reference_source=0.5))
    from_reference = pipeline(shot, reference)
    assert from_reference.shape == from_noise.shape
    assert not np.array_equal(from_reference, from_noise)
    inputs = prepared(pipeline, shot)
    assert_latents(
        pipeline.sample_window(inputs, 0, inputs.reference),
        [-1.1681, -0.4871, -0.3944, -0.5585, -0.223, -0.1868, -0.1226, -0.2247],
    )


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
    with pytest.raises(CheckpointError, match="PickleCodec"):
        pl.PoseAnythingPipeline.from_pretrained(folder)


def test_sparse_poses_give_part_masks_only_where_a_pose_is_shown(pipeline):
    shot = make_shot(num_frames=6, width=32, height=32, pose_frames=(2, 4))
    inputs = prepared(pipeline, shot)
    frames = np.arange(6)
    latents = torch.zeros(1, 4, 6, inputs.plan.height // 4, inputs.plan.width // 4)
    masks = pipeline.ptcm_masks(inputs, frames, [2, 4], latents)
    shown = masks.posed_masks().flatten(2).any(-1).any(1)  # (F,) any part in the frame
    assert shown.tolist() == [True, False, True, False, True, False]  # frame 0: the reference
    dense = pipeline.ptcm_masks(inputs, frames, None, latents)
    assert dense.posed_masks().flatten(2).any(-1).any(1).all()


def test_an_unknown_config_key_is_warned_about_not_dropped_silently(tmp_path):
    data = {**dataclasses.asdict(TINY_PIPELINE), "window_frame": 9}
    pattern = r"model/pipeline.json config: ignoring 'window_frame', not a PipelineConfig field"
    with pytest.warns(UnknownConfigKey, match=pattern + r".*window_frames, pixel_area"):
        config = pl.PipelineConfig.from_dict(data, "model/pipeline.json config")
    assert config == TINY_PIPELINE
    folder = tiny_model_folder(tmp_path / "model")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a folder save_pretrained wrote loads without a warning
        pl.PoseAnythingPipeline.from_pretrained(folder)
    meta = json.loads((folder / "pipeline.json").read_text())
    meta["config"]["steps_per_window"] = 3
    (folder / "pipeline.json").write_text(json.dumps(meta))
    with pytest.warns(UnknownConfigKey, match=r"pipeline\.json config: ignoring 'steps_per_win"):
        loaded = pl.PoseAnythingPipeline.from_pretrained(folder)
    assert loaded.config == TINY_PIPELINE
