"""Flow-matching Euler sampling with batched guidance anchors, PTCM restarts, progress and cancel.

The loop is Euler steps of a velocity function over a sigma schedule (``SIGMA_SCHEDULES``, shift
configurable, as Wan uses 5): "diffusers" is diffusers' ``FlowMatchEulerDiscreteScheduler``
(sigmas from 1 down to 1/1000, then 0), on which the default model was trained and tuned;
"release" is the official code's DiffSynth ``FlowMatchScheduler(shift, sigma_min=0,
extra_one_step=True)``: linspace(1, 0, steps + 1) without its last point, shifted, so its last
timesteps are 241.9/172.4/92.6 where diffusers' are 192.8/114.8/24.4 (50 steps, shift 5).
The reference frame is the clean first latent frame (TI2V): it is pinned before every forward
and gets timestep 0, so the model sees it as already denoised.

Guidance anchors (see ``engine.guidance``) go through the model as one batch: one forward a step,
not one per anchor. PTCM (the paper's part-aware temporal coherence) needs the part
correspondence, which is read from a late block's self-attention at an early step; so the sampler
runs to that step, reads it, and restarts from the same initial noise with the part attention on
for the first steps.

Noise comes from a CPU ``torch.Generator`` seeded by the caller, so a seed gives the same video
on any device; the loop checks the cancel token before every step and raises ``Cancelled``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..model.ptcm import FramePartMasks, PartConditioning, resolve_parts
from .cancel import CancelToken
from .guidance import combine

DEFAULT_SHIFT = 5.0
NUM_TRAIN_TIMESTEPS = 1000
# Paper: correspondence read at step 5 of 50, part attention active for the first 6 of 50 steps.
PTCM_CAPTURE_FRACTION = 5 / 50
PTCM_ACTIVE_FRACTION = 6 / 50

SIGMA_SCHEDULES = ("diffusers", "release")

ConditioningFn = Callable[[int], PartConditioning | None]
VelocityFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
StepFn = Callable[[int, torch.Tensor], None]


@dataclass(frozen=True)
class SigmaSchedule:
    """Noise levels of an Euler run: ``sigmas`` (steps + 1,) ending in 0, and the model's
    ``timesteps`` (steps,) = sigmas * 1000, both float32 as their schedulers compute them."""

    sigmas: torch.Tensor
    timesteps: torch.Tensor


def sigma_schedule(steps: int, shift: float = DEFAULT_SHIFT, kind: str = "diffusers"):
    """The ``SigmaSchedule`` of ``steps`` Euler steps (see the module docstring for the kinds)."""
    if steps < 1:
        raise ValueError(f"steps is {steps}; use at least 1 sampling step")
    if kind == "release":
        sigmas = torch.linspace(1.0, 0.0, steps + 1)[:-1]
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        return SigmaSchedule(torch.cat([sigmas, sigmas.new_zeros(1)]), sigmas * NUM_TRAIN_TIMESTEPS)
    if kind != "diffusers":
        raise ValueError(f"sigmas {kind!r} is not one of {', '.join(SIGMA_SCHEDULES)}")
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=float(shift)
    )
    scheduler.set_timesteps(steps)
    return SigmaSchedule(scheduler.sigmas.float(), scheduler.timesteps.float())


def initial_noise(
    shape: tuple[int, ...], seed: int, device: str | torch.device = "cpu", dtype=torch.float32
) -> torch.Tensor:
    """Gaussian noise from a CPU generator, so a seed gives the same latents on every device."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device, dtype)


def ptcm_steps(steps: int) -> tuple[int, int]:
    """(capture step, active steps) for ``steps``: the paper's 5/50 and 6/50.

    The correspondence is read after ``capture`` steps (at least one, when there is a later step
    to restart into); part attention runs for the first ``active`` steps (at least one).
    """
    capture = min(max(1, round(steps * PTCM_CAPTURE_FRACTION)), steps - 1)
    active = max(1, round(steps * PTCM_ACTIVE_FRACTION))
    return capture, min(active, steps)


def pin_reference(latents: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
    """Put the clean reference latent (B,C,1,h,w) in as the first latent frame."""
    if reference is None:
        return latents
    return torch.cat(
        [reference.to(latents.dtype).expand_as(latents[:, :, :1]), latents[:, :, 1:]], 2
    )


def flow_match_sample(
    velocity: VelocityFn,
    noise: torch.Tensor,
    reference: torch.Tensor | None,
    steps: int,
    shift: float = DEFAULT_SHIFT,
    stop_after: int | None = None,
    on_step: StepFn | None = None,
    cancel: CancelToken | None = None,
    sigmas: str = "diffusers",
) -> torch.Tensor:
    """Integrate the flow from ``noise`` (B,C,T,h,w) to clean latents with Euler steps.

    ``velocity(latents, timestep (B,T), step_index)`` predicts ``noise - x0``; ``reference``
    (B,C,1,h,w) is pinned as the clean first frame with timestep 0. ``stop_after`` ends the loop
    after that many steps (the PTCM read-out run). ``on_step(steps_done, x0_estimate)`` reports
    progress; ``cancel`` is checked before every step and raises ``Cancelled``. ``sigmas``: the
    schedule kind (``SIGMA_SCHEDULES``).
    """
    schedule = sigma_schedule(steps, shift, sigmas)
    levels = schedule.sigmas.to(noise.device)
    last = steps if stop_after is None else min(stop_after, steps)
    latents = pin_reference(noise, reference)
    batch, _, frames = latents.shape[:3]
    for index, t in enumerate(schedule.timesteps[:last].tolist()):
        if cancel is not None:
            cancel.check()
        timestep = torch.full((batch, frames), t, device=latents.device)
        if reference is not None:
            timestep[:, 0] = 0.0
        predicted = velocity(latents, timestep, index)
        step = levels[index + 1] - levels[index]
        latents = (latents.float() + step * predicted.float()).to(predicted.dtype)
        latents = pin_reference(latents, reference)
        if on_step is not None:
            # x_next = x0 + sigma_next * v along the straight flow, so x0 = x_next - sigma_next * v.
            on_step(index + 1, pin_reference(latents - levels[index + 1] * predicted, reference))
    return latents


def rebase_velocity(
    velocity: torch.Tensor, offsets: torch.Tensor, timestep: torch.Tensor
) -> torch.Tensor:
    """A ``reference_delta`` model's velocity, its clean estimate moved by ``offsets``.

    The model's clean estimate is ``reference + delta``; with a flow base ``reference +
    offsets`` (the reference warped along the skeleton, ``engine.warp``) it becomes ``base +
    delta``, and on the straight flow ``v = (x_t - x0) / sigma`` that subtracts
    ``offsets / sigma``. Frames at timestep 0 (the clean reference) do not move."""
    sigma = (timestep.float() / NUM_TRAIN_TIMESTEPS)[:, None, :, None, None]
    shift = offsets.float() / sigma.clamp(min=1e-3)
    return (velocity.float() - torch.where(sigma > 0, shift, torch.zeros_like(shift))).to(
        velocity.dtype
    )


def guided_velocity(
    model,
    pose_latents: torch.Tensor,
    names: tuple[str, ...],
    subject: float,
    camera: float,
    text_embeds: torch.Tensor,
    conditioning: ConditioningFn | None = None,
    base_offsets: torch.Tensor | None = None,
) -> VelocityFn:
    """A velocity function that runs all guidance anchors in ONE batched model forward.

    ``pose_latents`` (A,C,T,h,w) holds the anchors ``names`` in order; the noisy latents, the
    timesteps and the text are repeated A times along the batch, and the A predictions are mixed
    by ``engine.guidance.combine``. ``conditioning(step)`` gives the PTCM input for that step
    (None = part attention off). ``base_offsets`` (A,C,T,h,w): each anchor's flow base minus the
    reference, for a ``reference_delta`` model whose change is measured from a moved reference
    (``rebase_velocity``).
    """
    count = len(names)

    def velocity(latents: torch.Tensor, timestep: torch.Tensor, step: int) -> torch.Tensor:
        batch = latents.shape[0]
        predictions = model(
            latents.repeat(count, 1, 1, 1, 1),
            pose_latents.repeat_interleave(batch, dim=0),
            timestep.repeat(count, 1),
            text_embeds.expand(batch, -1, -1).repeat(count, 1, 1),
            ptcm=None if conditioning is None else conditioning(step),
        )
        if base_offsets is not None:
            predictions = rebase_velocity(
                predictions,
                base_offsets.repeat_interleave(batch, dim=0),
                timestep.repeat(count, 1),
            )
        return combine(predictions, names, subject, camera)

    return velocity


def sample_with_ptcm(
    model,
    noise: torch.Tensor,
    reference: torch.Tensor | None,
    pose_latents: torch.Tensor,
    *,
    names: tuple[str, ...],
    subject: float,
    camera: float,
    text_embeds: torch.Tensor,
    steps: int,
    shift: float = DEFAULT_SHIFT,
    part_masks: FramePartMasks | None = None,
    on_step: StepFn | None = None,
    cancel: CancelToken | None = None,
    base_offsets: torch.Tensor | None = None,
    sigmas: str = "diffusers",
    stop_after: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample one window; with ``part_masks`` (the window's video frames), PTCM as in the paper.

    PTCM: sample ``capture`` steps without part attention, read the first frame's parts'
    attention from the model's capture block (``model.first_part_attention``) under the shot's
    own skeleton, resolve the parts the model's ``ptcm_variant`` way (``ptcm.resolve_parts``),
    then restart from the SAME noise with part attention on for the first ``active`` steps.
    ``on_step`` counts the read-out steps too (``ptcm_steps(steps)[0] + steps`` in all).
    ``base_offsets``: see ``guided_velocity``. ``sigmas``: the schedule kind. ``stop_after``
    ends the restarted run after that many steps (parity checks of the first steps). Returns
    (latents, the matching ``resolve_parts`` made, or None).
    """
    matching = None
    conditioning = None
    if part_masks is not None:
        capture, active = ptcm_steps(steps)
        plain = guided_velocity(
            model, pose_latents, names, subject, camera, text_embeds, None, base_offsets
        )
        early = flow_match_sample(
            plain,
            noise,
            reference,
            steps,
            shift,
            stop_after=capture,
            on_step=on_step,
            cancel=cancel,
            sigmas=sigmas,
        )
        at_capture = float(sigma_schedule(steps, shift, sigmas).timesteps[capture])
        timestep = torch.full(early.shape[:1] + early.shape[2:3], at_capture, device=early.device)
        if reference is not None:
            timestep[:, 0] = 0.0
        # The shot's own skeleton (or the subject's) is what the parts are drawn from.
        anchor = next((names.index(n) for n in ("full", "subject") if n in names), 0)

        def read_attention(first_masks: torch.Tensor) -> torch.Tensor:
            pose = pose_latents[anchor : anchor + 1]
            return model.first_part_attention(early, pose, timestep, text_embeds, first_masks)

        parts, matching = resolve_parts(
            model.config.ptcm_variant, read_attention, part_masks, early.shape[2]
        )

        def conditioning(step: int) -> PartConditioning | None:
            return parts if step < active else None

        if on_step is not None:
            report_early = on_step

            def on_step(done: int, x0: torch.Tensor) -> None:
                report_early(capture + done, x0)

    velocity = guided_velocity(
        model, pose_latents, names, subject, camera, text_embeds, conditioning, base_offsets
    )
    latents = flow_match_sample(
        velocity,
        noise,
        reference,
        steps,
        shift,
        stop_after=stop_after,
        on_step=on_step,
        cancel=cancel,
        sigmas=sigmas,
    )
    return latents, matching
