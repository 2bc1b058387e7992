"""Seconds per denoising step: torch eager versus ONNX Runtime, same inputs, one run.

One step of the default model at its native size (16 frames at 64x64, three guidance anchors
stacked in one batch, as decoupled CFG runs it), without and with PTCM part attention (the first
steps run with it), timed as the median of ``--repeats`` forwards after a warm-up, on each
backend with the same thread count (torch.set_num_threads and the session's intra-op threads).
Prints both, their ratio (torch / ONNX: above 1 means ONNX Runtime is faster), the largest
difference between the two outputs, and the provider ONNX Runtime took.

Uses the bundled default model when it is there, else a randomly initialised model of the same
configuration (speed does not depend on the weights' values). The export (once per size) is
cached in the ONNX cache (``engine.onnx.onnx_cache_dir``) and not timed.

Run: ``.venv/bin/python benchmarks/backends.py [--threads 1] [--repeats 10]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

from poseanything.engine.checkpoints.onnx import OnnxDenoiser
from poseanything.engine.inference.pipeline import PoseAnythingPipeline
from poseanything.engine.model import (
    PartConditioning,
    PoseAnythingTransformer,
)

FRAMES, SIZE, ANCHORS, PARTS = 16, 64, 3, 5


def default_model() -> tuple[PoseAnythingTransformer, int]:
    """The bundled model's transformer and its codec's spatial factor."""
    pipeline = PoseAnythingPipeline.from_pretrained(None, device="cpu")
    return pipeline.model, pipeline.codec.spatial_factor


def seconds_per_step(step, repeats: int) -> float:
    step()  # warm-up (first call allocates, ONNX Runtime plans)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for both backends")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, factor = default_model()
    model.eval()
    onnx_model = OnnxDenoiser(model, providers=("CPUExecutionProvider",))
    config = model.config
    side = SIZE // factor
    generator = torch.Generator().manual_seed(0)
    shape = (ANCHORS, config.latent_channels, FRAMES, side, side)
    latents = torch.randn(shape, generator=generator)
    pose = torch.randn(shape, generator=generator)
    timestep = torch.full((ANCHORS, FRAMES), 700.0)
    timestep[:, 0] = 0.0
    text = torch.randn(ANCHORS, 32, config.text_dim, generator=generator)
    grid = (FRAMES, side // config.patch_size[1], side // config.patch_size[2])
    masks = torch.zeros(1, PARTS, *grid, dtype=torch.bool)
    for part in range(PARTS):  # vertical stripes: every part present in every frame
        masks[:, part, :, :, part::PARTS] = True
    parts = PartConditioning(masks)

    print(f"bundled default model, {FRAMES} frames at {SIZE}x{SIZE}, {ANCHORS} anchors,")
    print(f"{args.threads} thread(s), median of {args.repeats} steps")
    for label, ptcm in (("plain step", None), ("PTCM step", parts)):
        inputs = (latents, pose, timestep, text)
        with torch.inference_mode():
            expected = model(*inputs, ptcm=ptcm)
            got = onnx_model(*inputs, ptcm=ptcm)  # exports on first use (not timed)
            torch_s = seconds_per_step(partial(model, *inputs, ptcm=ptcm), args.repeats)
            onnx_s = seconds_per_step(partial(onnx_model, *inputs, ptcm=ptcm), args.repeats)
        difference = (expected - got).abs().max().item()
        print(
            f"{label:>10}: torch eager {torch_s:.4f} s, ONNX Runtime {onnx_s:.4f} s "
            f"({onnx_model.providers[0]}), ratio {torch_s / onnx_s:.2f}x, "
            f"max |diff| {difference:.2e}"
        )


if __name__ == "__main__":
    main()
