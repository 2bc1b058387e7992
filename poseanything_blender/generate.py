"""Generate: scene settings to shot folders, engine jobs, and finished takes as sequencer strips.

The operators, the headless command and the demo all go through ``start_generate`` and
``tick``. Exporting runs on the main thread (it reads bpy); rendering runs in an engine child
process (``engine_process.EngineProcess``); ``tick`` applies its progress and, at the end,
imports the take as a strip, all on the main thread. ``tick`` is a plain function: Blender calls
it from a timer, tests and headless runs call it directly (timers never fire in the bpy module).

Jobs are kept per scene (one at a time) by the scene's ``session_uid``, so renaming a scene
while it renders does not lose its job. A batch is one job with several shots, rendered one
after another (or, with a Ray cluster in the preferences, all at once by one ``poseanything
batch --ray`` child); a failing shot is reported and the next one goes on.

A take is never a half-written or overwritten file: each goes to a new numbered take folder
(``takes.py``), the engine writes under a temporary name and renames, and a cancelled take's
folder is removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import bpy

from ..engine.checkpoints.weights import ModelNotFoundError, resolve_model_dir
from ..engine.contract.shot import Guidance
from . import models
from .armature import SkeletonOptions
from .engine_process import (
    DONE,
    FAILED,
    BatchRequest,
    EngineProcess,
    EngineSettings,
    EngineSetupError,
    RenderRequest,
    resolve_engine_python,
)
from .redraw import SIDEBAR_AREAS, redraw_areas
from .sequencer import StripError, add_movie_strip
from .shot_export import ExportError, ExportSettings, export_shot
from .shots import ShotRange, batch_shots, pose_frames, scene_range
from .takes import Take, discard_take, new_take

# ``bl_ext.<repo>.poseanything`` when Blender loads the extension, ``poseanything`` from pip.
ADDON_PACKAGE = __package__.rpartition(".")[0]
DEFORM_ONLY = {"AUTO": None, "ON": True, "OFF": False}
PREVIEW_IMAGE = "PoseAnything Preview"
TICK_INTERVAL_S = 0.25


PROGRESS_AREAS = SIDEBAR_AREAS | {"STATUSBAR"}
"""Editors showing a Generate's progress bar and preview: sidebars and the status bar."""


class GenerateError(ValueError):
    """Settings that cannot start a Generate; the message says what to change."""


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs, from the extension preferences (and the scene's step count)."""

    python: str = ""
    """Empty: this Python if it has torch."""
    model: str | None = None
    device: str = "auto"
    steps: int | None = None
    ray: str = ""
    """A Ray cluster for "Generate all shots" (auto, local or an address); empty: one shot
    after another on this machine."""
    full: bool = False
    """The official PoseAnything (Wan2.2-TI2V-5B) instead of ``model``."""
    poseanything_weights: str | None = None
    wan_weights: str | None = None
    cpu_offload: bool = False
    backend: str = "torch"
    online: bool = False
    """Blender's "Allow Online Access": the engine may fetch missing full-model weights."""

    def settings(self, python: str) -> EngineSettings:
        """The engine child's settings, run by ``python``: every other field as set here."""
        shared = {f.name: getattr(self, f.name) for f in fields(EngineSettings)}
        return EngineSettings(**{**shared, "python": python})


@dataclass(frozen=True)
class ShotTask:
    """One shot of a job: its export settings and resolved frame range."""

    name: str
    export: ExportSettings
    frame_start: int
    frame_end: int

    @property
    def num_frames(self) -> int:
        return self.frame_end - self.frame_start + 1


@dataclass
class ShotOutcome:
    name: str
    ok: bool
    message: str
    strip: str = ""
    video: str = ""
    log: str = ""


def addon_preferences(context=None):
    """This extension's preferences, or None when it is not enabled as an add-on (bpy module)."""
    addon = (context or bpy.context).preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon is not None else None


def _folder(path: str) -> str | None:
    return bpy.path.abspath(path) if path else None


def engine_options(scene: bpy.types.Scene, preferences=None) -> EngineOptions:
    """The engine's options from the preferences' model choice (``scene`` gives the steps)."""
    steps = scene.poseanything.steps or None
    online = bool(bpy.app.online_access)
    if preferences is None:
        return EngineOptions(steps=steps, online=online)
    choice = preferences.model_choice
    full = choice == "FULL"
    return EngineOptions(
        python=_folder(preferences.engine_python) or "",
        model=_folder(preferences.model_folder) if choice == "CUSTOM" else None,
        device=preferences.device.lower(),
        steps=steps,
        ray=preferences.ray_address.strip(),
        full=full,
        poseanything_weights=_folder(preferences.poseanything_weights) if full else None,
        wan_weights=_folder(preferences.wan_weights) if full else None,
        cpu_offload=full and preferences.cpu_offload,
        backend="torch" if full else preferences.backend.lower(),
        online=online,
    )


def skeleton_options(props) -> SkeletonOptions:
    """The bone filter of the scene's settings."""
    return SkeletonOptions(
        deform_only=DEFORM_ONLY[props.deform_only],
        bone_collections=(props.bone_collection,) if props.bone_collection else (),
        include_hidden=props.include_hidden,
    )


def resolve_armature(scene: bpy.types.Scene, view_layer, chosen=None) -> bpy.types.Object:
    """The chosen armature, else the active object if it is one, else the scene's only one."""
    if chosen is not None:
        return chosen
    active = view_layer.objects.active if view_layer is not None else None
    if active is not None and active.type == "ARMATURE":
        return active
    armatures = [obj for obj in scene.objects if obj.type == "ARMATURE"]
    if len(armatures) == 1:
        return armatures[0]
    found = f"{len(armatures)} armatures" if armatures else "no armature"
    raise GenerateError(
        f"scene {scene.name!r} has {found}; pick one as Armature in the PoseAnything panel, "
        "or make it the active object"
    )


def shots_folder(output_folder: str, preferences=None) -> tuple[Path, str | None]:
    """The folder shots go in, and a warning when it had to be a stand-in.

    A path relative to an unsaved .blend has nothing to be relative to, so shots then go to the
    folder set in the preferences, or the system's temporary folder.
    """
    if not (output_folder.startswith("//") and not bpy.data.filepath):
        return Path(bpy.path.abspath(output_folder)).absolute(), None
    fallback = preferences.unsaved_output_folder if preferences is not None else ""
    folder = Path(bpy.path.abspath(fallback) if fallback else tempfile.gettempdir())
    folder = (folder / "poseanything").absolute()
    return folder, f"the .blend is not saved, so outputs go to {folder}; save it to keep them"


def shot_task(
    scene: bpy.types.Scene, shot: ShotRange, folder: Path, armature: bpy.types.Object
) -> ShotTask:
    """The export settings of ``shot`` from ``scene``'s PoseAnything settings."""
    props = scene.poseanything
    if shot.frame_end < shot.frame_start:
        raise GenerateError(
            f"shot {shot.name!r}: the frame range {shot.frame_start}:{shot.frame_end} is empty; "
            "the end frame must not come before the start"
        )
    use_image = props.reference_mode == "IMAGE"
    if use_image and not props.reference_image:
        raise GenerateError("Reference is set to an image file, but no image is chosen; pick one")
    settings = ExportSettings(
        scene=shot.scene,
        armature=armature.name,
        out=folder / shot.name,
        camera=shot.camera,
        frames=(shot.frame_start, shot.frame_end),
        skeleton=skeleton_options(props),
        reference_image=Path(bpy.path.abspath(props.reference_image)) if use_image else None,
        prompt=props.prompt,
        seed=props.seed,
        guidance=Guidance(props.subject_guidance, props.camera_guidance),
        pose_frames=pose_frames(
            props.sparse_poses, props.pose_every, armature, shot.frame_start, shot.frame_end
        ),
    )
    return ShotTask(shot.name, settings, shot.frame_start, shot.frame_end)


def check_camera(scene: bpy.types.Scene, camera: str | None) -> None:
    if camera is None and scene.camera is None:
        raise GenerateError(
            f"scene {scene.name!r} has no camera; add one and make it the scene camera "
            "(Ctrl+Numpad 0), or pick a Camera in the PoseAnything panel"
        )


def scene_task(scene: bpy.types.Scene, view_layer, preferences=None) -> tuple[ShotTask, Path, str]:
    """The panel's shot: its armature, camera and range; the folder; a warning or ""."""
    props = scene.poseanything
    armature = resolve_armature(scene, view_layer, props.armature)
    camera = props.camera.name if props.camera is not None else None
    check_camera(scene, camera)
    folder, warning = shots_folder(props.output_folder, preferences)
    shot = ShotRange(bpy.path.clean_name(scene.name), scene.name, camera, *scene_range(scene))
    return shot_task(scene, shot, folder, armature), folder, warning or ""


def batch_tasks(
    scene: bpy.types.Scene, view_layer, preferences=None
) -> tuple[list[ShotTask], list[ShotOutcome], Path, str]:
    """Every shot of the file (camera markers of ``scene``, else each scene) as tasks; shots
    whose settings are unusable come back as failed outcomes, so the others still run."""
    folder, warning = shots_folder(scene.poseanything.output_folder, preferences)
    tasks, failures = [], []
    for shot in batch_shots(scene):
        shot_scene = bpy.data.scenes[shot.scene]
        layer = view_layer if shot_scene == scene else shot_scene.view_layers[0]
        try:
            check_camera(shot_scene, shot.camera)
            armature = resolve_armature(shot_scene, layer, shot_scene.poseanything.armature)
            tasks.append(shot_task(shot_scene, shot, folder, armature))
        except GenerateError as error:
            failures.append(ShotOutcome(shot.name, False, str(error)))
    return tasks, failures, folder, warning or ""


@dataclass
class GenerateJob:
    """Shots of one scene, rendered one after another by engine child processes, or all at
    once by one ``poseanything batch`` on a Ray cluster (``ray`` set)."""

    scene_uid: int
    shots_folder: Path
    tasks: list[ShotTask]
    engine: EngineSettings
    ray: str = ""
    export_failures: list[ShotOutcome] = field(default_factory=list)
    """Shots whose folder could not be written; reported with the rest at the end."""
    outcomes: list[ShotOutcome] = field(default_factory=list)
    """One per rendered task, in order."""
    current: EngineProcess | None = None
    take: Take | None = None
    cancelled: bool = False
    preview_file: Path = field(default_factory=lambda: _preview_path())
    """Where the engine's latest frame is copied; shown as ``preview_image()`` while running."""

    def preview_image(self):
        """The live preview's image data-block, once the engine sent a frame."""
        return bpy.data.images.get(f"{PREVIEW_IMAGE} {self.scene_uid}")

    @property
    def finished(self) -> bool:
        return self.current is None and (self.cancelled or len(self.outcomes) == len(self.tasks))

    @property
    def fraction(self) -> float:
        total = max(1, len(self.tasks) + len(self.export_failures))
        done = len(self.outcomes) + len(self.export_failures)
        if self.current is None:
            return done / total
        if not self.ray:
            return (done + self.current.status.fraction) / total
        shots = self.current.status.shots
        return (done + sum(_shot_fraction(shots.get(_shot_key(t))) for t in self.tasks)) / total

    def summary(self) -> str:
        """One line for the whole job: what was made, what failed and why."""
        made = [o for o in self.outcomes if o.ok]
        failed = self.export_failures + [o for o in self.outcomes if not o.ok]
        if self.cancelled:
            head = "cancelled; no strip or file from the cancelled take"
            if made:
                head += f" ({len(made)} earlier shot(s) kept)"
            return head
        total = len(self.tasks) + len(self.export_failures)
        if total == 1:
            outcome = (self.export_failures + self.outcomes)[0]
            return (
                f"added strip {outcome.strip!r} ({outcome.video})"
                if outcome.ok
                else outcome.message
            )
        lines = [f"{len(made)} of {total} shots generated"]
        lines += [f"{o.name}: {o.message}" for o in failed]
        return "; ".join(lines)


_JOBS: dict[int, GenerateJob] = {}


def _shot_key(task: ShotTask) -> str:
    """How ``poseanything batch`` names a shot in its events: the resolved folder path."""
    return str(Path(task.export.out).resolve())


def _shot_fraction(event: dict | None) -> float:
    if event is None:
        return 0.0
    if event["event"] in ("done", "skipped", "failed", "cancelled"):
        return 1.0
    if event["event"] == "progress" and event.get("total"):
        return event["step"] / event["total"]
    return 0.0


def _preview_path() -> Path:
    folder = Path(tempfile.gettempdir()) / "poseanything-preview"
    folder.mkdir(exist_ok=True)
    handle, path = tempfile.mkstemp(suffix=".png", dir=folder)
    os.close(handle)
    return Path(path)


def job_for(scene: bpy.types.Scene) -> GenerateJob | None:
    return _JOBS.get(scene.session_uid)


def check_model(engine: EngineOptions, use_ray: bool = False) -> None:
    """Say at once, before any export, when there is no model to render with (a cluster's
    workers have their own models, so a Ray batch is not checked here; the full model's
    weights are checked by the engine, which can download them, and by Check Models)."""
    if use_ray and engine.ray:
        return
    if engine.full:
        missing = models.missing_weights(engine.settings(engine.python))
        if missing:
            raise GenerateError(missing)
        return
    try:
        resolve_model_dir(engine.model)
    except ModelNotFoundError as error:
        raise GenerateError(str(error)) from error


def start_generate(
    scene: bpy.types.Scene,
    tasks: list[ShotTask],
    folder: Path,
    engine: EngineOptions,
    export_failures: list[ShotOutcome] | None = None,
    use_ray: bool = False,
) -> GenerateJob:
    """Queue exported ``tasks`` as ``scene``'s job; it starts at the next ``tick``.

    ``use_ray`` renders them on the Ray cluster of ``engine.ray``, if one is set.
    """
    if job_for(scene) is not None:
        raise GenerateError(
            f"scene {scene.name!r} is already generating; wait for it or press Cancel"
        )
    check_model(engine, use_ray)
    settings = engine.settings(resolve_engine_python(engine.python))
    job = GenerateJob(
        scene.session_uid,
        folder,
        list(tasks),
        settings,
        engine.ray if use_ray else "",
        list(export_failures or []),
    )
    _JOBS[scene.session_uid] = job
    props = scene.poseanything
    props.job_progress = 0.0
    props.job_status, props.job_message, props.job_log = "starting", "", ""
    _register_timer()
    return job


def cancel_generate(scene: bpy.types.Scene) -> bool:
    """Stop ``scene``'s job: the running take is killed and discarded; returns whether one ran."""
    job = job_for(scene)
    if job is None:
        return False
    job.cancelled = True
    if job.current is not None:
        job.current.cancel()
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


def _advance(scene: bpy.types.Scene, job: GenerateJob) -> None:
    props = scene.poseanything
    if job.current is None and not job.cancelled and len(job.outcomes) < len(job.tasks):
        (_start_ray_batch if job.ray else _start_next)(job)
    if job.current is None:
        return
    status = job.current.poll()
    if status.preview:
        _show_preview(job, status.preview)
    props.job_progress = job.fraction
    props.job_status = _status_text(job, status)
    if status.finished:
        (_ray_batch_finished if job.ray else _take_finished)(scene, job)


def _status_text(job: GenerateJob, status) -> str:
    total = len(job.tasks) + len(job.export_failures)
    if job.ray:
        settled = sum(_shot_fraction(status.shots.get(_shot_key(t))) == 1 for t in job.tasks)
        return f"{settled + len(job.export_failures)}/{total} shots done on Ray ({job.ray})"
    task = job.tasks[len(job.outcomes)]
    position = len(job.outcomes) + len(job.export_failures) + 1
    where = f"{task.name} ({position}/{total})" if total > 1 else ""
    if not status.total:
        loading = "loading the full model" if job.engine.full else "loading the engine"
        return f"{where} {loading}".strip()
    window = f", window {status.window}/{status.windows}" if status.windows > 1 else ""
    return f"{where} step {status.step}/{status.total}{window}, {status.eta_s:.0f} s left".strip()


def _start_next(job: GenerateJob) -> None:
    task = job.tasks[len(job.outcomes)]
    try:
        job.take = new_take(task.export.out, task.name)
    except OSError as error:
        job.outcomes.append(
            ShotOutcome(task.name, False, f"cannot create a take in {task.export.out}: {error}")
        )
        return
    request = RenderRequest(task.export.out, job.take.video, job.engine)
    try:
        job.current = EngineProcess(request, job.take.log)
    except EngineSetupError as error:
        discard_take(job.take)
        job.outcomes.append(ShotOutcome(task.name, False, str(error)))


def _start_ray_batch(job: GenerateJob) -> None:
    """All shots as one ``poseanything batch --ray``; videos land in a private staging folder
    and become takes when the batch ends."""
    try:
        job.shots_folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".ray-batch-", dir=job.shots_folder))
    except OSError as error:
        message = f"cannot write to {job.shots_folder} ({error.strerror}); choose another folder"
        job.outcomes = [ShotOutcome(task.name, False, message) for task in job.tasks]
        return
    shot_dirs = tuple(Path(task.export.out) for task in job.tasks)
    request = BatchRequest(shot_dirs, staging, job.ray, job.engine)
    try:
        job.current = EngineProcess(request, staging / "engine.log")
    except EngineSetupError as error:
        shutil.rmtree(staging, ignore_errors=True)
        job.outcomes = [ShotOutcome(task.name, False, str(error)) for task in job.tasks]


def _ray_batch_finished(scene: bpy.types.Scene, job: GenerateJob) -> None:
    """Each shot the batch rendered becomes a take and a strip; the others are reported."""
    status, request = job.current.status, job.current.request
    job.current = None
    if not job.cancelled:
        for task in job.tasks:
            event = status.shots.get(_shot_key(task)) or {}
            staged = request.out_dir / Path(task.export.out).name
            if event.get("event") == "done":
                job.outcomes.append(_import_staged_take(scene, task, staged))
            else:
                reason = event.get("error") or status.message or "the batch did not render it"
                job.outcomes.append(ShotOutcome(task.name, False, reason))
    if status.state == FAILED and str(request.out_dir) in status.message:
        return  # a crash: the staging folder keeps the log the message names
    shutil.rmtree(request.out_dir, ignore_errors=True)


def _import_staged_take(scene: bpy.types.Scene, task: ShotTask, staged: Path) -> ShotOutcome:
    take = new_take(task.export.out, task.name)
    try:
        os.replace(staged / "video.mp4", take.video)
        os.replace(staged / "engine.json", take.folder / "engine.json")
    except OSError as error:
        discard_take(take)
        return ShotOutcome(task.name, False, f"the batch's video is gone ({error}); generate again")
    return _add_take_strip(scene, task, take)


def _take_finished(scene: bpy.types.Scene, job: GenerateJob) -> None:
    task = job.tasks[len(job.outcomes)]
    status, take = job.current.status, job.take
    job.current, job.take = None, None
    if job.cancelled or status.state not in (DONE, FAILED):
        discard_take(take)
        return
    if status.state == FAILED:
        kept_log = str(take.log) in status.message
        if not kept_log:
            discard_take(take)  # bad input: the message says it all, the folder holds nothing
        log = str(take.log) if kept_log else ""
        job.outcomes.append(ShotOutcome(task.name, False, status.message, log=log))
        return
    job.outcomes.append(_add_take_strip(scene, task, take))


def _add_take_strip(scene: bpy.types.Scene, task: ShotTask, take: Take) -> ShotOutcome:
    """The finished take as a strip in its shot's scene, as one undo step."""
    target = bpy.data.scenes.get(task.export.scene) or scene
    try:
        strip = add_movie_strip(
            target, take.video, take.video.stem, task.frame_start, task.num_frames
        )
    except StripError as error:
        return ShotOutcome(task.name, False, str(error))
    take.log.unlink(missing_ok=True)
    _push_undo(f"PoseAnything: add {strip.name}")
    return ShotOutcome(task.name, True, "", strip.name, str(take.video))


def _push_undo(message: str) -> None:
    """Make the new strip one undo step (needs a window manager; a no-op without one)."""
    if bpy.ops.ed.undo_push.poll():
        bpy.ops.ed.undo_push(message=message)


def _finish(scene: bpy.types.Scene, job: GenerateJob) -> None:
    props = scene.poseanything
    props.job_progress = 1.0 if not job.cancelled else 0.0
    props.job_status = ""
    props.job_message = job.summary()
    props.job_ok = not job.cancelled and all(o.ok for o in job.export_failures + job.outcomes)
    _remove_preview(job)
    logs = [outcome.log for outcome in job.outcomes if outcome.log]
    props.job_log = logs[-1] if logs else ""
    print(f"PoseAnything: {props.job_message}")


def _show_preview(job: GenerateJob, engine_preview: str) -> None:
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


def _abort(job: GenerateJob) -> None:
    """Stop a job now, waiting for its engine to exit; it leaves no take, staging or preview."""
    job.cancelled = True
    if job.current is not None:
        job.current.cancel()
        job.current.wait()
        (_ray_batch_finished if job.ray else _take_finished)(None, job)
    _remove_preview(job)


def _remove_preview(job: GenerateJob) -> None:
    """The preview is the running job's; nothing of it stays in the file or on disk."""
    image = job.preview_image()
    if image is not None:
        bpy.data.images.remove(image)
    job.preview_file.unlink(missing_ok=True)


def _register_timer() -> None:
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_INTERVAL_S, persistent=True)


def stop_all() -> None:
    """Cancel and forget every job (unregistering the extension or quitting)."""
    for job in _JOBS.values():
        _abort(job)
    _JOBS.clear()
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)


def wait(scene: bpy.types.Scene, on_tick=None, poll_s: float = 0.1) -> GenerateJob | None:
    """Tick until ``scene``'s job ends (headless runs, the demo and tests); returns it."""
    import time

    job = job_for(scene)
    while job_for(scene) is not None:
        tick()
        if on_tick is not None:
            on_tick(scene)
        time.sleep(poll_s)
    return job


def export_tasks(tasks: list[ShotTask]) -> tuple[list[ShotTask], list[ShotOutcome], list[str]]:
    """Write each task's shot folder; tasks that cannot export become failed outcomes."""
    exported, failed, notes = [], [], []
    for task in tasks:
        try:
            result = export_shot(task.export)
        except ExportError as error:
            failed.append(ShotOutcome(task.name, False, str(error)))
            continue
        notes.extend(result.notes)
        exported.append(task)
    return exported, failed, notes
