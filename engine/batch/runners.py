"""``poseanything batch``: render many shot folders, once each, in this process or on a Ray cluster.

Ray is the scheduler (no home-made one): one task a shot, placed where its resources
(``--gpus-per-shot``, ``--cpus-per-shot``) are free; a task whose worker died or that raised is
re-run up to ``--retries`` times. Ray is an optional extra: the default, in-process mode renders
the shots one after another and needs no Ray.

**Cancel** (Ctrl-C, SIGTERM, or the caller's cancel token): a running shot stops at its next
sampling step (workers learn of the cancel from the answer to their progress events), so it never
stops halfway through writing; tasks not started yet are cancelled with ``ray.cancel``. Finished
videos stay; a cancelled shot leaves nothing behind.

Shot folders travel as **paths on shared storage**: every worker must see a shot folder (and
``--out-dir``) under the same path as the driver, as on one machine or with NFS/SMB mounted at
the same place on every node. Videos then go straight to their final place and never pass through
Ray's object store, which would hold every video in memory on the driver's node. Without shared
storage, ``--no-shared-fs`` sends each shot's files to its worker as bytes through the object
store; the worker renders in a temporary folder it removes, and the driver puts the returned video
in place (the model must then be installed on every worker, as the bundled one is).

**Resume**: a finished shot has a marker, ``batch-done.json``, beside its video, written
atomically after the video and ``engine.json``. It holds a key: a hash of the shot folder's
contract files, the render options and the model's files. A re-run skips a shot whose marker
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
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..contract.files import write_bytes_atomic, write_json_atomic
from ..errors import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, BadInput

if TYPE_CHECKING:
    from ..inference.sampling import CancelToken

VIDEO_NAME = "video.mp4"
DONE_MARKER = "batch-done.json"
SUMMARY_NAME = "batch.json"
KEY_VERSION = 1
"""Bump when the meaning of a rendered video changes for the same inputs (forces re-renders)."""
UNKEYED_OPTIONS = frozenset({"device", "threads", "overwrite", "online"})
"""Render options that change how or where a shot renders, not its pixels: not in the key."""
EVENT_INTERVAL_S = 0.25
"""Workers send at most this many progress events a second per shot (each is a remote call)."""
POLL_S = 0.2
CANCEL_GRACE_S = 30.0
"""How long a running task gets to stop at a sampling step, and then to die when killed."""
STATUSES = ("done", "skipped", "failed", "cancelled")

EventFn = Callable[[dict], None]


class BatchError(BadInput):
    """The batch as a whole cannot run (bad options, Ray missing, clashing outputs)."""


@dataclass(frozen=True)
class BatchSettings:
    """Everything that decides where and how the shots render; copied once from the CLI or UI."""

    render_options: dict | None = None
    """``poseanything render`` options by their argparse names (``{"steps": 4, "model": path,
    "overwrite": True}``); the others keep their defaults. Part of the resume key."""
    out_dir: Path | None = None
    """Videos go to ``out_dir/<shot folder name>/video.mp4`` instead of into the shot folders."""
    retries: int = 2
    ray: str | None = None
    """None: in this process, one shot after another. "auto" (the running cluster), "local" (a
    throwaway cluster of this machine alone, node address 127.0.0.1) or a cluster address
    (``ray://head:10001``)."""
    gpus_per_shot: float = 0.0
    cpus_per_shot: float = 1.0
    shared_fs: bool = True
    """False: shot files go to Ray workers, and videos come back, through the object store."""


@dataclass(frozen=True)
class ShotJob:
    """One shot to render: what a worker needs, all of it paths and plain values."""

    shot_dir: str
    video: str
    key: str
    options: dict
    """Every ``render`` option, as ``render_options`` completed with the defaults."""
    shot_files: dict[str, bytes] | None = None
    """The contract files' bytes, when workers cannot see ``shot_dir`` (no shared storage)."""


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


def read_contract(shot_dir: Path) -> dict[str, bytes]:
    """The files that define a shot, by path inside the folder (not videos or anything else kept
    there); missing ones are left out, for the renderer to name."""
    from ..contract.shot import POSES_DIR, POSES_NPZ, REFERENCE_PNG, SHOT_JSON

    poses = sorted((shot_dir / POSES_DIR).glob("*.png")) if (shot_dir / POSES_DIR).is_dir() else []
    paths = [shot_dir / name for name in (SHOT_JSON, POSES_NPZ, REFERENCE_PNG)] + poses
    return {
        path.relative_to(shot_dir).as_posix(): path.read_bytes() for path in paths if path.is_file()
    }


def render_defaults() -> dict:
    """Every ``poseanything render`` option (how to render) with its default, by argparse name."""
    from ..cli.render import add_render_options

    parser = argparse.ArgumentParser(add_help=False)
    add_render_options(parser)
    return vars(parser.parse_args([]))


def complete_options(render_options: dict | None) -> dict:
    """``render_options`` over the defaults; an unknown name is an error, not silently ignored."""
    defaults = render_defaults()
    unknown = sorted(set(render_options or {}) - set(defaults))
    if unknown:
        raise BatchError(
            f"unknown render option(s) {', '.join(unknown)}; use names of `poseanything render` "
            f"options with _ for -, e.g. {', '.join(sorted(defaults)[:4])}"
        )
    return {**defaults, **(render_options or {})}


def shot_key(contract: dict[str, bytes], options: dict, model_dir: Path | None) -> str:
    """Hash of the shot's contract files, the render options and the model files.

    The model enters by file name, size and modification time (hashing multi-GB weights for every
    shot would cost more than it saves); a touched model file re-renders, never wrongly skips.
    """
    digest = hashlib.sha256()
    keyed = {name: value for name, value in options.items() if name not in UNKEYED_OPTIONS}
    settings = {"key_version": KEY_VERSION, "render": keyed}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, data in sorted(contract.items()):
        digest.update(f"{name}\0{len(data)}\0".encode() + data)
    for path in sorted(model_dir.rglob("*")) if model_dir is not None else []:
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
    """Jobs to render, and the shots already settled: skipped (their marker holds the same key)
    or failed (a video from another render is there and ``overwrite`` is off)."""
    from ..checkpoints.weights import resolve_model_dir
    from ..contract.video import OutputExistsError, check_output_free

    options = complete_options(settings.render_options)
    # The full model lives in the Hugging Face cache; its sources are options, so in the key.
    model_dir = None if options.get("full") else resolve_model_dir(options["model"])
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
    jobs, finished = [], []
    for folder, video in zip(folders, videos, strict=True):
        contract = read_contract(folder)
        key = shot_key(contract, options, model_dir)
        if read_done_key(video) == key:
            finished.append(ShotResult(str(folder), "skipped", output=str(video)))
            continue
        try:
            check_output_free(video, options["overwrite"])
        except OutputExistsError as error:
            finished.append(ShotResult(str(folder), "failed", error=str(error)))
            continue
        jobs.append(
            ShotJob(str(folder), str(video), key, options, None if settings.shared_fs else contract)
        )
    return jobs, finished


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
    from ..cli.render import render

    args = argparse.Namespace(
        **job.options,
        shot_dir=Path(job.shot_dir),
        out=Path(job.video),
        frames_dir=None,
    )
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    render(args, events, cancel)


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
    shot = shot or job.shot_dir
    emit({"event": "start", "shot": shot, "pid": os.getpid(), "host": socket.gethostname()})
    if cancel is not None:
        cancel.check()
    started = time.perf_counter()
    try:
        _render_video(job, _RenderEvents(shot, emit), cancel)
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
    from ..cli.render import ENGINE_JSON

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


def _ray_render_task(job: ShotJob, channel) -> tuple[ShotResult, dict[str, bytes] | None]:
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
    from ..cli.render import ENGINE_JSON

    folder = Path(job.video).parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        write_bytes_atomic(folder / VIDEO_NAME, files[VIDEO_NAME], job.options["overwrite"])
    except FileExistsError:
        message = f"{job.video} appeared during the render; pass --overwrite to replace it"
        return ShotResult(job.shot_dir, "failed", result.seconds, error=message)
    write_bytes_atomic(folder / ENGINE_JSON, files[ENGINE_JSON], overwrite=True)
    write_done_marker(job, result.seconds)
    return result


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
    from ..inference.sampling import Cancelled

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


class _Channel:
    """The batch's mailbox on the cluster (a Ray actor): workers put their events, and each put
    answers whether the batch was cancelled, so a running shot stops at its next sampling step
    instead of being interrupted wherever it is (say, halfway through writing its video)."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.cancelled = False

    def put(self, event: dict) -> bool:
        self.events.append(event)
        return self.cancelled

    def take(self) -> list[dict]:
        events, self.events = self.events, []
        return events

    def cancel(self) -> None:
        self.cancelled = True


def _run_ray(
    jobs: list[ShotJob], settings: BatchSettings, attempts: _Attempts, cancel: CancelToken
) -> list[ShotResult]:
    """One Ray task a shot; events come back through a ``_Channel`` actor.

    On cancel, tasks not started yet are cancelled with ``ray.cancel``; running ones stop at
    their next sampling step; any still running after ``CANCEL_GRACE_S`` are killed.
    """
    import ray

    channel = ray.remote(num_cpus=0)(_Channel).remote()
    task = ray.remote(_ray_render_task).options(
        num_cpus=settings.cpus_per_shot,
        num_gpus=settings.gpus_per_shot,
        max_retries=settings.retries,
        retry_exceptions=True,
    )
    submitted = {task.remote(job, channel): job for job in jobs}
    started = time.perf_counter()
    results: dict[str, ShotResult] = {}
    stopped = (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError)

    def collect(ref) -> None:
        job = submitted[ref]
        try:
            result, files = ray.get(ref)
            if files is not None:
                result = deliver_outputs(job, result, files)
        except ray.exceptions.RayError as error:
            if cancel.cancelled and isinstance(error, stopped):
                result = ShotResult(job.shot_dir, "cancelled")
            else:
                seconds = time.perf_counter() - started
                message = _ray_error_message(error)
                result = ShotResult(job.shot_dir, "failed", seconds, error=message)
        results[job.shot_dir] = attempts.finish(result)

    def settle(refs: list, timeout: float | None = None) -> list:
        """Collect ``refs`` as they finish, until all are in, ``timeout`` passed or (without a
        timeout) the batch is cancelled; returns the unfinished ones."""
        end = None if timeout is None else time.monotonic() + timeout
        while refs and (not cancel.cancelled if end is None else time.monotonic() < end):
            ready, refs = ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
            for event in ray.get(channel.take.remote()):
                attempts(event)
            for ref in ready:
                collect(ref)
        return refs

    try:
        pending = settle(list(submitted))
    except KeyboardInterrupt:
        cancel.cancel()
        pending = [ref for ref in submitted if submitted[ref].shot_dir not in results]
    try:
        if pending:
            ray.get(channel.cancel.remote())
            # force: a task interrupted mid-import would leave a broken torch in a worker that
            # Ray reuses; a killed worker is replaced. A task that has not sent its start event
            # has written nothing yet.
            for ref in pending:
                if submitted[ref].shot_dir not in attempts.counts:
                    ray.cancel(ref, force=True)
            pending = settle(pending, CANCEL_GRACE_S)
            for ref in pending:
                ray.cancel(ref, force=True)
            pending = settle(pending, CANCEL_GRACE_S)
    finally:
        ray.kill(channel)
    for ref in pending:
        message = f"still running {2 * CANCEL_GRACE_S:.0f} s after the cancel; left behind"
        results[submitted[ref].shot_dir] = attempts.finish(
            ShotResult(submitted[ref].shot_dir, "cancelled", error=message)
        )
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
    from ..inference.sampling import CancelToken

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
    """Add ``batch`` to the ``poseanything`` command's subparsers, with every render option."""
    from ..cli.render import add_render_options

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
        "throwaway cluster of this machine alone, or an address like ray://head:10001 "
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
    batch.add_argument(
        "--no-shared-fs",
        action="store_true",
        help="Ray workers cannot see the shot folders: send them, and get the videos back, "
        "through Ray's object store (default: shared storage, paths)",
    )
    batch.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    add_render_options(batch)
    batch.set_defaults(handler=batch_command)
    return batch


def settings_from_args(args: argparse.Namespace) -> BatchSettings:
    if args.retries < 0:
        raise BatchError(f"--retries is {args.retries}; use 0 or more")
    return BatchSettings(
        render_options={name: getattr(args, name) for name in render_defaults()},
        out_dir=args.out_dir,
        retries=args.retries,
        ray=args.ray,
        gpus_per_shot=args.gpus_per_shot,
        cpus_per_shot=args.cpus_per_shot,
        shared_fs=not args.no_shared_fs,
    )


def summary_path(args: argparse.Namespace) -> Path:
    if args.summary is not None:
        return args.summary
    return (args.out_dir or Path.cwd()) / SUMMARY_NAME


def batch_command(args: argparse.Namespace) -> int:
    """Run ``poseanything batch``; Ctrl-C or SIGTERM cancel; returns the exit code."""
    from ..inference.sampling import CancelToken

    cancel = CancelToken()
    previous_handlers = {
        signum: signal.signal(signum, lambda signum, frame: cancel.cancel())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    progress = BatchProgress(args.progress, len(args.shot_dirs))
    try:
        summary = run_batch(args.shot_dirs, settings_from_args(args), progress, cancel)
    except BadInput as error:
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
