"""Flow-matching Euler sampling: exactness on a known flow, seeds, cancel, batched anchors."""

import pytest
import torch
from tiny_models import one_torch_thread, tiny_transformer  # noqa: F401

from poseanything.engine.inference import sampling
from poseanything.engine.inference.cancel import Cancelled, CancelToken
from poseanything.engine.inference.guidance import anchors_needed
from poseanything.engine.model.ptcm import FramePartMasks


def exact_flow_velocity(target: torch.Tensor):
    """The true velocity towards ``target`` on the straight flow x_t = (1-s) x0 + s noise."""

    def velocity(latents, timestep, step):
        sigma = (timestep / sampling.NUM_TRAIN_TIMESTEPS).clamp(min=1e-6)[:, None, :, None, None]
        return (latents - target) / sigma

    return velocity


def test_euler_on_the_exact_flow_lands_on_the_target_and_pins_the_reference():
    target = torch.randn(1, 4, 5, 3, 3, generator=torch.Generator().manual_seed(1))
    reference = torch.full((1, 4, 1, 3, 3), 0.5)
    noise = sampling.initial_noise((1, 4, 5, 3, 3), seed=7)
    seen = []

    def velocity(latents, timestep, step):
        seen.append((timestep.clone(), latents[:, :, :1].clone()))
        return exact_flow_velocity(target)(latents, timestep, step)

    out = sampling.flow_match_sample(velocity, noise, reference, steps=6, shift=5.0)
    torch.testing.assert_close(out[:, :, 1:], target[:, :, 1:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[:, :, :1], reference)
    assert len(seen) == 6
    for timestep, first in seen:
        assert timestep.shape == (1, 5)
        assert (timestep[:, 0] == 0).all() and (timestep[:, 1:] > 0).all()
        torch.testing.assert_close(first, reference)
    # Shift 5 spends the early steps at high noise, as Wan does.
    assert seen[1][0][0, 1] > 1000 * (1 - 1 / 6)


def test_same_seed_same_result_and_different_seed_differs():
    target = torch.zeros(1, 2, 3, 2, 2)

    def run(seed):
        noise = sampling.initial_noise((1, 2, 3, 2, 2), seed)
        velocity = lambda x, t, i: 0.3 * x - 0.1 * target  # noqa: E731 - a stub flow
        return sampling.flow_match_sample(velocity, noise, None, steps=4)

    torch.testing.assert_close(run(3), run(3), rtol=0, atol=0)
    assert not torch.allclose(run(3), run(4))


def test_stop_after_runs_only_the_first_steps():
    calls = []
    noise = sampling.initial_noise((1, 1, 2, 1, 1), 0)
    sampling.flow_match_sample(
        lambda x, t, i: calls.append(i) or torch.zeros_like(x), noise, None, 10, stop_after=3
    )
    assert calls == [0, 1, 2]


def test_cancel_stops_the_loop():
    cancel = CancelToken()
    calls = []

    def velocity(latents, timestep, step):
        calls.append(step)
        if step == 2:
            cancel.cancel()
        return torch.zeros_like(latents)

    with pytest.raises(Cancelled):
        sampling.flow_match_sample(
            velocity, torch.zeros(1, 1, 2, 1, 1), None, steps=20, cancel=cancel
        )
    assert calls == [0, 1, 2]


def test_on_step_reports_every_step_with_an_x0_estimate():
    target = torch.randn(1, 2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    reports = []
    sampling.flow_match_sample(
        exact_flow_velocity(target),
        sampling.initial_noise(target.shape, 1),
        None,
        steps=3,
        on_step=lambda done, x0: reports.append((done, x0)),
    )
    assert [done for done, _ in reports] == [1, 2, 3]
    for _, x0 in reports:  # on the exact flow every x0 estimate is the target
        torch.testing.assert_close(x0, target, atol=1e-4, rtol=1e-4)


def test_ptcm_steps_follow_the_paper_fractions():
    assert sampling.ptcm_steps(50) == (5, 6)
    assert sampling.ptcm_steps(4) == (1, 1)
    assert sampling.ptcm_steps(20) == (2, 2)


def test_guided_velocity_is_one_batched_forward():
    calls = []

    def stub_model(latents, pose_latents, timestep, text_embeds, ptcm=None):
        calls.append((latents.shape[0], pose_latents.shape[0], timestep.shape, text_embeds.shape))
        return pose_latents + 0 * latents  # each anchor's "prediction" is its pose latent

    names = anchors_needed(1.5, 1.0)
    pose = torch.stack([torch.full((2, 3, 1, 1), v) for v in (1.0, 3.0, 7.0)])
    velocity = sampling.guided_velocity(stub_model, pose, names, 1.5, 1.0, torch.zeros(1, 4, 8))
    out = velocity(torch.zeros(1, 2, 3, 1, 1), torch.zeros(1, 3), 0)
    assert calls == [(3, 3, (3, 3), (3, 4, 8))]
    torch.testing.assert_close(out, torch.full((1, 2, 3, 1, 1), 1 + 1.5 * 2 + 1.0 * 4))


def ptcm_inputs():
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(1, 4, 3, 4, 4, generator=generator)
    reference = torch.randn(1, 4, 1, 4, 4, generator=generator)
    pose = torch.randn(2, 4, 3, 4, 4, generator=generator)
    text = torch.randn(1, 3, 16, generator=generator)
    masks = torch.zeros(3, 2, 2, 2, dtype=torch.bool)
    masks[:, 0, 0] = True  # part 0: the top row of tokens, part 1: the bottom row
    masks[:, 1, 1] = True
    return noise, reference, pose, text, FramePartMasks(masks, first_parts=2)


@torch.no_grad()
def test_ptcm_reads_correspondence_then_restarts_from_the_same_noise():
    model = tiny_transformer()
    noise, reference, pose, text, masks = ptcm_inputs()
    names = ("subject", "full")
    steps = []
    guidance = dict(names=names, subject=1.0, camera=0.5, text_embeds=text, steps=10, shift=5.0)
    with_ptcm, correspondence = sampling.sample_with_ptcm(
        model,
        noise,
        reference,
        pose,
        **guidance,
        part_masks=masks,
        on_step=lambda done, x0: steps.append(done),
    )
    without, none = sampling.sample_with_ptcm(model, noise, reference, pose, **guidance)
    assert none is None
    assert correspondence.shape == (3, 2)
    assert sorted(correspondence[1].tolist()) == [0, 1]  # a one-to-one assignment
    assert steps == list(range(1, 12))  # 1 read-out step + 10 steps after the restart
    # An untrained part attention is the identity, so the restart reproduces the plain run.
    torch.testing.assert_close(with_ptcm, without)


@torch.no_grad()
def test_ptcm_part_attention_changes_the_early_steps_when_trained():
    model = tiny_transformer()
    for block in model.blocks:
        torch.nn.init.normal_(block.ptcm.to_out.weight, std=0.5)
    noise, reference, pose, text, masks = ptcm_inputs()
    names = ("full",)
    guidance = dict(names=names, subject=1.0, camera=1.0, text_embeds=text, steps=10, shift=5.0)
    with_ptcm, _ = sampling.sample_with_ptcm(
        model, noise, reference, pose[:1], **guidance, part_masks=masks
    )
    without, _ = sampling.sample_with_ptcm(model, noise, reference, pose[:1], **guidance)
    assert not torch.allclose(with_ptcm, without)
