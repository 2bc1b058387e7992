"""Skeleton preview images: the shot's skeleton as the model sees it, optionally by part.

The shot folder already holds the plain skeleton images; the part-coloured ones are drawn here
from the same joints (``Shot.skeleton_frames``), so both come from the engine's one renderer.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..engine.contract.shot import read_shot
from ..engine.contract.skeleton import write_png


def write_skeleton_preview(
    shot_dir: str | Path, out_dir: str | Path, part_colors: bool
) -> list[Path]:
    """Write the shot's skeleton frames as ``out_dir/0001.png`` ...; returns them in order.

    The frames are written to a temporary sibling folder that then replaces ``out_dir``, so a
    strip showing an earlier preview never sees half a set.
    """
    out_dir = Path(out_dir)
    shot = read_shot(shot_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    # Each frame goes to disk as it is drawn: a long shot's frames are never all in memory.
    for index, image in enumerate(shot.skeleton_frames(part_colors=part_colors), start=1):
        write_png(staging / f"{index:04d}.png", image)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return [out_dir / f"{index:04d}.png" for index in range(1, shot.num_frames + 1)]
