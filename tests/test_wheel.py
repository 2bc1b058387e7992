"""The wheel users install: ``python -m build`` on the tracked files alone, installed with the
engine extra into a fresh venv, and its ``poseanything render`` run on a shot with the bundled
model (the package data) from outside any checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from synthetic_shots import write_synthetic_shot

from poseanything.engine.contract.video import read_video

REPO_ROOT = Path(__file__).resolve().parent.parent


def tracked_copy(destination: Path) -> Path:
    """The repository's tracked files, as a fresh clone has them (no venvs, no build output)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def test_the_built_wheel_installs_in_a_fresh_venv_and_renders(tmp_path):
    source = tracked_copy(tmp_path / "source")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", source],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("poseanything-*-py3-none-any.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    installed = subprocess.run(
        [venv / "bin/python", "-m", "pip", "install", "-q", f"{wheel}[engine]"],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]

    shot = write_synthetic_shot(tmp_path / "shot", num_frames=5, width=64, height=48)
    out = tmp_path / "take.mp4"
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    located = subprocess.run(
        [venv / "bin/python", "-c", "import poseanything; print(poseanything.__file__)"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(located.stdout.strip()).is_relative_to(venv)
    rendered = subprocess.run(
        [venv / "bin/poseanything", "render", shot, "--out", out, "--progress", "none"],
        cwd=tmp_path, env=environment, capture_output=True, text=True,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    frames, _fps = read_video(out)
    assert frames.shape == (5, 48, 64, 3) and frames.std() > 1.0
