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
from .plan import DONE_MARKER, VIDEO_NAME, ShotJob, ShotResult

if TYPE_CHECKING:
    from ..inference.sampling import CancelToken

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


def write_done_marker(job: ShotJob, seconds: float) -> None:
    marker = {
        "key": job.key,
        "shot": job.shot_dir,
        "video": Path(job.video).name,
        "seconds": round(seconds, 3),
        "host": socket.gethostname(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(Path(job.video).with_name(DONE_MARKER), marker)


def render_job(
    job: ShotJob,
    emit: EventFn,
    cancel: CancelToken | None = None,
    marker: bool = True,
    shot: str | None = None,
) -> ShotResult:
    """Render one shot and (unless ``marker`` is off) mark it done.

    Bad input comes back as a failed result (a retry cannot fix it); any other error raises, so
    the caller (or Ray) retries it. ``Cancelled`` raises too. ``shot`` names the shot in events
    and the result when ``job`` is a temporary copy (default: ``job.shot_dir``).
    """
    from ..render import render_shot_folder

    shot = shot or job.shot_dir
    emit({"event": "start", "shot": shot, "pid": os.getpid(), "host": socket.gethostname()})
    if cancel is not None:
        cancel.check()
    started = time.perf_counter()
    try:
        render_shot_folder(
            job.shot_dir,
            job.video,
            job.settings.render,
            job.settings.model,
            overwrite=job.settings.overwrite,
            on_progress=ProgressEvents(shot, emit),
            cancel=cancel,
        )
    except BadInput as error:
        return ShotResult(shot, "failed", time.perf_counter() - started, error=str(error))
    seconds = time.perf_counter() - started
    if marker:
        write_done_marker(job, seconds)
    return ShotResult(shot, "done", seconds, job.video)


def render_job_from_bytes(
    job: ShotJob, emit: EventFn, cancel: CancelToken | None = None
) -> tuple[ShotResult, dict[str, bytes] | None]:
    """Render a shot sent as bytes in a temporary folder; the outputs come back as bytes.

    For workers that cannot see the driver's files; the driver puts the outputs in place.
    """
    name = Path(job.shot_dir).name
    with tempfile.TemporaryDirectory(prefix="poseanything-batch-") as work:
        shot_dir = Path(work) / "shot" / name
        for relative, data in job.shot_files.items():
            (shot_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (shot_dir / relative).write_bytes(data)
        video = Path(work) / "out" / VIDEO_NAME
        local = dataclasses.replace(job, shot_dir=str(shot_dir), video=str(video), shot_files=None)
        result = render_job(local, emit, cancel, marker=False, shot=job.shot_dir)
        if result.status != "done":
            result.error = result.error.replace(str(shot_dir), job.shot_dir)
            return result, None
        report = json.loads((video.parent / ENGINE_JSON).read_text(encoding="utf-8"))
        report["shot"] = job.shot_dir
        files = {VIDEO_NAME: video.read_bytes(), ENGINE_JSON: json.dumps(report, indent=2).encode()}
    result.output = job.video
    return result, files


def ray_render_task(job: ShotJob, channel) -> tuple[ShotResult, dict[str, bytes] | None]:
    """The Ray task: render with events put on the batch's channel, which also tells when the
    batch was cancelled; outputs come back as bytes only when the shot came as bytes."""
    import ray

    from ..inference.sampling import Cancelled, CancelToken

    cancel = CancelToken()

    def emit(event: dict) -> None:
        if ray.get(channel.put.remote(event)):
            cancel.cancel()

    try:
        if job.shot_files is None:
            return render_job(job, emit, cancel), None
        return render_job_from_bytes(job, emit, cancel)
    except Cancelled:
        return ShotResult(job.shot_dir, "cancelled"), None


def deliver_outputs(job: ShotJob, result: ShotResult, files: dict[str, bytes]) -> ShotResult:
    """Put a remote render's outputs in place: the video, engine.json, then the done marker."""
    folder = Path(job.video).parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        write_bytes_atomic(folder / VIDEO_NAME, files[VIDEO_NAME], job.settings.overwrite)
    except FileExistsError:
        message = f"{job.video} appeared during the render; pass --overwrite to replace it"
        return ShotResult(job.shot_dir, "failed", result.seconds, error=message)
    write_bytes_atomic(folder / ENGINE_JSON, files[ENGINE_JSON], overwrite=True)
    write_done_marker(job, result.seconds)
    return result
