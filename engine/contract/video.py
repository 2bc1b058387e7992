"""Write generated frames as an H.264 mp4 and as PNG frames, never leaving a half-written file.

Everything is written under a temporary sibling name and moved into place at the end, so a cancel
or a crash leaves the user's previous take intact; an existing output is only replaced when the
caller says so (``overwrite=True``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import BadInput
from .files import move_into_place, temporary_sibling


class OutputExistsError(BadInput, FileExistsError):
    """The output already exists and overwriting was not asked for."""


def check_output_free(path: str | Path, overwrite: bool) -> None:
    """Fail before any work when ``path`` exists and may not be replaced."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; choose another output name or pass --overwrite to replace it"
        )


def even_frames(frames: np.ndarray) -> np.ndarray:
    """Pad odd widths/heights by one replicated pixel: yuv420p needs even sizes."""
    _, height, width, _ = frames.shape
    pad_h, pad_w = height % 2, width % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (F,H,W,3), got {frames.dtype} {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError("frames: no frames to write")


def _finish(temp: Path, path: Path, overwrite: bool) -> None:
    """Move ``temp`` to ``path``; without overwrite, a file that appeared meanwhile is kept."""
    if overwrite:
        if path.is_dir() and not temp.is_dir():
            raise OutputExistsError(f"{path} is a folder; choose a file name for the output")
        if temp.is_dir() and path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            temp.rename(path)
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
            return
        os.replace(temp, path)
        return
    if temp.is_dir():
        check_output_free(path, overwrite=False)
        temp.rename(path)
        return
    try:
        move_into_place(temp, path, overwrite=False)
    except FileExistsError as error:
        raise OutputExistsError(
            f"{path} already exists; choose another output name or pass --overwrite to replace it"
        ) from error


def write_video(
    path: str | Path, frames: np.ndarray, fps: float, overwrite: bool = False, quality: int = 8
) -> Path:
    """Encode ``frames`` (F,H,W,3) uint8 as H.264/yuv420p at ``fps`` into ``path`` atomically."""
    import imageio.v2 as imageio

    path = Path(path)
    _check_frames(frames)
    check_output_free(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_sibling(path, suffix=f".partial{path.suffix or '.mp4'}")
    try:
        writer = imageio.get_writer(
            temp,
            format="FFMPEG",
            fps=float(fps),
            codec="libx264",
            pixelformat="yuv420p",
            quality=quality,
            macro_block_size=1,
        )
        try:
            for frame in even_frames(frames):
                writer.append_data(frame)
        finally:
            writer.close()
        _finish(temp, path, overwrite)
    finally:
        temp.unlink(missing_ok=True)
    return path


def write_frames(folder: str | Path, frames: np.ndarray, overwrite: bool = False) -> Path:
    """Write ``frames`` as ``folder/0001.png ...`` (1-based, as the shot's poses/) atomically."""
    import imageio.v2 as imageio

    folder = Path(folder)
    _check_frames(frames)
    check_output_free(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        for index, frame in enumerate(frames, start=1):
            imageio.imwrite(temp / f"{index:04d}.png", frame)
        _finish(temp, folder, overwrite)
    finally:
        if temp.exists():
            shutil.rmtree(temp)
    return folder


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode a video into (F,H,W,3) uint8 frames and its fps (for tests and evaluation)."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(Path(path), format="FFMPEG")
    try:
        fps = float(reader.get_meta_data()["fps"])
        frames = np.stack([np.asarray(frame) for frame in reader])
    finally:
        reader.close()
    return frames, fps
