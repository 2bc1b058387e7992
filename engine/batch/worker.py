"""Rendering one shot of a batch (worker side: this process, or a Ray worker).

Bad input comes back as a failed result, since a retry cannot fix it; any other error raises, so
the caller (or Ray) retries it. A shot sent as bytes (no shared storage) renders in a temporary
folder and its outputs go back as bytes for the driver to put in place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..contract.files import write_bytes_atomic, write_json_atomic
from ..errors import BadInput
from ..render import ENGINE_JSON
from .plan import DONE_MARKER, VIDEO_NAME, RenderTask, ShotResult

if TYPE_CHECKING:
    from ..inference.cancel import CancelToken

EVENT_INTERVAL_S = 0.25
"""Workers send at most this many progress events a second per shot (each is a remote call)."""

EventFn = Callable[[dict], None]


class ProgressEvents:
    """Turns the renderer's progress into batch events, at most every ``EVENT_INTERVAL_S``."""

    def __init__(self, shot: str, emit: EventFn) -> None:
        self.shot = shot
        self.emit = emit
        self._last = 0.0

    def __call__(self, progress) -> None:
        now = time.monotonic()
        if progress.step < progress.total and now - self._last < EVENT_INTERVAL_S:
            return
        self._last = now
        self.emit(
            {
                "event": "progress",
                "shot": self.shot,
                "step": progress.step,
                "total": progress.total,
                "window": progress.window,
                "windows": progress.windows,
                "eta_s": round(progress.eta_s, 2),
            }
        )


def write_done_marker(task: RenderTask, seconds: float) -> None:
    marker = {
        "key": task.key,
        "shot": task.shot_dir,
        "video": Path(task.video).name,
        "seconds": round(seconds, 3),
        "host": socket.gethostname(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(Path(task.video).with_name(DONE_MARKER), marker)


def render_task(
    task: RenderTask,
    emit: EventFn,
    cancel: CancelToken | None = None,
    marker: bool = True,
    shot: str | None = None,
) -> ShotResult:
    """Render one shot and (unless ``marker`` is off) mark it done.

    Bad input comes back as a failed result (a retry cannot fix it); any other error raises, so
    the caller (or Ray) retries it. ``Cancelled`` raises too. ``shot`` names the shot in events
    and the result when ``task`` is a temporary copy (default: ``task.shot_dir``).
    """
    from ..render import render_shot_folder

    shot = shot or task.shot_dir
    emit({"event": "start", "shot": shot, "pid": os.getpid(), "host": socket.gethostname()})
    if cancel is not None:
        cancel.check()
    started = time.perf_counter()
    try:
        render_shot_folder(
            task.shot_dir,
            task.video,
            task.settings.render,
            task.settings.model,
            overwrite=task.settings.overwrite,
            on_progress=ProgressEvents(shot, emit),
            cancel=cancel,
        )
    except BadInput as error:
        return ShotResult(shot, "failed", time.perf_counter() - started, error=str(error))
    seconds = time.perf_counter() - started
    if marker:
        write_done_marker(task, seconds)
    return ShotResult(shot, "done", seconds, task.video)


def render_task_from_bytes(
    task: RenderTask, emit: EventFn, cancel: CancelToken | None = None
) -> tuple[ShotResult, dict[str, bytes] | None]:
    """Render a shot sent as bytes in a temporary folder; the outputs come back as bytes.

    For workers that cannot see the driver's files; the driver puts the outputs in place.
    """
    name = Path(task.shot_dir).name
    with tempfile.TemporaryDirectory(prefix="poseanything-batch-") as work:
        shot_dir = Path(work) / "shot" / name
        for relative, data in task.shot_files.items():
            (shot_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (shot_dir / relative).write_bytes(data)
        video = Path(work) / "out" / VIDEO_NAME
        local = dataclasses.replace(task, shot_dir=str(shot_dir), video=str(video), shot_files=None)
        result = render_task(local, emit, cancel, marker=False, shot=task.shot_dir)
        if result.status != "done":
            result.error = result.error.replace(str(shot_dir), task.shot_dir)
            return result, None
        report = json.loads((video.parent / ENGINE_JSON).read_text(encoding="utf-8"))
        report["shot"] = task.shot_dir
        files = {VIDEO_NAME: video.read_bytes(), ENGINE_JSON: json.dumps(report, indent=2).encode()}
    result.output = task.video
    return result, files


def ray_render_task(task: RenderTask, channel) -> tuple[ShotResult, dict[str, bytes] | None]:
    """The Ray task: render with events put on the batch's channel, which also tells when the
    batch was cancelled; outputs come back as bytes only when the shot came as bytes."""
    import ray

    from ..inference.cancel import Cancelled, CancelToken

    cancel = CancelToken()

    def emit(event: dict) -> None:
        if ray.get(channel.put.remote(event)):
            cancel.cancel()

    try:
        if task.shot_files is None:
            return render_task(task, emit, cancel), None
        return render_task_from_bytes(task, emit, cancel)
    except Cancelled:
        return ShotResult(task.shot_dir, "cancelled"), None


def deliver_outputs(task: RenderTask, result: ShotResult, files: dict[str, bytes]) -> ShotResult:
    """Put a remote render's outputs in place: the video, engine.json, then the done marker."""
    folder = Path(task.video).parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        write_bytes_atomic(folder / VIDEO_NAME, files[VIDEO_NAME], task.settings.overwrite)
    except FileExistsError:
        message = f"{task.video} appeared during the render; pass --overwrite to replace it"
        return ShotResult(task.shot_dir, "failed", result.seconds, error=message)
    write_bytes_atomic(folder / ENGINE_JSON, files[ENGINE_JSON], overwrite=True)
    write_done_marker(task, result.seconds)
    return result
