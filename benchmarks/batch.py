"""Wall time of a 4-shot batch rendered serially in one process versus on a local Ray cluster.

Prints the wall times and their ratios (serial / Ray; above 1 means Ray pays) from one run:
- serial: ``run_batch`` without Ray, one shot after another, with torch's default thread count
  (every core) and again with one thread, as each Ray task gets (``OMP_NUM_THREADS=1``): on a
  busy machine, torch's threads contend for the cores, so the two differ a lot;
- Ray: a fresh one-machine cluster on loopback with ``--cpus`` CPUs, one task a shot (one CPU
  each), so shots render side by side; run twice: first on new workers (their start-up, mostly
  importing torch, is in the time), then again on the started workers, as a long-lived cluster
  runs; cluster start is printed apart.

Uses the bundled default model when it is there, else a randomly initialised model of the same
configuration saved to a temporary folder (speed does not depend on the weights' values). Shots
are the tests' walking figure at the default model's native 64x64. Everything is written under
one temporary folder, removed at the end.

Run: ``.venv/bin/python benchmarks/batch.py [--frames 16] [--steps N] [--cpus 2]``
(needs the ray extra; about a minute on two cores with the defaults).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray
import torch

from poseanything.engine.batch.plan import BatchSettings
from poseanything.engine.batch.runners import run_batch, start_local_ray
from poseanything.engine.checkpoints.weights import resolve_model_dir
from poseanything.engine.render import ModelChoice, RenderSettings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from synthetic_shots import write_synthetic_shot  # noqa: E402 - the tests' walking figure

SHOTS = 4


def timed_batch(shots: list[Path], settings: BatchSettings) -> float:
    started = time.perf_counter()
    summary = run_batch(shots, settings)
    seconds = time.perf_counter() - started
    if any(result.status != "done" for result in summary.results):
        raise RuntimeError(f"the benchmark batch did not finish:\n{summary.table()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="frames a shot (default 16)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="poseanything-batch-bench-") as scratch_name:
        scratch = Path(scratch_name)
        model = resolve_model_dir(None)
        shots = [
            write_synthetic_shot(scratch / "shots" / f"shot{i}", num_frames=args.frames, seed=i)
            for i in range(SHOTS)
        ]
        base = BatchSettings(render=RenderSettings(steps=args.steps), model=ModelChoice(model))
        print(f"model: {model}; {SHOTS} shots of {args.frames} frames at 64x64")

        threads = torch.get_num_threads()
        serial = timed_batch(shots, replace(base, out_dir=scratch / "serial"))
        print(f"serial (one process, {threads} torch threads): {serial:.1f} s")
        serial_one_thread = timed_batch(
            shots,
            replace(base, model=ModelChoice(model, threads=1), out_dir=scratch / "serial-1"),
        )
        print(f"serial (one process, 1 torch thread as a Ray task has): {serial_one_thread:.1f} s")

        started = time.perf_counter()
        start_local_ray(
            ray,
            num_cpus=args.cpus,
            _temp_dir=str(scratch / "ray"),
            log_to_driver=False,
        )
        print(f"local Ray cluster start ({args.cpus} CPUs): {time.perf_counter() - started:.1f} s")
        try:
            cold, warm = (
                timed_batch(shots, replace(base, out_dir=scratch / name, ray="auto"))
                for name in ("ray-cold", "ray-warm")
            )
        finally:
            ray.shutdown()
        print(f"Ray ({args.cpus} CPUs, one task a shot, 1 CPU each), new workers: {cold:.1f} s")
        print(f"Ray, the same batch again on the started workers: {warm:.1f} s")
        for name, on_ray in (("new workers", cold), ("started workers", warm)):
            print(
                f"serial / Ray ({name}): {serial / on_ray:.2f} ({threads} threads), "
                f"{serial_one_thread / on_ray:.2f} (1 thread)"
            )


if __name__ == "__main__":
    main()
