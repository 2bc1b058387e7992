"""Our side of the parity checks with the released PoseAnything (``official_parity_cases``).

Each function runs our engine (loader, transformer, sampler, skeleton drawing, part masks, VAE
tiling) on a case the way the full model runs it, for ``tests/test_official_parity.py`` and
``tools/official_parity.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from official_parity_cases import (
    GRAPH_EDGES,
    GRAPH_FRAMES,
    GRAPH_POSE_FRAMES,
    GRAPH_SOURCE_SIZE,
    TILE,
    TILE_SCALE,
    TILE_STRIDE,
    ParityConfig,
    ParityInputs,
    fake_decode,
    fake_encode,
    graph_subject_image,
    graph_track,
    tiling_inputs,
)

from poseanything.engine.checkpoints.official import load_official_transformer
from poseanything.engine.inference import release_poses
from poseanything.engine.inference.sampling import sample_with_ptcm, sigma_schedule
from poseanything.engine.model.codec import tiled_code
from poseanything.engine.model.ptcm import FramePartMasks, PartConditioning, release_conditioning


def our_model(folder: Path):
    return load_official_transformer(folder, dtype=torch.float32)


def frame_parts(inputs: ParityInputs) -> FramePartMasks:
    parts = inputs.parts
    return FramePartMasks(parts.masks, parts.first_parts, parts.posed)


def step_timestep(config: ParityConfig, latents: torch.Tensor, step: int) -> torch.Tensor:
    """(1, T) timestep of a step: the schedule's t, 0 for the clean first frame."""
    t = float(sigma_schedule(config.steps, config.shift, "release").timesteps[step])
    timestep = torch.full((1, latents.shape[2]), t)
    timestep[:, 0] = 0.0
    return timestep


@torch.no_grad()
def forward_without_parts(model, config: ParityConfig, inputs: ParityInputs) -> torch.Tensor:
    """(a) the first step's forward."""
    start = inputs.start
    return model(start, inputs.pose, step_timestep(config, start, 0), inputs.text)


@torch.no_grad()
def forward_with_parts(
    model, config: ParityConfig, inputs: ParityInputs, first_masks, union_masks
) -> torch.Tensor:
    """(b) the first restarted step's forward with the release's masks: first_masks
    (P, gh, gw), union_masks (T-1, P, gh, gw), as the release's blocks take them."""
    first = torch.as_tensor(np.asarray(first_masks)).bool()
    union = torch.as_tensor(np.asarray(union_masks)).bool()
    masks = torch.cat([first[None], union]).permute(1, 0, 2, 3)[None]
    start = inputs.start
    timestep = step_timestep(config, start, 0)
    return model(start, inputs.pose, timestep, inputs.text, PartConditioning(masks))


@torch.no_grad()
def correspondence(
    model, config: ParityConfig, inputs: ParityInputs, check_latents
) -> tuple[torch.Tensor, torch.Tensor]:
    """(c) at the latents of the read-out step: the capture block's heads-summed attention of
    every first-frame token to every token (n, T * n), and the union masks (T-1, P, gh, gw)
    that ``release_conditioning`` makes from it."""
    check_latents = torch.as_tensor(np.asarray(check_latents))
    timestep = step_timestep(config, check_latents, 5)
    n = config.grid[0] * config.grid[1]

    def read(first_masks):
        return model.first_part_attention(
            check_latents, inputs.pose, timestep, inputs.text, first_masks
        )

    per_token = torch.eye(n, dtype=torch.bool).view(1, n, *config.grid)
    attention = read(per_token)[0].flatten(1)  # (n, T * n)
    parts = frame_parts(inputs)
    resolved, _ = release_conditioning(read(parts.masks[:1, : parts.first_parts])[0], parts)
    return attention, resolved.masks[0, :, 1:].permute(1, 0, 2, 3)


def schedule(model, config: ParityConfig) -> dict[str, torch.Tensor]:
    """(d) sigmas and timesteps of the schedule, and the timesteps the embedding sees."""
    ours = sigma_schedule(config.steps, config.shift, "release")
    return {
        "sigmas": ours.sigmas[:-1],
        "timesteps": ours.timesteps,
        "model_timesteps": model.embedding_timesteps(ours.timesteps),
    }


@torch.no_grad()
def denoise(model, config: ParityConfig, inputs: ParityInputs) -> torch.Tensor:
    """(e) the latents after the first ``recorded_steps`` of the restarted run."""
    latents, _ = sample_with_ptcm(
        model,
        inputs.noise,
        inputs.reference,
        inputs.pose,
        names=("full",),
        subject=1.0,
        camera=1.0,
        text_embeds=inputs.text,
        steps=config.steps,
        shift=config.shift,
        part_masks=frame_parts(inputs),
        sigmas="release",
        stop_after=config.recorded_steps,
    )
    return latents


def skeleton_case() -> dict[str, np.ndarray]:
    """(f) the graph's source-size drawings, working-size images and token-grid part masks."""
    joints, in_front = graph_track()
    width, height = GRAPH_SOURCE_SIZE
    drawn = release_poses.draw_skeletons(
        joints, in_front, GRAPH_EDGES, width, height, GRAPH_POSE_FRAMES
    )
    greys = {f: release_poses.grey(drawn[f]) for f in GRAPH_POSE_FRAMES}
    subject = graph_subject_image(joints[0])
    parts = release_poses.part_masks(greys.__getitem__, sorted(greys), subject, GRAPH_FRAMES)
    return {
        "drawn": drawn,
        "images": release_poses.skeleton_video(  # frame by frame, as the pipeline draws
            joints,
            in_front,
            GRAPH_EDGES,
            (width, height),
            release_poses.long_side_size(width, height),
            GRAPH_POSE_FRAMES,
        ),
        "part_masks": parts.masks.numpy(),
        "first_parts": np.array(parts.first_parts),
        "dilation": np.array(release_poses.needed_dilation(subject, greys[0])),
    }


def tiling_case(seed: int) -> dict[str, torch.Tensor]:
    """(g) ``tiled_code`` as ``WanVAECodec`` calls it, on the fake VAE of the cases."""
    latents, video = tiling_inputs(seed)
    pixel_tile = tuple(TILE_SCALE * side for side in TILE)
    pixel_stride = tuple(TILE_SCALE * side for side in TILE_STRIDE)
    return {  # decoded frames are clamped to [-1, 1] after blending, as both codecs do
        "tiled_decode": tiled_code(latents, fake_decode, TILE, TILE_STRIDE, TILE_SCALE).clamp(
            -1, 1
        ),
        "tiled_encode": tiled_code(video, fake_encode, pixel_tile, pixel_stride, 1 / TILE_SCALE),
    }


def our_side(config: ParityConfig, folder: Path, inputs: ParityInputs, release: dict) -> dict:
    """Every check's output, (c) and (b) on the release's read-out latents and masks."""
    model = our_model(folder)
    return {
        "a": forward_without_parts(model, config, inputs),
        "b": forward_with_parts(
            model, config, inputs, release["first_masks"], release["union_masks"]
        ),
        "c": correspondence(model, config, inputs, release["check_latents"]),
        "d": schedule(model, config),
        "e": denoise(model, config, inputs),
        "f": skeleton_case(),
        "g": tiling_case(config.seed),
    }
