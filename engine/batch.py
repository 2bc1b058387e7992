"""``poseanything batch``: render many shot folders, once each, in this process or on a Ray cluster.

Ray is the scheduler (no home-made one): one task a shot, placed where its resources
(``--gpus-per-shot``, ``--cpus-per-shot``) are free; a task whose worker died or that raised is
re-run up to ``--retries`` times; Ctrl-C cancels the outstanding tasks. Ray is an optional extra:
the default, in-process mode renders the shots one after another and needs no Ray.

Shot folders travel as **paths on shared storage**: every worker must see a shot folder (and
``--out-dir``) under the same path as the driver, as on one machine or with NFS/SMB mounted at
the same place on every node. Videos then go straight to their final place and never pass through
Ray's object store, which would hold every video in memory on the driver's node.

**Resume**: a finished shot has a marker, ``batch-done.json``, beside its video, written
atomically after the video and ``engine.json``. It holds a key: a hash of the shot folder's
contract files, the render settings and the model's files. A re-run skips a shot whose marker
holds the same key; an interrupted shot has no marker and renders again; a changed shot or setting
renders again, replacing the old video only with ``--overwrite`` (the user's take is never lost
silently).

**Failures**: a bad shot folder (missing files, wrong schema, NaNs, too small) fails at once,
since a retry cannot fix it; any other error, or a worker process that died, is retried; then the
shot is reported failed and the others go on. The summary table (shot, status, seconds, output)
is printed and written as JSON to ``--summary`` (default ``batch.json`` in ``--out-dir``, else in
the current folder).

**Events** (``run_batch(on_event=...)``, and one JSON object a line with ``--progress json`` for
the add-on): ``start`` (shot, attempt, worker pid and host), ``progress`` (shot, step, total,
window, windows, eta_s), then one of ``done``/``skipped``/``failed``/``cancelled`` a shot
(seconds, output, attempts, error), and last ``summary`` (the JSON written to ``--summary``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pipeline import RenderSettings
    from .sampling import CancelToken

VIDEO_NAME = "video.mp4"
DONE_MARKER = "batch-done.json"
SUMMARY_NAME = "batch.json"
CONTRACT_FILES = ("shot.json", "poses.npz", "reference.png")
POSES_DIR = "poses"
KEY_VERSION = 1
"""Bump when the meaning of a rendered video changes for the same inputs (forces re-renders)."""
EVENT_INTERVAL_S = 0.25
"""Workers send at most this many progress events a second per shot (each is a remote call)."""
POLL_S = 0.2
CANCEL_GRACE_S = 30.0
"""How long cancelled tasks get to stop and remove their temporary files."""
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130
STATUSES = ("done", "skipped", "failed", "cancelled")

EventFn = Callable[[dict], None]


class BatchError(ValueError):
    """The batch as a whole cannot run (bad options, Ray missing, clashing outputs)."""


@dataclass(frozen=True)
class BatchSettings:
    """Everything that decides where and how the shots render; copied once from the CLI or UI."""

    render: RenderSettings | None = None
    """Per-render choices (None = the defaults); part of the resume key."""
    model: str | None = None
    """Model folder (None = ``$POSEANYTHING_MODEL`` or the bundled default)."""
    device: str = "auto"
    out_dir: Path | None = None
    """Videos go to ``out_dir/<shot folder name>/video.mp4`` instead of into the shot folders."""
    overwrite: bool = False
    retries: int = 2
    ray: str | None = None
    """None: in this process, one shot after another. "auto" (the running cluster), "local" (a
    throwaway one-machine cluster on loopback) or a cluster address (``ray://head:10001``)."""
    gpus_per_shot: float = 0.0
    cpus_per_shot: float = 1.0


@dataclass(frozen=True)
class ShotJob:
    """One shot to render: what a worker needs, all of it paths and plain values."""

    shot_dir: str
    video: str
    key: str
    render: RenderSettings
    model: str | None
    device: str
    overwrite: bool


@dataclass
class ShotResult:
    shot: str
    status: str
    """One of ``STATUSES``."""
    seconds: float = 0.0
    output: str = ""
    attempts: int = 0
    error: str = ""


@dataclass
class BatchSummary:
    results: list[ShotResult]
    wall_s: float
    ray: str | None
    cancelled: bool = False

    def counts(self) -> dict[str, int]:
        return {status: sum(r.status == status for r in self.results) for status in STATUSES}

    def to_dict(self) -> dict:
        return {
            "wall_s": round(self.wall_s, 3),
            "ray": self.ray,
            "cancelled": self.cancelled,
            "counts": self.counts(),
            "shots": [
                {**dataclasses.asdict(result), "seconds": round(result.seconds, 3)}
                for result in self.results
            ],
        }

    def table(self) -> str:
        """The summary as aligned text columns: shot, status, seconds, attempts, output/error."""
        rows = [("shot", "status", "seconds", "attempts", "output")]
        for r in self.results:
            rows.append(
                (r.shot, r.status, f"{r.seconds:.1f}", str(r.attempts), r.output or r.error)
            )
        widths = [max(len(row[column]) for row in rows) for column in range(4)]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths + [0], strict=True))
            for row in rows
        ]
        counts = ", ".join(f"{n} {status}" for status, n in self.counts().items() if n)
        lines.append(f"{len(self.results)} shots in {self.wall_s:.1f} s: {counts}")
        return "\n".join(lines)

    @property
    def exit_code(self) -> int:
        if self.cancelled:
            return EXIT_CANCELLED
        return EXIT_FAILED if any(r.status == "failed" for r in self.results) else EXIT_OK


# ---------------------------------------------------------------------------------------------
# Planning and the resume key (driver side)


def video_path(shot_dir: Path, out_dir: Path | None) -> Path:
    """Where a shot's video goes: into the shot folder, or ``out_dir/<shot folder name>/``."""
    folder = shot_dir if out_dir is None else out_dir / shot_dir.name
    return folder / VIDEO_NAME


def contract_files(shot_dir: Path) -> list[Path]:
    """The files that define a shot (not videos or anything else kept in its folder)."""
    poses = sorted((shot_dir / POSES_DIR).glob("*.png")) if (shot_dir / POSES_DIR).is_dir() else []
    return [shot_dir / name for name in CONTRACT_FILES] + poses


def shot_key(shot_dir: Path, render: RenderSettings, model_dir: Path) -> str:
    """Hash of the shot's contract files, the render settings and the model files.

    The model enters by file name, size and modification time (hashing multi-GB weights for every
    shot would cost more than it saves); a touched model file re-renders, never wrongly skips.
    """
    digest = hashlib.sha256()
    settings = {"key_version": KEY_VERSION, "render": dataclasses.asdict(render)}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for path in contract_files(shot_dir):
        digest.update(str(path.relative_to(shot_dir)).encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    for path in sorted(model_dir.rglob("*")):
        if path.is_file():
            stat = path.stat()
            name = path.relative_to(model_dir)
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def read_done_key(video: Path) -> str | None:
    """The key in the done marker beside ``video``, if the video and a readable marker exist."""
    marker = video.with_name(DONE_MARKER)
    if not (video.is_file() and marker.is_file()):
        return None
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError):
        return None


def plan_batch(
    shot_dirs: Sequence[str | Path], settings: BatchSettings
) -> tuple[list[ShotJob], list[ShotResult]]:
    """Jobs to render, and the shots skipped because their marker holds the same key."""
    from .pipeline import RenderSettings
    from .weights import resolve_model_dir

    render = settings.render or RenderSettings()
    model_dir = resolve_model_dir(settings.model)
    folders = [Path(folder).expanduser().resolve() for folder in shot_dirs]
    if not folders:
        raise BatchError("no shot folders given; pass one or more SHOT_DIR")
    out_dir = None if settings.out_dir is None else Path(settings.out_dir).expanduser().resolve()
    videos = [video_path(folder, out_dir) for folder in folders]
    clashes = sorted({str(v) for v in videos if videos.count(v) > 1})
    if clashes:
        raise BatchError(
            f"two shots would write the same video ({', '.join(clashes)}): shot folders given "
            "twice, or with the same name under --out-dir; rename one or drop --out-dir"
        )
    jobs, skipped = [], []
    for folder, video in zip(folders, videos, strict=True):
        key = shot_key(folder, render, model_dir)
        if read_done_key(video) == key:
            skipped.append(ShotResult(str(folder), "skipped", output=str(video)))
            continue
        jobs.append(
            ShotJob(
                str(folder),
                str(video),
                key,
                render,
                settings.model,
                settings.device,
                settings.overwrite,
            )
        )
    return jobs, skipped


# ---------------------------------------------------------------------------------------------
# Rendering one shot (worker side: this process, or a Ray worker)


class _RenderEvents:
    """Turns the renderer's progress into batch events, at most every ``EVENT_INTERVAL_S``."""

    def __init__(self, shot: str, emit: EventFn) -> None:
        self.shot = shot
        self.emit = emit
        self._last = 0.0

    def event(self, name: str, **fields) -> None:
        """Renderer lifecycle events (start/done) carry nothing the batch needs."""

    def progress(self, progress) -> None:
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


def _render_video(job: ShotJob, events: _RenderEvents, cancel: CancelToken | None) -> None:
    """Render the shot to its video and engine.json with the ``render`` command's own code."""
    from .cli import render

    args = argparse.Namespace(
        shot_dir=Path(job.shot_dir),
        out=Path(job.video),
        frames_dir=None,
        overwrite=job.overwrite,
        steps=job.render.steps,
        guidance=job.render.subject_guidance,
        camera_guidance=job.render.camera_guidance,
        camera_anchor=job.render.camera_anchor,
        seed=job.render.seed,
        no_ptcm=not job.render.ptcm,
        native_size=not job.render.upscale,
        model=None if job.model is None else Path(job.model),
        device=job.device,
    )
    Path(job.video).parent.mkdir(parents=True, exist_ok=True)
    render(args, events, cancel)


def write_done_marker(job: ShotJob, seconds: float) -> None:
    from .cli import write_json_atomic

    marker = {
        "key": job.key,
        "shot": job.shot_dir,
        "video": Path(job.video).name,
        "seconds": round(seconds, 3),
        "host": socket.gethostname(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(Path(job.video).with_name(DONE_MARKER), marker)


def render_job(job: ShotJob, emit: EventFn, cancel: CancelToken | None = None) -> ShotResult:
    """Render one shot and mark it done.

    Bad input comes back as a failed result (a retry cannot fix it); any other error raises, so
    the caller (or Ray) retries it. ``Cancelled`` raises too.
    """
    from .shot import ShotError
    from .video import OutputExistsError
    from .weights import ModelNotFoundError

    emit({"event": "start", "shot": job.shot_dir, "pid": os.getpid(), "host": socket.gethostname()})
    started = time.perf_counter()
    try:
        _render_video(job, _RenderEvents(job.shot_dir, emit), cancel)
    except (ShotError, ModelNotFoundError, OutputExistsError, ValueError) as error:
        return ShotResult(job.shot_dir, "failed", time.perf_counter() - started, error=str(error))
    seconds = time.perf_counter() - started
    write_done_marker(job, seconds)
    return ShotResult(job.shot_dir, "done", seconds, job.video)


def _ray_render_task(job: ShotJob, queue) -> ShotResult:
    """The Ray task: ``render_job`` with its events put on the driver's queue."""
    return render_job(job, queue.put)


# ---------------------------------------------------------------------------------------------
# Running the batch (driver side)


class _Attempts:
    """Counts attempts per shot from the workers' start events and forwards every event."""

    def __init__(self, on_event: EventFn | None) -> None:
        self.on_event = on_event
        self.counts: dict[str, int] = {}

    def __call__(self, event: dict) -> None:
        if event["event"] == "start":
            self.counts[event["shot"]] = self.counts.get(event["shot"], 0) + 1
            event = {**event, "attempt": self.counts[event["shot"]]}
        if self.on_event is not None:
            self.on_event(event)

    def finish(self, result: ShotResult) -> ShotResult:
        result.attempts = self.counts.get(result.shot, 0)
        self(
            {
                "event": result.status,
                "shot": result.shot,
                "seconds": round(result.seconds, 3),
                "output": result.output,
                "attempts": result.attempts,
                "error": result.error,
            }
        )
        return result


def _run_local(
    jobs: list[ShotJob], retries: int, attempts: _Attempts, cancel: CancelToken
) -> list[ShotResult]:
    """One shot after another in this process; errors other than bad input retried."""
    from .sampling import Cancelled

    results = []
    for job in jobs:
        failures = 0
        while True:
            if cancel.cancelled:
                result = ShotResult(job.shot_dir, "cancelled")
                break
            started = time.perf_counter()
            try:
                result = render_job(job, attempts, cancel)
                break
            except (Cancelled, KeyboardInterrupt):
                cancel.cancel()
            except Exception as error:
                failures += 1
                if failures > retries:
                    seconds = time.perf_counter() - started
                    message = f"{type(error).__name__}: {error}"
                    result = ShotResult(job.shot_dir, "failed", seconds, error=message)
                    break
        results.append(attempts.finish(result))
    return results


def connect_ray(address: str) -> bool:
    """Connect to Ray unless this process already is; True when this call started it."""
    try:
        import ray
    except ImportError as error:
        raise BatchError(
            "--ray needs Ray, an optional extra: pip install 'poseanything[ray]' "
            "(or 'ray[default]'), or leave out --ray to render in this process"
        ) from error
    if ray.is_initialized():
        return False
    if address == "local":
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1")
        return True
    try:
        ray.init(address=address)
    except ConnectionError as error:
        raise BatchError(
            f"--ray {address}: no Ray cluster answered ({error}); start one with `ray start "
            "--head` on the head node, give its address, or use --ray local on this machine"
        ) from error
    return True


def _ray_error_message(error: Exception) -> str:
    import ray.exceptions

    if isinstance(error, ray.exceptions.RayTaskError):
        cause = error.cause
        return f"{type(cause).__name__}: {cause}"
    if isinstance(error, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError):
        return "the worker process died (killed, out of host memory, or a crash) on every attempt"
    return f"{type(error).__name__}: {error}"


def _run_ray(
    jobs: list[ShotJob], settings: BatchSettings, attempts: _Attempts, cancel: CancelToken
) -> list[ShotResult]:
    """One Ray task a shot; progress events come back through a Ray queue actor."""
    import ray
    from ray.util.queue import Queue

    queue = Queue(actor_options={"num_cpus": 0})
    task = ray.remote(_ray_render_task).options(
        num_cpus=settings.cpus_per_shot,
        num_gpus=settings.gpus_per_shot,
        max_retries=settings.retries,
        retry_exceptions=True,
    )
    submitted = {task.remote(job, queue): job for job in jobs}
    started = time.perf_counter()
    results: dict[str, ShotResult] = {}

    def drain() -> None:
        count = queue.size()
        for event in queue.get_nowait_batch(count) if count else []:
            attempts(event)

    def collect(ref) -> None:
        job = submitted[ref]
        try:
            result = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            result = ShotResult(job.shot_dir, "cancelled")
        except ray.exceptions.RayError as error:
            seconds = time.perf_counter() - started
            result = ShotResult(job.shot_dir, "failed", seconds, error=_ray_error_message(error))
        results[job.shot_dir] = attempts.finish(result)

    pending = list(submitted)
    try:
        while pending:
            if cancel.cancelled:
                raise KeyboardInterrupt
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            drain()
            for ref in ready:
                collect(ref)
    except KeyboardInterrupt:
        cancel.cancel()
        for ref in pending:
            ray.cancel(ref)
        ray.wait(pending, num_returns=len(pending), timeout=CANCEL_GRACE_S)
        drain()
        for ref in pending:
            collect(ref)
    finally:
        queue.shutdown()
    return [results[job.shot_dir] for job in jobs]


def run_batch(
    shot_dirs: Sequence[str | Path],
    settings: BatchSettings,
    on_event: EventFn | None = None,
    cancel: CancelToken | None = None,
) -> BatchSummary:
    """Render every shot folder not already done; a failing shot never stops the others.

    ``on_event(dict)`` sees every event (``start`` with the worker's pid, ``progress``, and
    ``done``/``skipped``/``failed``/``cancelled`` a shot); ``cancel`` stops the batch: the shot in
    progress stops at its next sampling step, outstanding Ray tasks are cancelled, finished
    videos stay.
    """
    from .sampling import CancelToken

    cancel = cancel or CancelToken()
    started = time.perf_counter()
    jobs, skipped = plan_batch(shot_dirs, settings)
    attempts = _Attempts(on_event)
    for result in skipped:
        attempts.finish(result)
    if settings.ray is None or not jobs:
        rendered = _run_local(jobs, settings.retries, attempts, cancel)
    else:
        started_ray = connect_ray(settings.ray)
        try:
            rendered = _run_ray(jobs, settings, attempts, cancel)
        finally:
            if started_ray:
                import ray

                ray.shutdown()
    by_shot = {result.shot: result for result in skipped + rendered}
    order = [str(Path(folder).expanduser().resolve()) for folder in shot_dirs]
    return BatchSummary(
        [by_shot[shot] for shot in order],
        time.perf_counter() - started,
        settings.ray,
        cancel.cancelled,
    )


# ---------------------------------------------------------------------------------------------
# Command line


class BatchProgress:
    """A bar over shots on stderr with the latest shot's step, or JSON lines on stdout."""

    def __init__(self, mode: str, total: int) -> None:
        self.mode = mode
        self.total = total
        self.finished = 0
        self.line = ""

    def __call__(self, event: dict) -> None:
        if self.mode == "json":
            print(json.dumps(event), flush=True)
            return
        if event["event"] in STATUSES:
            self.finished += 1
        if self.mode != "bar":
            return
        name = Path(event["shot"]).name
        if event["event"] == "progress":
            self.line = f"{name} step {event['step']}/{event['total']} eta {event['eta_s']:.0f}s"
        elif event["event"] == "start" and event.get("attempt", 1) > 1:
            self.line = f"{name} attempt {event['attempt']}"
        elif event["event"] in ("failed", "cancelled"):
            self.line = f"{name} {event['event']}"
        width = 24
        filled = round(width * self.finished / max(1, self.total))
        print(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.finished}/{self.total} shots  "
            f"{self.line:<50}",
            end="",
            file=sys.stderr,
            flush=True,
        )


def add_batch_command(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``batch`` to the ``poseanything`` command's subparsers."""
    batch = commands.add_parser(
        "batch",
        help="render many shot folders, here or on a Ray cluster",
        description="Render each shot folder once, in this process or as Ray tasks; finished "
        "shots are skipped on a re-run, failing ones retried, then reported.",
    )
    batch.add_argument("shot_dirs", type=Path, nargs="+", metavar="SHOT_DIR")
    batch.add_argument(
        "--ray",
        metavar="auto|local|ADDRESS",
        help="render as Ray tasks: auto = the running cluster (after `ray start`), local = a "
        "one-machine cluster on loopback, or an address like ray://head:10001 "
        "(default: in this process, one shot after another)",
    )
    batch.add_argument(
        "--gpus-per-shot", type=float, default=0.0, metavar="N", help="Ray GPUs a task holds"
    )
    batch.add_argument(
        "--cpus-per-shot", type=float, default=1.0, metavar="N", help="Ray CPUs a task holds"
    )
    batch.add_argument(
        "--retries", type=int, default=2, metavar="N", help="re-runs of a failing shot (default 2)"
    )
    batch.add_argument(
        "--out-dir",
        type=Path,
        help="write OUT_DIR/<shot folder name>/video.mp4 instead of into the shot folders",
    )
    batch.add_argument(
        "--summary", type=Path, help="summary JSON (default: batch.json in --out-dir, else here)"
    )
    batch.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    render = batch.add_argument_group("render options (as for `poseanything render`)")
    render.add_argument("--steps", type=int)
    render.add_argument("--guidance", type=float)
    render.add_argument("--camera-guidance", type=float)
    render.add_argument("--camera-anchor", choices=("rectangle", "static"), default="rectangle")
    render.add_argument("--seed", type=int)
    render.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    render.add_argument("--no-ptcm", action="store_true")
    render.add_argument("--model", type=Path)
    render.add_argument("--native-size", action="store_true")
    render.add_argument("--overwrite", action="store_true")
    batch.set_defaults(handler=batch_command)
    return batch


def settings_from_args(args: argparse.Namespace) -> BatchSettings:
    from .pipeline import RenderSettings

    if args.retries < 0:
        raise BatchError(f"--retries is {args.retries}; use 0 or more")
    return BatchSettings(
        render=RenderSettings(
            steps=args.steps,
            subject_guidance=args.guidance,
            camera_guidance=args.camera_guidance,
            camera_anchor=args.camera_anchor,
            seed=args.seed,
            ptcm=not args.no_ptcm,
            upscale=not args.native_size,
        ),
        model=None if args.model is None else str(args.model),
        device=args.device,
        out_dir=args.out_dir,
        overwrite=args.overwrite,
        retries=args.retries,
        ray=args.ray,
        gpus_per_shot=args.gpus_per_shot,
        cpus_per_shot=args.cpus_per_shot,
    )


def summary_path(args: argparse.Namespace) -> Path:
    if args.summary is not None:
        return args.summary
    return (args.out_dir or Path.cwd()) / SUMMARY_NAME


def batch_command(args: argparse.Namespace) -> int:
    """Run ``poseanything batch``; Ctrl-C or SIGTERM cancel; returns the exit code."""
    from .cli import write_json_atomic
    from .sampling import CancelToken
    from .weights import ModelNotFoundError

    cancel = CancelToken()
    previous_handlers = {
        signum: signal.signal(signum, lambda signum, frame: cancel.cancel())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    progress = BatchProgress(args.progress, len(args.shot_dirs))
    try:
        summary = run_batch(args.shot_dirs, settings_from_args(args), progress, cancel)
    except (BatchError, ModelNotFoundError) as error:
        print(f"poseanything batch: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    path = summary_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, summary.to_dict())
    if args.progress == "json":
        print(json.dumps({"event": "summary", "path": str(path), **summary.to_dict()}), flush=True)
    else:
        if args.progress == "bar":
            print(file=sys.stderr)
        print(summary.table())
        print(f"summary: {path}")
    return summary.exit_code
