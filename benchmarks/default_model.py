"""The bundled default model end to end: load, then render a 16-frame held-out clip, in one run.

Prints seconds per frame, total seconds including the model load, and the process's peak
resident memory, for the default render (guidance 1.0, the warp at the shot's 128x128; the
bundled model's ``pipeline.json`` has ``network`` false, so no network runs; ``--network``
turns it on: the network at 64x64, the model's steps, PTCM on). The clip is the test fixture
``tests/data/eval_clip`` (Blender's human metarig, 16 frames), with its subject mask, as
``poseanything render`` reads it.

Run: ``.venv/bin/python benchmarks/default_model.py [--threads 1] [--network]`` (a fresh
process each time: peak memory and load time are per process).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time
from pathlib import Path

CLIP = Path(__file__).resolve().parent.parent / "tests" / "data" / "eval_clip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--network", action="store_true", help="run the network (config on)")
    args = parser.parse_args()
    began = time.perf_counter()
    import torch

    from poseanything.engine.contract.shot import read_shot
    from poseanything.engine.inference.pipeline import PoseAnythingPipeline
    from poseanything.engine.inference.reference import load_reference

    torch.set_num_threads(args.threads)
    pipeline = PoseAnythingPipeline.from_pretrained(None, device="cpu")
    if args.network:
        pipeline.config = dataclasses.replace(pipeline.config, network=True)
    loaded = time.perf_counter()
    shot = read_shot(CLIP)
    reference = load_reference(CLIP, shot)
    result = pipeline.render(shot, reference.image, subject_mask=reference.mask)
    done = time.perf_counter()
    frames = len(result.frames)
    width, height = result.report["working_size"]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    how = (
        f"network at {width}x{height}, {result.report['settings']['steps']} steps"
        if pipeline.config.network
        else "warp only, network off"
    )
    print(
        f"default model {pipeline.model_id}: {frames} frames at {shot.width}x{shot.height} "
        f"({how}, threads {args.threads})"
    )
    print(f"import + load     {loaded - began:6.2f} s")
    print(f"render            {done - loaded:6.2f} s  ({(done - loaded) / frames:.3f} s/frame)")
    print(f"total incl. load  {done - began:6.2f} s  ({(done - began) / frames:.3f} s/frame)")
    print(f"peak memory       {peak_mib:6.0f} MiB")


if __name__ == "__main__":
    main()
