"""The committed default model: it loads, renders the warp without running its network, its
network path is deterministic for a seed, and it follows the pose.

The pose test is a metric on a held-out clip (Blender's human metarig, never trained on), not a
snapshot: the full model must beat the same model with the skeleton blanked, in the subject
region and on the whole frame, so the pose input measurably drives the video.
"""

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from tiny_models import one_torch_thread  # noqa: F401

from poseanything.engine.checkpoints.weights import DEFAULT_MODEL_DIR
from poseanything.engine.inference.pipeline import PoseAnythingPipeline, RenderSettings
from poseanything.engine.training.evaluate import (
    FULL,
    NETWORK,
    NO_POSE,
    load_clip,
    render_row,
    table_rows,
)
from poseanything.engine.training.metrics import masked_psnr, psnr

EVAL_CLIP = Path(__file__).parent / "data" / "eval_clip"
MAX_WEIGHT_BYTES = 60 * 1024 * 1024


@pytest.fixture(scope="module")
def pipeline():
    return PoseAnythingPipeline.from_pretrained()


@pytest.fixture(scope="module")
def clip(pipeline):
    return load_clip(EVAL_CLIP)  # at its own 128x128: the size the render makes


@pytest.fixture(scope="module")
def renders(pipeline, clip):
    rows = {row.name: row for row in table_rows(ablations=False)}
    return {name: render_row(pipeline, clip, rows[name]) for name in (FULL, NETWORK, NO_POSE)}


def with_network(pipeline):
    """The same loaded pipeline with ``network`` on (the path a retrained network would take)."""
    networked = copy.copy(pipeline)
    networked.config = dataclasses.replace(pipeline.config, network=True)
    return networked


def render_counting_layers(pipeline, clip, settings=None):
    """Render ``clip`` and count the layers of the transformer, codec and text encoder that
    ran (forward hooks on every submodule of the real, loaded components): (result, calls)."""
    calls = []
    modules = [
        module
        for component in (pipeline.model, pipeline.codec, pipeline.text_encoder)
        for module in component.modules()
    ]
    hooks = [m.register_forward_pre_hook(lambda *_: calls.append(1)) for m in modules]
    try:
        result = pipeline.render(clip.shot, clip.reference, settings, subject_mask=clip.mask)
    finally:
        for hook in hooks:
            hook.remove()
    return result, len(calls)


def test_the_bundled_weights_load_within_budget(pipeline):
    weights = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.rglob("*.safetensors"))
    assert 0 < weights <= MAX_WEIGHT_BYTES
    assert not list(DEFAULT_MODEL_DIR.rglob("*.bin")) and not list(DEFAULT_MODEL_DIR.rglob("*.pt"))
    assert (DEFAULT_MODEL_DIR / "README.md").is_file()
    assert pipeline.config.window_frames >= 16
    assert pipeline.config.pixel_area >= 64 * 64


def test_the_default_render_is_the_warp_and_never_runs_the_network(pipeline, clip, renders):
    """The network adds +0.02 dB at the shot's size (the model card), so ``pipeline.json`` turns
    it off: no layer of the transformer, codec or text encoder runs, steps and seed change
    nothing, frame 1 is the reference; with ``network`` on, the same pipeline runs them."""
    assert pipeline.config.network is False and pipeline.config.flow_base == "warp"
    result, calls = render_counting_layers(pipeline, clip)
    assert calls == 0
    np.testing.assert_array_equal(result.frames, renders[FULL])
    assert result.report["settings"]["network"] is False and not result.report["ptcm"]["enabled"]
    assert (result.frames[0] == clip.reference).all()
    other, calls = render_counting_layers(pipeline, clip, RenderSettings(seed=7, steps=4))
    assert calls == 0
    np.testing.assert_array_equal(other.frames, renders[FULL])
    _, calls = render_counting_layers(with_network(pipeline), clip)
    assert calls > 0


def test_with_the_network_on_a_seed_gives_the_same_frames(pipeline, clip, renders):
    networked = with_network(pipeline)
    settings = RenderSettings()
    again = networked.render(clip.shot, clip.reference, settings, subject_mask=clip.mask).frames
    np.testing.assert_array_equal(again, renders[NETWORK])
    assert not np.array_equal(renders[NETWORK], renders[FULL])  # the network changes frames
    seven = dataclasses.replace(settings, seed=7)
    other = networked.render(clip.shot, clip.reference, seven, subject_mask=clip.mask)
    assert not np.array_equal(other.frames, renders[NETWORK])


def test_the_pose_drives_the_subject(clip, renders):
    """On this held-out clip, at its own 128x128, the shipped model (the warp, network off)
    scores 23.9 / 20.7 dB (whole / subject) against 20.0 / 17.2 dB without the pose: 1 dB of
    margin each is a real, robust bar."""
    truth, subject = clip.frames[1:], clip.subject[1:]
    full = masked_psnr(renders[FULL][1:], truth, subject)
    no_pose = masked_psnr(renders[NO_POSE][1:], truth, subject)
    assert full > no_pose + 1.0, f"subject PSNR {full:.2f} dB vs no pose {no_pose:.2f} dB"
    whole, whole_no_pose = psnr(renders[FULL][1:], truth), psnr(renders[NO_POSE][1:], truth)
    assert whole > whole_no_pose + 1.0, f"PSNR {whole:.2f} dB vs no pose {whole_no_pose:.2f} dB"
