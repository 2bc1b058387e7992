"""Write generated frames as an H.264 mp4 and as PNG frames, never leaving a half-written file.

Everything is written under a temporary sibling name and moved into place at the end, so a cancel
or a crash leaves the user's previous take intact; an existing output is only replaced when the
caller says so (``overwrite=True``). A streamed output's temporary name carries its writer's
process id: one killed outright (SIGKILL) cannot tidy up, so the next writer of the same output
removes what a dead process left.
"""

from __future__ import annotations

import os
import re
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


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _partial_suffix(extension: str = "") -> str:
    """How this process's temporary names end (they begin ``.NAME.``, then a random part)."""
    return f".{os.getpid()}.partial{extension}"


def _remove_dead_partials(path: Path) -> None:
    """Remove the temporary files and folders of ``path`` whose writing process is gone."""
    own = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.(?P<pid>[0-9]+)\.partial")
    if not path.parent.is_dir():
        return
    for entry in os.scandir(path.parent):
        match = own.match(entry.name)
        if match is None or _writer_alive(int(match["pid"])):
            continue
        leftover = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


class _StreamedOutput:
    """Frames appended a few at a time under a temporary name (``with`` block): moved into place
    when the block ends without an error, removed when it ends with one. A long render hands its
    frames over as they are finished, so the whole video is never held in memory."""

    def __init__(self, path: str | Path, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.count = 0
        """Frames appended so far."""

    def __enter__(self):
        check_output_free(self.path, self.overwrite)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_partials(self.path)
        self._open()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            self._close()
            if kind is None:
                if self.count == 0:
                    raise ValueError("frames: no frames to write")
                _finish(self._temp, self.path, self.overwrite)
        finally:
            self._remove_temp()

    def append(self, frames: np.ndarray) -> None:
        """Add ``frames`` (F,H,W,3) uint8 after those already appended."""
        _check_frames(frames)
        self._write(frames)
        self.count += len(frames)


class VideoWriter(_StreamedOutput):
    """An H.264/yuv420p mp4 at ``fps``, written frame by frame into ``path`` atomically."""

    def __init__(
        self, path: str | Path, fps: float, overwrite: bool = False, quality: int = 8
    ) -> None:
        super().__init__(path, overwrite)
        self.fps = float(fps)
        self.quality = quality

    def _open(self) -> None:
        import imageio.v2 as imageio

        suffix = _partial_suffix(self.path.suffix or ".mp4")
        self._temp = temporary_sibling(self.path, suffix=suffix)
        self._writer = imageio.get_writer(
            self._temp,
            format="FFMPEG",
            fps=self.fps,
            codec="libx264",
            pixelformat="yuv420p",
            quality=self.quality,
            macro_block_size=1,
        )

    def _write(self, frames: np.ndarray) -> None:
        for frame in even_frames(frames):
            self._writer.append_data(frame)

    def _close(self) -> None:
        self._writer.close()

    def _remove_temp(self) -> None:
        self._temp.unlink(missing_ok=True)


class FramesWriter(_StreamedOutput):
    """Frames as ``folder/0001.png ...`` (1-based, as the shot's poses/), written one by one
    into a temporary folder that becomes ``folder`` atomically."""

    def _open(self) -> None:
        prefix, parent = f".{self.path.name}.", self.path.parent
        self._temp = Path(tempfile.mkdtemp(prefix=prefix, suffix=_partial_suffix(), dir=parent))

    def _write(self, frames: np.ndarray) -> None:
        import imageio.v2 as imageio

        for index, frame in enumerate(frames, start=self.count + 1):
            imageio.imwrite(self._temp / f"{index:04d}.png", frame)

    def _close(self) -> None:
        pass

    def _remove_temp(self) -> None:
        if self._temp.exists():
            shutil.rmtree(self._temp)


def write_video(
    path: str | Path, frames: np.ndarray, fps: float, overwrite: bool = False, quality: int = 8
) -> Path:
    """Encode ``frames`` (F,H,W,3) uint8 as H.264/yuv420p at ``fps`` into ``path`` atomically."""
    _check_frames(frames)
    with VideoWriter(path, fps, overwrite, quality) as video:
        video.append(frames)
    return video.path


def write_frames(folder: str | Path, frames: np.ndarray, overwrite: bool = False) -> Path:
    """Write ``frames`` as ``folder/0001.png ...`` (1-based, as the shot's poses/) atomically."""
    _check_frames(frames)
    with FramesWriter(folder, overwrite) as pngs:
        pngs.append(frames)
    return pngs.path


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
