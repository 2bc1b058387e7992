"""Peak memory of exporting and rendering the demo shot (832x480) at two lengths.

A shot's length must not cost memory: export writes each skeleton image as it is drawn, and the
render hands each window's frames to the video writer once its cross-fade with the next window
is done. So the peak resident memory at 240 and at 1440 frames (one minute at 24 fps) should be
about the same; the goal is under 1.5 GB each at 1440 frames.

Each figure is a fresh process (peak RSS never goes down in a process): export builds the
demo scene (Rigify walker, following camera) with its range stretched to N frames (the walk
holds its last pose after frame 72, which costs the same to export and draw) and exports it
with a Workbench reference; render renders that shot with the bundled default model as its
``pipeline.json`` has it (the warp alone, network off), writing the mp4.

Run: ``.venv/bin/python benchmarks/long_shot_memory.py [--lengths 240 1440] [--steps N]``
(about 14 minutes on two cores, most of it the 1440 background plates the export renders).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_GB = 1.5


def peak_rss_gb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def export_child(frames: int, shot: Path) -> dict:
    import bpy

    from poseanything.poseanything_blender.demo_scene import build_demo_scene
    from poseanything.poseanything_blender.shot_export import ExportSettings, export_shot

    bpy.ops.wm.read_homefile(use_empty=True, app_template="")
    demo = build_demo_scene(bpy.context.scene)
    demo.scene.frame_end = frames
    began = peak_rss_gb()
    export_shot(
        ExportSettings(
            scene=demo.scene.name, armature=demo.armature.name, out=shot, frames=(1, frames)
        )
    )
    return {"before_gb": began}


def render_child(shot: Path, steps: int | None) -> dict:
    from poseanything.engine.render import ModelChoice, RenderSettings, render_shot_folder

    model = ModelChoice(threads=1)
    report = render_shot_folder(shot, shot.parent / "take.mp4", RenderSettings(steps=steps), model)
    return {"num_frames": report["num_frames"], "windows": len(report["windows"])}


def measure(stage: str, frames: int, shot: Path, steps: int | None) -> dict:
    """Run one stage in a fresh interpreter and return its figures."""
    command = [sys.executable, __file__, "--child", stage, "--frames", str(frames)]
    command += ["--shot", str(shot)] + ([] if steps is None else ["--steps", str(steps)])
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{stage} of {frames} frames failed:\n{done.stdout}\n{done.stderr}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["seconds"] = time.perf_counter() - began
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs=2, default=(240, 1440))
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    parser.add_argument("--child", choices=("export", "render"), help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--shot", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "export":
        figures = export_child(args.frames, args.shot)
    elif args.child == "render":
        figures = render_child(args.shot, args.steps)
    if args.child is not None:
        print(json.dumps({**figures, "peak_gb": peak_rss_gb()}))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="poseanything-long-shot-") as temporary:
        for frames in args.lengths:
            shot = Path(temporary) / f"shot{frames}" / "shot"
            shot.parent.mkdir()
            for stage in ("export", "render"):
                figures = measure(stage, frames, shot, args.steps)
                rows.append((stage, frames, figures))
                print(
                    f"{stage:6} {frames:5d} frames: peak RSS {figures['peak_gb']:.2f} GB "
                    f"({figures['seconds']:.0f} s)",
                    flush=True,
                )
    short, long = args.lengths
    for stage in ("export", "render"):
        peaks = {frames: f["peak_gb"] for s, frames, f in rows if s == stage}
        growth = (peaks[long] - peaks[short]) * 1e6 / (long - short)  # GB -> kB
        verdict = "ok" if peaks[long] < GOAL_GB else f"over the {GOAL_GB} GB goal"
        print(
            f"{stage}: {peaks[short]:.2f} GB at {short} frames, {peaks[long]:.2f} GB at {long} "
            f"frames, {growth:.0f} kB per extra frame ({verdict})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
