"""engine.train: a tiny run on synthetic clips checkpoints, resumes exactly, and exports a model."""

import json

import numpy as np
import pytest
import torch
from synthetic_shots import make_shot
from tiny_models import one_torch_thread  # noqa: F401

from poseanything.engine.cli.train import parse_overrides
from poseanything.engine.configs import UnknownConfigKey
from poseanything.engine.contract.shot import write_shot
from poseanything.engine.contract.skeleton import render_skeleton_frames, write_png
from poseanything.engine.inference.pipeline import PoseAnythingPipeline, RenderSettings
from poseanything.engine.training import TrainingError
from poseanything.engine.training.train import (
    CHECKPOINT_DIR,
    LOG_EVERY,
    LOSS_PNG,
    TrainConfig,
    TrainState,
    list_clips,
    load_checkpoint,
    save_checkpoint,
    train,
)

TINY = TrainConfig(
    size=32,
    window=4,
    codec_latent_channels=4,
    codec_hidden_channels=8,
    codec_steps=3,
    codec_batch=4,
    heads=2,
    head_dim=8,
    ffn_dim=32,
    layers=2,
    batch=2,
    warmup=2,
    sample_steps=2,
    rescan_steps=5,
)


def write_clip(folder, index: int, source: str = "synthetic"):
    """A training clip without Blender: the walking figure's skeleton drawn thick as the video."""
    shot = make_shot(num_frames=6, width=32, height=32, pan=0.05 * index)
    clip = folder / f"clip_{index:06d}"
    drawn = render_skeleton_frames(shot.joints2d * 4, shot.in_front, shot.skeleton.edges, 128, 128)
    video = drawn.reshape(6, 32, 4, 32, 4, 3).max(axis=(2, 4))  # thick bones at 32 px
    write_shot(shot, clip, video[0])
    for number, frame in enumerate(video, 1):
        (clip / "frames").mkdir(exist_ok=True)
        (clip / "masks").mkdir(exist_ok=True)
        write_png(clip / "frames" / f"{number:04d}.png", frame)
        mask = np.repeat((frame.max(-1, keepdims=True) > 0).astype(np.uint8) * 255, 3, -1)
        write_png(clip / "masks" / f"{number:04d}.png", mask)
    (clip / "clip.json").write_text(json.dumps({"source": source}), encoding="utf-8")
    return clip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for index in range(3):
        write_clip(folder, index)
    return folder


def test_a_run_resumes_exactly_where_it_stopped(dataset, tmp_path):
    straight = train(dataset, tmp_path / "straight", 5, config=TINY, max_steps=20)
    train(dataset, tmp_path / "split", 5, config=TINY, max_steps=10)
    first_half, _ = load_checkpoint(tmp_path / "split" / CHECKPOINT_DIR)
    resumed = train(dataset, tmp_path / "split", 5, resume=True, max_steps=20)

    state, tensors = load_checkpoint(tmp_path / "split" / CHECKPOINT_DIR)
    _, straight_tensors = load_checkpoint(tmp_path / "straight" / CHECKPOINT_DIR)
    assert state.step == 20 and state.codec_step == TINY.codec_steps
    assert len(state.losses) == 20 // LOG_EVERY
    assert state.losses[: len(first_half.losses)] == first_half.losses  # the curve continues
    for name, value in straight_tensors.items():
        torch.testing.assert_close(tensors[name], value, msg=name)
    assert (tmp_path / "split" / LOSS_PNG).is_file()

    pipelines = [PoseAnythingPipeline.from_pretrained(folder) for folder in (straight, resumed)]
    assert pipelines[0].config.reference_source == TINY.reference_source
    assert pipelines[0].model.config.prediction == "reference_delta"
    for a, b in zip(pipelines[0].model.parameters(), pipelines[1].model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_checkpoint_is_safetensors_and_json_only(dataset, tmp_path):
    train(dataset, tmp_path, 5, config=TINY, max_steps=2)
    files = sorted(p.name for p in (tmp_path / CHECKPOINT_DIR).iterdir())
    assert files == ["state.json", "state.safetensors"]


def test_a_new_run_refuses_to_overwrite_and_resume_needs_a_checkpoint(dataset, tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint"):
        train(dataset, tmp_path, 5, resume=True, config=TINY)
    train(dataset, tmp_path, 5, config=TINY, max_steps=1)
    with pytest.raises(TrainingError, match="--resume"):
        train(dataset, tmp_path, 5, config=TINY, max_steps=1)


def test_evaluation_clips_are_never_trained_on(tmp_path):
    write_clip(tmp_path, 0)
    assert len(list_clips(tmp_path)) == 1
    (tmp_path / ".clip_000001.staging.tmp").mkdir()  # a clip still being rendered: skipped
    assert len(list_clips(tmp_path)) == 1
    write_clip(tmp_path, 2, source="metarig")
    with pytest.raises(TrainingError, match="held-out"):
        list_clips(tmp_path)


def test_settings_from_the_command_line():
    assert parse_overrides(["batch=8", "reference_source=null"]) == {
        "batch": 8,
        "reference_source": None,
    }
    with pytest.raises(TrainingError, match="unknown setting"):
        parse_overrides(["batchsize=8"])


def test_a_resumed_run_may_sharpen_the_decoder_but_not_move_the_latents(dataset, tmp_path):
    train(dataset, tmp_path, 5, config=TINY, max_steps=2)
    _, before = load_checkpoint(tmp_path / CHECKPOINT_DIR)
    with pytest.raises(TrainingError, match="keeps its settings"):
        train(dataset, tmp_path, 5, resume=True, max_steps=2, resume_overrides={"batch": 8})
    train(dataset, tmp_path, 5, resume=True, max_steps=2, resume_overrides={"decoder_steps": 3})
    state, after = load_checkpoint(tmp_path / CHECKPOINT_DIR)
    assert state.decoder_step == 3 and state.step == 2
    for name, value in before.items():
        if name.startswith(("codec.encoder.", "codec.latents_", "model.", "ema.")):
            torch.testing.assert_close(after[name], value, msg=name)
    assert not torch.equal(after["codec.decoder.0.weight"], before["codec.decoder.0.weight"])


def test_a_run_can_switch_to_the_warped_flow_base_and_fine_tune(dataset, tmp_path):
    train(dataset, tmp_path, 5, config=TINY, max_steps=4)
    _, before = load_checkpoint(tmp_path / CHECKPOINT_DIR)
    assert before["model.proj_out.weight"].abs().sum() > 0
    # Switching the base zeroes the output layer: the fine-tune starts at exactly the warp.
    train(dataset, tmp_path, 5, resume=True, max_steps=4, resume_overrides={"flow_base": "warp"})
    state, switched = load_checkpoint(tmp_path / CHECKPOINT_DIR)
    assert state.config.flow_base == "warp" and state.step == 4
    for name in ("model.proj_out.weight", "ema.proj_out.bias"):
        assert not switched[name].any(), name
    torch.testing.assert_close(
        switched["model.blocks.0.ffn.net.2.weight"], before["model.blocks.0.ffn.net.2.weight"]
    )
    folder = train(dataset, tmp_path, 5, resume=True, max_steps=8)
    state, tuned = load_checkpoint(tmp_path / CHECKPOINT_DIR)
    assert state.step == 8 and np.isfinite(state.losses).all()
    assert tuned["model.proj_out.weight"].any()  # it learned a change from the warp
    pipeline = PoseAnythingPipeline.from_pretrained(folder)
    assert pipeline.config.flow_base == "warp"
    shot = make_shot(num_frames=4, width=32, height=32)
    reference = np.full((32, 32, 3), 90, dtype=np.uint8)
    frames = pipeline(shot, reference, RenderSettings(overlap=1))
    assert frames.shape == (4, 32, 32, 3)


def test_a_run_can_measure_its_loss_on_decoded_pixels(dataset, tmp_path):
    train(dataset, tmp_path, 5, config=TINY, max_steps=3)
    _, before = load_checkpoint(tmp_path / CHECKPOINT_DIR)
    overrides = {"loss_space": "pixels"}
    train(dataset, tmp_path, 5, resume=True, max_steps=6, resume_overrides=overrides)
    state, after = load_checkpoint(tmp_path / CHECKPOINT_DIR)
    assert state.config.loss_space == "pixels" and state.step == 6
    assert np.isfinite(state.losses).all()
    for name, value in before.items():  # the codec decodes the loss but stays frozen
        if name.startswith("codec."):
            torch.testing.assert_close(after[name], value, msg=name)
    assert not torch.equal(after["model.proj_out.weight"], before["model.proj_out.weight"])


def test_a_bare_word_setting_is_a_string():
    assert parse_overrides(["flow_base=warp"]) == {"flow_base": "warp"}


def test_a_checkpoint_with_an_unknown_setting_warns_and_keeps_the_rest(tmp_path):
    save_checkpoint(tmp_path, TrainState(TINY, step=3), {"w": torch.ones(2)})
    state = json.loads((tmp_path / "state.json").read_text())
    state["config"]["codec_stepz"] = 7
    (tmp_path / "state.json").write_text(json.dumps(state))
    with pytest.warns(
        UnknownConfigKey, match=r"state\.json config: ignoring 'codec_stepz'.*size, "
    ):
        loaded, tensors = load_checkpoint(tmp_path)
    assert loaded.config == TINY and loaded.step == 3 and tensors["w"].tolist() == [1.0, 1.0]
    with pytest.warns(UnknownConfigKey, match="TrainConfig: ignoring 'batchsize'"):
        assert TrainConfig.from_dict({"batchsize": 8, "batch": 8}) == TrainConfig(batch=8)
