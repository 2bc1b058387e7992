"""The job: what one Generate (or Generate All Shots) started in a scene, from its exported shots
to their takes as strips. ``tick`` moves every job one step.

    start_job ──▶ tick ──▶ tick ... ──▶ finished: summary in the scene's settings
                   │  start the next shot's engine process (or one Ray batch for all)
                   │  apply its progress and preview to the scene's settings
                   └─ a take finished: its video becomes a strip (``sequencer``)

A job holds its scene's shot tasks, already exported, and renders them one after another in
engine child processes (``engine_process``), or, with a Ray cluster, all at once in one
``poseanything batch --ray`` child; a failing shot is a failed ``ShotResult`` and the next one
goes on. Jobs are kept per scene (one at a time) by the scene's ``session_uid``, so renaming a
scene while it renders does not lose its job.

``tick`` runs on the main thread, the only place bpy is touched: Blender calls it from a timer;
tests and headless runs call it directly, through ``wait`` (timers never fire in the bpy module).
A take is never a half-written or overwritten file: each goes to a new numbered take folder
(``takes``), the engine writes under a temporary name and renames, and a cancelled take's folder
is removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from ..engine.batch.runners import STATUSES, ShotResult
from ..engine.contract.files import process_alive
from ..engine.errors import EXIT_BAD_INPUT
from .engine_process import (
    DONE,
    FAILED,
    BatchRequest,
    EngineProcess,
    EngineSettings,
    EngineSetupError,
    EngineStatus,
    RenderRequest,
)
from .redraw import SIDEBAR_AREAS, redraw_areas
from .sequencer import StripError, add_take_strip
from .takes import Take, adopt_staged_take, discard_take, keep_take, new_take
from .tasks import GenerateError, ShotTask

PREVIEW_IMAGE = "PoseAnything Preview"
TICK_INTERVAL_S = 0.25
PROGRESS_AREAS = SIDEBAR_AREAS | {"STATUSBAR"}
"""Editors showing a job's progress bar and preview: sidebars and the status bar."""


@dataclass
class Job:
    """One Generate in one scene: its exported shots, their results so far, the engine process
    rendering now. ``ray`` set: every shot in one ``poseanything batch`` on that cluster."""

    scene_uid: int
    folder: Path
    """Where the shot folders are (``tasks.shots_folder``)."""
    tasks: list[ShotTask]
    """The shots to render, exported."""
    engine: EngineSettings
    ray: str = ""
    export_failures: list[ShotResult] = field(default_factory=list)
    """Shots whose settings or folder were unusable; reported with the rest at the end."""
    notes: tuple[str, ...] = ()
    """What the export wants the user to know (bones dropped, filters applied); not errors."""
    warnings: tuple[str, ...] = ()
    """Said when the job started: outputs go to a stand-in folder (the .blend is not saved), a
    shot whose subject does not move or shows no mesh."""
    results: list[ShotResult] = field(default_factory=list)
    """One per rendered task, in order; ``output`` is the take's video."""
    strips: dict[str, str] = field(default_factory=dict)
    """Shot name: the strip its take became."""
    refusals: int = 0
    """Takes the engine refused as bad input (exit 2: the device, the model, the shot)."""
    log: str = ""
    """The engine log a failed take kept (the last one), for the panel's Engine Log field."""
    process: EngineProcess | None = None
    take: Take | None = None
    cancelled: bool = False
    preview_file: Path = field(default_factory=lambda: _preview_path())
    """Where the engine's latest frame is copied; shown as ``preview_image()`` while running."""

    def preview_image(self):
        """The live preview's image data-block, once the engine sent a frame."""
        return bpy.data.images.get(f"{PREVIEW_IMAGE} {self.scene_uid}")

    @property
    def finished(self) -> bool:
        return self.process is None and (self.cancelled or len(self.results) == len(self.tasks))

    @property
    def ok(self) -> bool:
        """Every shot became a strip."""
        shots = self.export_failures + self.results
        return not self.cancelled and all(result.status == "done" for result in shots)

    @property
    def refused(self) -> bool:
        """Nothing was made and every shot was bad input, which a second run cannot fix."""
        shots = len(self.export_failures) + len(self.results)
        refused = len(self.export_failures) + self.refusals
        return not self.cancelled and shots > 0 and refused == shots

    @property
    def fraction(self) -> float:
        total = max(1, len(self.tasks) + len(self.export_failures))
        done = len(self.results) + len(self.export_failures)
        if self.process is None:
            return done / total
        if not self.ray:
            return (done + self.process.status.fraction) / total
        shots = self.process.status.shots
        return (done + sum(_shot_fraction(shots.get(_shot_key(t))) for t in self.tasks)) / total

    def summary(self) -> str:
        """One line for the whole job: what was made, what failed and why."""
        made = [result for result in self.results if result.status == "done"]
        failed = self.export_failures + [r for r in self.results if r.status != "done"]
        if self.cancelled:
            head = "cancelled; no strip or file from the cancelled take"
            if made:
                head += f" ({len(made)} earlier shot(s) kept)"
            return head
        total = len(self.tasks) + len(self.export_failures)
        if total == 1:
            result = (self.export_failures + self.results)[0]
            if result.status != "done":
                return result.error
            return f"added strip {self.strips[result.shot]!r} ({result.output})"
        lines = [f"{len(made)} of {total} shots generated"]
        lines += [f"{result.shot}: {result.error}" for result in failed]
        return "; ".join(lines)


_JOBS: dict[int, Job] = {}


def _shot_key(task: ShotTask) -> str:
    """How ``poseanything batch`` names a shot in its events: the resolved folder path."""
    return str(Path(task.export.out).resolve())


def _shot_fraction(event: dict | None) -> float:
    if event is None:
        return 0.0
    if event["event"] in STATUSES:  # the batch is through with this shot
        return 1.0
    if event["event"] == "progress" and event.get("total"):
        return event["step"] / event["total"]
    return 0.0


def _preview_path() -> Path:
    """A new preview file named after this process; those of processes that are gone (killed
    before they could remove theirs) are removed."""
    folder = Path(tempfile.gettempdir()) / "poseanything-preview"
    folder.mkdir(exist_ok=True)
    for leftover in folder.glob("preview-*-*.png"):
        pid = leftover.name.split("-")[1]
        if pid.isdigit() and not process_alive(int(pid)):
            leftover.unlink(missing_ok=True)
    handle, path = tempfile.mkstemp(prefix=f"preview-{os.getpid()}-", suffix=".png", dir=folder)
    os.close(handle)
    return Path(path)


def job_for(scene: bpy.types.Scene) -> Job | None:
    return _JOBS.get(scene.session_uid)


def check_idle(scene: bpy.types.Scene) -> None:
    """One job a scene: say so before anything is exported over a shot being rendered."""
    if job_for(scene) is not None:
        raise GenerateError(
            f"scene {scene.name!r} is already generating; wait for it or press Cancel"
        )


def start_job(scene: bpy.types.Scene, job: Job) -> Job:
    """Make ``job`` ``scene``'s job; its first shot starts at the next ``tick``."""
    check_idle(scene)
    _JOBS[scene.session_uid] = job
    props = scene.poseanything
    props.job_progress = 0.0
    props.job_status, props.job_message, props.job_log = "starting", "", ""
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_INTERVAL_S, persistent=True)
    return job


def cancel_job(scene: bpy.types.Scene) -> bool:
    """Stop ``scene``'s job: the running take is killed and discarded; returns whether one ran."""
    job = job_for(scene)
    if job is None:
        return False
    job.cancelled = True
    if job.process is not None:
        job.process.cancel()
    scene.poseanything.job_status = "cancelling"
    return True


def _scene(uid: int) -> bpy.types.Scene | None:
    return next((scene for scene in bpy.data.scenes if scene.session_uid == uid), None)


def tick() -> float | None:
    """Advance every job once: start shots, apply progress, import finished takes.

    Returns the seconds until the next call while jobs run, else None (a timer's contract).
    """
    for uid, job in list(_JOBS.items()):
        scene = _scene(uid)
        if scene is None:  # the scene was deleted: stop its job quietly
            _abort(job)
            del _JOBS[uid]
            continue
        _advance(scene, job)
        if job.finished:
            _finish(scene, job)
            del _JOBS[uid]
    redraw_areas(PROGRESS_AREAS)
    return TICK_INTERVAL_S if _JOBS else None


def _advance(scene: bpy.types.Scene, job: Job) -> None:
    props = scene.poseanything
    if job.process is None and not job.cancelled and len(job.results) < len(job.tasks):
        (_start_ray_batch if job.ray else _start_next)(job)
    if job.process is None:
        return
    status = job.process.poll()
    if status.preview:
        _show_preview(job, status.preview)
    props.job_progress = job.fraction
    props.job_status = _status_text(job, status)
    if status.finished:
        (_ray_batch_finished if job.ray else _take_finished)(scene, job)


def _status_text(job: Job, status: EngineStatus) -> str:
    total = len(job.tasks) + len(job.export_failures)
    if job.ray:
        settled = sum(_shot_fraction(status.shots.get(_shot_key(t))) == 1 for t in job.tasks)
        return f"{settled + len(job.export_failures)}/{total} shots done on Ray ({job.ray})"
    task = job.tasks[len(job.results)]
    position = len(job.results) + len(job.export_failures) + 1
    where = f"{task.name} ({position}/{total})" if total > 1 else ""
    if not status.total:
        loading = "loading the full model" if job.engine.full else "loading the engine"
        return f"{where} {loading}".strip()
    window = f", window {status.window}/{status.windows}" if status.windows > 1 else ""
    return f"{where} step {status.step}/{status.total}{window}, {status.eta_s:.0f} s left".strip()


def _start_next(job: Job) -> None:
    task = job.tasks[len(job.results)]
    try:
        job.take = new_take(task.export.out, task.name)
    except OSError as error:
        message = f"cannot create a take in {task.export.out}: {error}"
        job.results.append(ShotResult(task.name, "failed", error=message))
        return
    request = RenderRequest(task.export.out, job.take.video, job.engine)
    try:
        job.process = EngineProcess(request, job.take.log)
    except EngineSetupError as error:
        discard_take(job.take)
        job.results.append(ShotResult(task.name, "failed", error=str(error)))


def _start_ray_batch(job: Job) -> None:
    """All shots as one ``poseanything batch --ray``; videos land in a private staging folder
    and become takes when the batch ends."""
    try:
        job.folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".ray-batch-", dir=job.folder))
    except OSError as error:
        message = f"cannot write to {job.folder} ({error.strerror}); choose another folder"
        job.results = [ShotResult(task.name, "failed", error=message) for task in job.tasks]
        return
    shot_dirs = tuple(Path(task.export.out) for task in job.tasks)
    request = BatchRequest(shot_dirs, staging, job.ray, job.engine)
    try:
        job.process = EngineProcess(request, staging / "engine.log")
    except EngineSetupError as error:
        shutil.rmtree(staging, ignore_errors=True)
        job.results = [ShotResult(task.name, "failed", error=str(error)) for task in job.tasks]


def _ray_batch_finished(scene: bpy.types.Scene | None, job: Job) -> None:
    """Each shot the batch rendered becomes a take and a strip; the others are reported."""
    status, request = job.process.status, job.process.request
    job.process = None
    if not job.cancelled:
        for task in job.tasks:
            event = status.shots.get(_shot_key(task)) or {}
            seconds, attempts = float(event.get("seconds", 0.0)), int(event.get("attempts", 0))
            if event.get("event") != "done":
                reason = event.get("error") or status.message or "the batch did not render it"
                job.results.append(
                    ShotResult(task.name, "failed", seconds, attempts=attempts, error=reason)
                )
                continue
            staged = request.out_dir / Path(task.export.out).name
            try:
                take = adopt_staged_take(staged, task.export.out, task.name)
            except OSError as error:
                message = f"the batch's video is gone ({error}); generate again"
                failed = ShotResult(task.name, "failed", seconds, attempts=attempts, error=message)
                job.results.append(failed)
                continue
            job.results.append(_take_to_strip(scene, job, task, take, seconds, attempts))
    if status.state == FAILED and str(request.out_dir) in status.message:
        return  # a crash: the staging folder keeps the log the message names
    shutil.rmtree(request.out_dir, ignore_errors=True)


def _take_finished(scene: bpy.types.Scene | None, job: Job) -> None:
    task = job.tasks[len(job.results)]
    status, take = job.process.status, job.take
    job.process, job.take = None, None
    if job.cancelled or status.state not in (DONE, FAILED):
        discard_take(take)
        return
    keep_take(take)
    if status.state == FAILED:
        if str(take.log) in status.message:
            job.log = str(take.log)
        else:
            discard_take(take)  # bad input: the message says it all, the folder holds nothing
        job.refusals += status.returncode == EXIT_BAD_INPUT
        failed = ShotResult(task.name, "failed", status.seconds, attempts=1, error=status.message)
        job.results.append(failed)
        return
    job.results.append(_take_to_strip(scene, job, task, take, status.seconds, 1))


def _take_to_strip(
    scene: bpy.types.Scene, job: Job, task: ShotTask, take: Take, seconds: float, attempts: int
) -> ShotResult:
    """The finished take as a strip in its shot's scene; its log goes, its video stays."""
    target = bpy.data.scenes.get(task.export.scene) or scene
    try:
        strip = add_take_strip(target, take.video, task.frame_start, task.num_frames)
    except StripError as error:
        return ShotResult(task.name, "failed", seconds, attempts=attempts, error=str(error))
    take.log.unlink(missing_ok=True)
    job.strips[task.name] = strip.name
    return ShotResult(task.name, "done", seconds, output=str(take.video), attempts=attempts)


def _finish(scene: bpy.types.Scene, job: Job) -> None:
    props = scene.poseanything
    props.job_progress = 1.0 if not job.cancelled else 0.0
    props.job_status = ""
    props.job_message = job.summary()
    props.job_ok = job.ok
    props.job_log = job.log
    _remove_preview(job)
    print(f"PoseAnything: {props.job_message}")


def _show_preview(job: Job, engine_preview: str) -> None:
    """Show the engine's latest frame in the panel; a copy outlives the engine's file."""
    try:
        shutil.copyfile(engine_preview, job.preview_file)
    except OSError:
        return  # the engine replaced or removed it just now; the next event brings another
    image = job.preview_image()
    if image is None:
        image = bpy.data.images.load(str(job.preview_file), check_existing=False)
        image.name = f"{PREVIEW_IMAGE} {job.scene_uid}"
    else:
        image.reload()
    if not bpy.app.background:
        image.preview_ensure().reload()


def _abort(job: Job) -> None:
    """Stop a job now, waiting for its engine to exit; it leaves no take, staging or preview."""
    job.cancelled = True
    if job.process is not None:
        job.process.cancel()
        job.process.wait()
        (_ray_batch_finished if job.ray else _take_finished)(None, job)
    _remove_preview(job)


def _remove_preview(job: Job) -> None:
    """The preview is the running job's; nothing of it stays in the file or on disk."""
    image = job.preview_image()
    if image is not None:
        bpy.data.images.remove(image)
    job.preview_file.unlink(missing_ok=True)


def stop_all() -> None:
    """Cancel and forget every job (unregistering the extension or quitting)."""
    for job in _JOBS.values():
        _abort(job)
    _JOBS.clear()
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)


def wait(scene: bpy.types.Scene, on_tick=None, poll_s: float = 0.1) -> Job | None:
    """Tick until ``scene``'s job ends (headless runs, the demo and tests); returns it."""
    job = job_for(scene)
    while job_for(scene) is not None:
        tick()
        if on_tick is not None:
            on_tick(scene)
        time.sleep(poll_s)
    return job
