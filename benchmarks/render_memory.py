"""Peak memory of ``poseanything render`` (the engine and its ffmpeg together) by shot size,
beside what ``engine.inference.memory`` estimates before it refuses a shot that cannot fit.

The bundled default model renders a 16-frame shot (one window) of the tests' walking figure at
each size; the process tree's resident memory is sampled every 50 ms. The estimate should stay
above every measured peak (a refusal errs on the safe side) and within about 1.5x of it.

Run: ``.venv/bin/python benchmarks/render_memory.py [--sizes 1024 2048 4096]`` (about two
minutes on two cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from synthetic_shots import write_synthetic_shot  # noqa: E402 - the tests' walking figure

from poseanything.engine.inference.memory import video_bytes  # noqa: E402

FRAMES = 16
WINDOW_FRAMES = 16  # the default model's


def tree_rss(root: int) -> dict[str, int]:
    """Resident bytes of ``root`` and its children, by command name (``/proc``)."""
    pids = {root}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == root:
                pids.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    found: dict[str, int] = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        rss = next((int(line.split()[1]) * 1024 for line in status if line[:6] == "VmRSS:"), 0)
        found[name] = found.get(name, 0) + rss
    return found


def peak_render_memory(shot: Path, out: Path) -> tuple[int, dict[str, int]]:
    command = [
        sys.executable, "-m", "poseanything.engine.cli", "render", str(shot), "--out", str(out),
        "--progress", "none", "--threads", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command)
    peak, parts = 0, {}
    while process.poll() is None:
        sample = tree_rss(process.pid)
        if sum(sample.values()) > peak:
            peak, parts = sum(sample.values()), sample
        time.sleep(0.05)
    if process.returncode:
        sys.exit(f"render exited {process.returncode}")
    return peak, parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    args = parser.parse_args()
    print(f"{'size':>11}  {'peak GB':>8}  {'engine':>7}  {'ffmpeg':>7}  {'estimate':>8}  ratio")
    with tempfile.TemporaryDirectory() as folder:
        for side in args.sizes:
            shot = write_synthetic_shot(
                Path(folder) / f"shot{side}", num_frames=FRAMES, width=side, height=side
            )
            peak, parts = peak_render_memory(shot, Path(folder) / f"take{side}.mp4")
            ffmpeg = sum(v for k, v in parts.items() if k.startswith("ffmpeg"))
            estimate = video_bytes(side, side, WINDOW_FRAMES)
            print(
                f"{side:>5}x{side:<5}  {peak / 1e9:8.2f}  {(peak - ffmpeg) / 1e9:7.2f}  "
                f"{ffmpeg / 1e9:7.2f}  {estimate / 1e9:8.2f}  {estimate / peak:5.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
