"""Versioned takes: every Generate gets a new numbered folder and video, never an earlier one's.

A take lives in ``<shot folder>/takes/take001/<shot>_take001.mp4`` with the engine's
``engine.json`` (and, after a crash, the engine's log) beside it, so each take keeps its own
settings. The number is one past the highest folder already there; the folder is created with
``mkdir(exist_ok=False)``, so two takes started at once can never share a number.

While it renders, a take holds ``.rendering``, the id of the process that reserved it: a
Blender killed outright cannot tidy up, so the next take of that shot removes a take whose
process is gone. A take without the mark (kept, or made by an older version) is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..engine.contract.files import process_alive

TAKES_DIR = "takes"
RENDERING_MARK = ".rendering"
TAKE_PATTERN = re.compile(r"^take(\d{3,})$")
LOG_NAME = "engine.log"


@dataclass(frozen=True)
class Take:
    """One render of a shot: its own numbered folder, the video it gets, the engine's log."""

    folder: Path
    video: Path
    log: Path
    number: int


def take_numbers(shot_dir: Path) -> list[int]:
    """The numbers of the takes already in ``shot_dir`` (finished, failed or running)."""
    takes = Path(shot_dir) / TAKES_DIR
    if not takes.is_dir():
        return []
    matches = (TAKE_PATTERN.match(entry.name) for entry in takes.iterdir())
    return sorted(int(match.group(1)) for match in matches if match)


def new_take(shot_dir: str | Path, shot_name: str) -> Take:
    """Reserve the next take of ``shot_name``: its folder exists afterwards, marked as rendering
    by this process (``keep_take`` ends that), its video does not."""
    takes = Path(shot_dir) / TAKES_DIR
    takes.mkdir(parents=True, exist_ok=True)
    number = max(take_numbers(shot_dir), default=0) + 1  # past abandoned ones: never reused
    remove_abandoned_takes(shot_dir)
    while True:
        folder = takes / f"take{number:03d}"
        try:
            folder.mkdir()
            break
        except FileExistsError:
            number += 1
    (folder / RENDERING_MARK).write_text(str(os.getpid()), encoding="utf-8")
    return Take(folder, folder / f"{shot_name}_take{number:03d}.mp4", folder / LOG_NAME, number)


def keep_take(take: Take) -> None:
    """The take ended and stays (a video, or a crash's log): no longer one that renders."""
    (take.folder / RENDERING_MARK).unlink(missing_ok=True)


def remove_abandoned_takes(shot_dir: str | Path) -> None:
    """Remove the takes of ``shot_dir`` still marked as rendering by a process that is gone."""
    for number in take_numbers(Path(shot_dir)):
        folder = Path(shot_dir) / TAKES_DIR / f"take{number:03d}"
        try:
            pid = int((folder / RENDERING_MARK).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not rendering, or a mark being written this instant
        if not process_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def discard_take(take: Take) -> None:
    """Remove a take that produced nothing worth keeping (a cancel): no partial files remain."""
    shutil.rmtree(take.folder, ignore_errors=True)


def adopt_staged_take(staged: Path, shot_dir: str | Path, shot_name: str) -> Take:
    """The next take of ``shot_name``, made of a folder the engine rendered elsewhere (a Ray
    batch's staging folder: ``video.mp4`` and ``engine.json``), moved in, not copied. Raises
    ``OSError`` when those files are gone; no take folder is left then."""
    take = new_take(shot_dir, shot_name)
    try:
        os.replace(staged / "video.mp4", take.video)
        os.replace(staged / "engine.json", take.folder / "engine.json")
    except OSError:
        discard_take(take)
        raise
    keep_take(take)
    return take
