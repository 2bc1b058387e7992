"""Start a Generate: the one sequence the Generate buttons, the command line and scripts share.

    start_generate(scene, view_layer)      # the panel's shot
    start_generate(scene, all_shots=True)  # every camera marker's shot, else every scene
    job.wait(scene)                        # headless: tick until the takes are strips

``start_generate`` checks the model and the engine Python, builds the shot tasks from the
scene's settings (``tasks``), exports their shot folders (on this thread: it reads the scene)
and hands them to a job (``job``), which renders them in engine child processes while Blender
stays responsive. Anything that cannot start raises a ``BadInput`` that says what to change,
before slow work where it can. The operators only hand it their context and report; the command
line only parses its options and prints.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import bpy

from ..engine.batch.runners import ShotResult
from ..engine.checkpoints.weights import ModelNotFoundError, resolve_model_dir
from ..engine.errors import BadInput
from . import models
from .engine_process import EngineSettings, resolve_engine_python
from .job import Job, check_idle, start_job
from .shot_export import check_output_folder, check_writable_folder, export_shot
from .takes import TAKES_DIR
from .tasks import GenerateError, ShotTask, batch_tasks, scene_task

# ``bl_ext.<repo>.poseanything`` when Blender loads the extension, ``poseanything`` from pip.
ADDON_PACKAGE = __package__.rpartition(".")[0]


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


def check_outputs(task: ShotTask) -> None:
    """Every place the task will write, before anything is exported or rendered: its shot
    folder (writable, not another .blend's) and the folder its takes go in."""
    takes = check_output_folder(task.export.out) / TAKES_DIR
    if takes.exists() and not takes.is_dir():
        raise GenerateError(
            f"{takes} is a file where the takes of shot {task.name!r} go; move it away or "
            "choose another output folder"
        )
    if takes.is_dir():
        check_writable_folder(takes, "make it writable or choose another output folder")


@dataclass
class Exported:
    """What exporting a job's tasks gave: the tasks ready to render, the ones that failed."""

    tasks: list[ShotTask]
    failures: list[ShotResult]
    notes: list[str]
    warnings: list[str]


def export_tasks(tasks: list[ShotTask]) -> Exported:
    """Write each task's shot folder, every output checked first; a task that cannot export
    (a shot that would waste a render included) becomes a failed result."""
    exported = Exported([], [], [], [])
    checked = []
    for task in tasks:
        try:
            check_outputs(task)
            checked.append(task)
        except BadInput as error:
            exported.failures.append(ShotResult(task.name, "failed", error=str(error)))
    for task in checked:
        try:
            result = export_shot(replace(task.export, strict=True))
        except BadInput as error:
            exported.failures.append(ShotResult(task.name, "failed", error=str(error)))
            continue
        exported.notes.extend(result.notes)
        exported.warnings.extend(
            f"{task.name}: {w}" if len(tasks) > 1 else w for w in result.warnings
        )
        exported.tasks.append(task)
    return exported


def start_generate(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer | None = None,
    *,
    all_shots: bool = False,
    engine: EngineOptions | None = None,
) -> Job:
    """Export ``scene``'s shot (``all_shots``: every shot of the file) and start its job.

    ``view_layer`` gives the active armature (None: the context's for the context's scene, else
    the scene's first); ``engine`` None: the preferences' options. Raises ``BadInput`` (with
    what to change) when it cannot start; with ``all_shots`` a shot that cannot export is a
    failed result instead, and the others go on (none left: it cannot start). The returned job
    carries the export's notes and warnings; ``job.tick`` renders it, ``job.wait`` ticks until
    it ends.
    """
    check_idle(scene)
    preferences = addon_preferences()
    engine = engine or engine_options(scene, preferences)
    check_model(engine, use_ray=all_shots)
    settings = engine.settings(resolve_engine_python(engine.python))
    if view_layer is None:
        view_layer = bpy.context.view_layer if scene == bpy.context.scene else scene.view_layers[0]
    if all_shots:
        tasks, failures, folder, warning = batch_tasks(scene, view_layer, preferences)
    else:
        task, folder, warning = scene_task(scene, view_layer, preferences)
        tasks, failures = [task], []
    exported = export_tasks(tasks)
    failures += exported.failures
    if failures and not (all_shots and exported.tasks):
        raise GenerateError(_refusal(failures))
    job = Job(
        scene.session_uid,
        folder,
        exported.tasks,
        settings,
        ray=engine.ray if all_shots else "",
        export_failures=failures,
        notes=tuple(exported.notes),
        warnings=tuple(([warning] if warning else []) + exported.warnings),
    )
    return start_job(scene, job)


def _refusal(failures: list[ShotResult]) -> str:
    """Why no shot can start, in one line."""
    if len(failures) == 1:
        return failures[0].error
    reasons = "; ".join(f"{failure.shot}: {failure.error}" for failure in failures)
    return f"none of the {len(failures)} shots can be generated: {reasons}"
