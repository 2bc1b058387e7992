"""Engine speed and memory for the default model on CPU at its native size, from one run.

Prints:
- model load time, and seconds per frame rendering a 16-frame shot at the default model's
  working size (64x64) and step count, with the default guidance (one anchor) and with
  decoupled subject/camera guidance (three anchors), PTCM on;
- peak resident memory of the process;
- time of one guided step with the three anchors stacked in ONE batched forward, divided by the
  same step as three separate forwards (below 1 means batching pays).

Uses the bundled default model when it is there, else a randomly initialised model of the same
configuration (speed and memory do not depend on the weights' values).

Run: ``.venv/bin/python benchmarks/engine.py [--threads N]`` (about a minute on two idle cores;
on a shared, overloaded machine pass ``--threads 1``: OpenMP threads spinning against other
processes make every op many times slower).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

from poseanything.engine.inference.guidance import anchors_needed, combine
from poseanything.engine.inference.pipeline import PoseAnythingPipeline, RenderSettings
from poseanything.engine.inference.sampling import guided_velocity

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from synthetic_shots import make_shot, reference_image  # noqa: E402 - the tests' walking figure

FRAMES = 16
REPEATS = 5


def seconds_per_frame(pipeline, shot, reference, settings) -> float:
    started = time.perf_counter()
    frames = pipeline(shot, reference, settings)
    assert frames.shape[0] == shot.num_frames
    return (time.perf_counter() - started) / shot.num_frames


@torch.inference_mode()
def batched_over_separate(pipeline, width: int, height: int) -> tuple[float, float, float]:
    """(batched s, separate s, ratio) for one guided step with all three anchors."""
    model = pipeline.model
    config = model.config
    factor = pipeline.codec.spatial_factor
    shape = (1, config.latent_channels, FRAMES, height // factor, width // factor)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(shape, generator=generator)
    names = anchors_needed(1.5, 0.5)
    pose = torch.randn((len(names), *shape[1:]), generator=generator)
    text = pipeline.text_encoder.encode(["a figure walking"])
    timestep = torch.full((1, FRAMES), 500.0)
    batched = guided_velocity(model, pose, names, 1.5, 0.5, text)

    def separate():
        outputs = [model(latents, pose[i : i + 1], timestep, text) for i in range(len(names))]
        return combine(torch.cat(outputs), names, 1.5, 0.5)

    torch.testing.assert_close(batched(latents, timestep, 0), separate(), rtol=1e-4, atol=1e-4)

    def timed(run) -> float:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    # Interleaved, best of REPEATS each: other processes' load hits both sides alike.
    pairs = [
        (timed(lambda: batched(latents, timestep, 0)), timed(separate)) for _ in range(REPEATS)
    ]
    batched_s = min(pair[0] for pair in pairs)
    separate_s = min(pair[1] for pair in pairs)
    return batched_s, separate_s, batched_s / separate_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    pipeline = PoseAnythingPipeline.from_pretrained(None, device="cpu")
    load_s = time.perf_counter() - started
    shot = make_shot(num_frames=FRAMES, width=64, height=64, pan=0.03)
    reference = reference_image(64, 64)
    width, height = pipeline.working_size(shot)
    print(f"model: {pipeline.model_id}; torch threads {torch.get_num_threads()}")
    print(f"load: {load_s:.2f} s")
    print(f"shot: {FRAMES} frames at {width}x{height}, {pipeline.config.steps} steps, PTCM on")
    seconds_per_frame(pipeline, shot, reference, RenderSettings(steps=2))  # warm-up
    one = seconds_per_frame(pipeline, shot, reference, RenderSettings())
    print(f"seconds per frame, default guidance (1 anchor): {one:.3f} ({one * FRAMES:.2f} s total)")
    settings = RenderSettings(subject_guidance=1.5, camera_guidance=0.5)
    three = seconds_per_frame(pipeline, shot, reference, settings)
    print(f"seconds per frame, decoupled CFG (3 anchors): {three:.3f} ({three * FRAMES:.2f} s)")
    batched_s, separate_s, ratio = batched_over_separate(pipeline, width, height)
    print(
        f"one guided step, 3 anchors: batched {batched_s * 1000:.1f} ms, "
        f"three separate passes {separate_s * 1000:.1f} ms, ratio {ratio:.2f}"
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS of the process): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
