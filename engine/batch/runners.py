"""Running a batch (driver side): render many shot folders, once each, in this process or on a
Ray cluster.

Ray is the scheduler (no home-made one): one task a shot, placed where its resources
(``gpus_per_shot``, ``cpus_per_shot``) are free; a task whose worker died or that raised is
re-run up to ``retries`` times. Ray is an optional extra: the default, in-process mode renders
the shots one after another and needs no Ray.

**Cancel** (Ctrl-C, SIGTERM, or the caller's cancel token): a running shot stops at its next
sampling step (workers learn of the cancel from the answer to their progress events), so it never
stops halfway through writing; tasks not started yet are cancelled with ``ray.cancel``. Finished
videos stay; a cancelled shot leaves nothing behind.

Shot folders travel as **paths on shared storage**: every worker must see a shot folder (and
``out_dir``) under the same path as the driver, as on one machine or with NFS/SMB mounted at
the same place on every node. Videos then go straight to their final place and never pass through
Ray's object store, which would hold every video in memory on the driver's node. Without shared
storage (``shared_fs=False``) each shot's files go to its worker as bytes through the object
store; the worker renders in a temporary folder it removes, and the driver puts the returned video
in place (the model must then be installed on every worker, as the bundled one is).

**Resume** and the key: ``engine.batch.plan``. **Failures**: bad input (a bad shot folder, a
missing model: a ``BadInput``) fails at once, since a retry cannot fix it; any other error, or a
worker process that died, is retried; then the shot is reported failed and the others go on.

**Events** (``run_batch(on_event=...)``): ``start`` (shot, attempt, worker pid and host),
``progress`` (shot, step, total, window, windows, eta_s), then one of
``done``/``skipped``/``failed``/``cancelled`` a shot (seconds, output, attempts, error).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK
from .plan import STATUSES, BatchError, BatchSettings, RenderTask, ShotResult, plan_batch
from .worker import EventFn, deliver_outputs, ray_render_task, render_task

if TYPE_CHECKING:
    from ..inference.cancel import CancelToken

POLL_S = 0.2
CANCEL_GRACE_S = 30.0
"""How long a running task gets to stop at a sampling step, and then to die when killed."""


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
    tasks: list[RenderTask], retries: int, attempts: _Attempts, cancel: CancelToken
) -> list[ShotResult]:
    """One shot after another in this process; errors other than bad input retried."""
    from ..inference.cancel import Cancelled

    results = []
    for task in tasks:
        failures = 0
        while True:
            if cancel.cancelled:
                result = ShotResult(task.shot_dir, "cancelled")
                break
            started = time.perf_counter()
            try:
                result = render_task(task, attempts, cancel)
                break
            except (Cancelled, KeyboardInterrupt):
                cancel.cancel()
            except Exception as error:
                failures += 1
                if failures > retries:
                    seconds = time.perf_counter() - started
                    message = f"{type(error).__name__}: {error}"
                    result = ShotResult(task.shot_dir, "failed", seconds, error=message)
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
        start_local_ray(ray)
        return True
    try:
        ray.init(address=address)
    except ConnectionError as error:
        raise BatchError(
            f"--ray {address}: no Ray cluster answered ({error}); start one with `ray start "
            "--head` on the head node, give its address, or use --ray local on this machine"
        ) from error
    return True


def start_local_ray(ray, **init_options) -> None:
    """Start a Ray cluster of this machine alone, every listener on loopback, no dashboard;
    ``init_options`` go on to ``ray.init`` (tests and benchmarks size and place the cluster).

    Ray's servers (GCS, raylet and object manager, workers, dashboard and runtime-env agents,
    metrics) listen on every interface unless the node address is loopback, and on Linux Ray
    replaces a loopback node address (even ``_node_ip_address="127.0.0.1"``) with the machine's
    network address. Only with clusters disabled, as on Windows and macOS, is the node address
    loopback; that switch (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``) is read once when ray is
    imported, so its constant is turned off for the start alone.
    """
    from ray._private import ray_constants

    enabled = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(include_dashboard=False, **init_options)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = enabled


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
    tasks: list[RenderTask], settings: BatchSettings, attempts: _Attempts, cancel: CancelToken
) -> list[ShotResult]:
    """One Ray task a shot; events come back through a ``_Channel`` actor.

    On cancel, tasks not started yet are cancelled with ``ray.cancel``; running ones stop at
    their next sampling step; any still running after ``CANCEL_GRACE_S`` are killed.
    """
    import ray

    channel = ray.remote(num_cpus=0)(_Channel).remote()
    remote_render = ray.remote(ray_render_task).options(
        num_cpus=settings.cpus_per_shot,
        num_gpus=settings.gpus_per_shot,
        max_retries=settings.retries,
        retry_exceptions=True,
    )
    submitted = {remote_render.remote(task, channel): task for task in tasks}
    started = time.perf_counter()
    results: dict[str, ShotResult] = {}
    stopped = (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError)

    def collect(ref) -> None:
        task = submitted[ref]
        try:
            result, files = ray.get(ref)
            if files is not None:
                result = deliver_outputs(task, result, files)
        except ray.exceptions.RayError as error:
            if cancel.cancelled and isinstance(error, stopped):
                result = ShotResult(task.shot_dir, "cancelled")
            else:
                seconds = time.perf_counter() - started
                message = _ray_error_message(error)
                result = ShotResult(task.shot_dir, "failed", seconds, error=message)
        results[task.shot_dir] = attempts.finish(result)

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
    return [results[task.shot_dir] for task in tasks]


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
    from ..inference.cancel import CancelToken

    cancel = cancel or CancelToken()
    started = time.perf_counter()
    tasks, skipped = plan_batch(shot_dirs, settings)
    attempts = _Attempts(on_event)
    for result in skipped:
        attempts.finish(result)
    if settings.ray is None or not tasks:
        rendered = _run_local(tasks, settings.retries, attempts, cancel)
    else:
        started_ray = connect_ray(settings.ray)
        try:
            rendered = _run_ray(tasks, settings, attempts, cancel)
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
