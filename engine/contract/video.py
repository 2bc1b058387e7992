"""Write generated frames as an H.264 mp4 and as PNG frames, never leaving a half-written file.

Everything is written under a temporary sibling name and moved into place at the end, so a cancel
or a crash leaves the user's previous take intact; an existing output is only replaced when the
caller says so (``overwrite=True``). A temporary name carries its writer's process id: one
killed outright (SIGKILL) cannot tidy up, so the next writer of the same output removes what a
dead process left (``files.clean_partials``). The ffmpeg that encodes dies with the process that
started it (Linux): an orphan would otherwise finish the partial file after a SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import BadInput
from .files import (
    move_into_place,
    partial_prefix,
    partial_suffix,
    temporary_sibling,
    temporary_sibling_folder,
)

H264_CRF = 10
"""x264 quality (0 best .. 51 worst): what imageio's quality 8 of 10 meant."""
PR_SET_PDEATHSIG = 1


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
            old = path.with_name(f"{partial_prefix(path)}old{partial_suffix()}")
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


def _die_with_parent(parent: int) -> None:
    """In the encoder's child process, before ffmpeg runs: SIGKILL it when the thread that
    started it dies, and leave the terminal's process group (Ctrl-C is the parent's to answer,
    between two sampling steps, not ffmpeg's halfway through a file)."""
    import ctypes
    import signal

    os.setpgrp()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _start_encoder(path: Path, width: int, height: int, fps: float) -> subprocess.Popen:
    """ffmpeg (imageio-ffmpeg's binary) reading raw RGB frames on stdin, writing H.264 to
    ``path``."""
    import imageio_ffmpeg

    rate = Fraction(fps).limit_denominator(100_000)
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(rate),
        "-i", "-", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(H264_CRF),
        "-f", "mp4", str(path),
    ]  # fmt: skip
    parent = os.getpid()
    linux = sys.platform.startswith("linux")
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=(lambda: _die_with_parent(parent)) if linux else None,
    )


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
    """An H.264/yuv420p mp4 at ``fps``, written frame by frame into ``path`` atomically; ffmpeg
    starts with the first frames (they give the size)."""

    def __init__(self, path: str | Path, fps: float, overwrite: bool = False) -> None:
        super().__init__(path, overwrite)
        self.fps = float(fps)
        self._encoder: subprocess.Popen | None = None

    def _open(self) -> None:
        self._temp = temporary_sibling(self.path, extension=self.path.suffix or ".mp4")

    def _write(self, frames: np.ndarray) -> None:
        frames = even_frames(frames)
        if self._encoder is None:
            _, height, width, _ = frames.shape
            self._encoder = _start_encoder(self._temp, width, height, self.fps)
        try:
            self._encoder.stdin.write(np.ascontiguousarray(frames).tobytes())
        except BrokenPipeError:
            self._close()  # ffmpeg stopped early: its exit code and message say why

    def _close(self) -> None:
        encoder, self._encoder = self._encoder, None
        if encoder is None:
            return
        try:
            encoder.stdin.close()
        except BrokenPipeError:
            pass
        errors = encoder.stderr.read().decode(errors="replace").strip()
        if encoder.wait() != 0:
            raise OSError(f"ffmpeg could not write {self.path.name}: {errors}")

    def _remove_temp(self) -> None:
        self._temp.unlink(missing_ok=True)


class FramesWriter(_StreamedOutput):
    """Frames as ``folder/0001.png ...`` (1-based, as the shot's poses/), written one by one
    into a temporary folder that becomes ``folder`` atomically."""

    def _open(self) -> None:
        self._temp = temporary_sibling_folder(self.path)

    def _write(self, frames: np.ndarray) -> None:
        import imageio.v2 as imageio

        for index, frame in enumerate(frames, start=self.count + 1):
            imageio.imwrite(self._temp / f"{index:04d}.png", frame)

    def _close(self) -> None:
        pass

    def _remove_temp(self) -> None:
        if self._temp.exists():
            shutil.rmtree(self._temp)


def write_video(path: str | Path, frames: np.ndarray, fps: float, overwrite: bool = False) -> Path:
    """Encode ``frames`` (F,H,W,3) uint8 as H.264/yuv420p at ``fps`` into ``path`` atomically."""
    _check_frames(frames)
    with VideoWriter(path, fps, overwrite) as video:
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
