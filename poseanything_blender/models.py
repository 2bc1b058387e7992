"""Check Models and Download: ``poseanything models --json`` in an engine process, as Generate.

Blender's Python has no ``huggingface_hub``, so the engine Python answers what the full model
needs: ``check`` lists its files here with their sizes (no network), ``plan`` asks the hub for
every file's size so the total is shown before anything is fetched, ``download`` fetches the
missing files with progress. One such process runs at a time; ``tick`` (a plain function, called
by a timer in Blender and directly in tests) applies its events to ``STATE``, which the preferences
draw through ``report_lines``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import bpy

from ..engine.checkpoints.hub import format_size
from ..engine.errors import BadInput
from .engine_process import DONE, EngineProcess, EngineSettings, EngineSetupError, ModelsRequest
from .redraw import SIDEBAR_AREAS, redraw_areas

TICK_INTERVAL_S = 0.25
ONLINE_ACCESS_OFF = (
    "Blender's Allow Online Access is off: turn it on in Preferences > System > Network to download"
)


class ModelsError(BadInput):
    """A models run that cannot start; the message says what to change."""


@dataclass(frozen=True)
class ModelFile:
    component: str
    file: str
    present: bool
    size: int | None


@dataclass(frozen=True)
class ModelsReport:
    """The engine's ``models`` event: every file of the full model, present or missing."""

    cache: str
    files: tuple[ModelFile, ...]
    unknown: tuple[str, ...]
    complete: bool
    present_bytes: int

    @classmethod
    def from_event(cls, event: dict) -> ModelsReport:
        files = tuple(
            ModelFile(row["component"], row["file"], bool(row["present"]), row["size"])
            for row in event["files"]
        )
        return cls(
            event["cache"],
            files,
            tuple(event["unknown"]),
            bool(event["complete"]),
            int(event["present_bytes"]),
        )

    @property
    def missing(self) -> tuple[ModelFile, ...]:
        return tuple(item for item in self.files if not item.present)


@dataclass(frozen=True)
class DownloadPlan:
    """The engine's ``plan`` event: what a download fetches, with the hub's sizes."""

    files: tuple[tuple[str, int, bool], ...]
    """(repository/file, size in bytes, already here)"""
    total_bytes: int
    download_bytes: int

    @classmethod
    def from_event(cls, event: dict) -> DownloadPlan:
        files = tuple(
            (item["file"], int(item["size"]), bool(item["present"])) for item in event["items"]
        )
        return cls(files, int(event["total_bytes"]), int(event["download_bytes"]))

    @property
    def to_fetch(self) -> tuple[tuple[str, int, bool], ...]:
        return tuple(item for item in self.files if not item[2])

    @property
    def button_text(self) -> str:
        return f"Download {format_size(self.download_bytes)}"


@dataclass
class ModelsState:
    """What the preferences show: the last answers, the running process and its progress."""

    report: ModelsReport | None = None
    report_sources: tuple[str, ...] = ()
    """The weights options the report was made for (a report of other folders is stale)."""
    plan: DownloadPlan | None = None
    process: EngineProcess | None = None
    mode: str = ""
    progress: float = 0.0
    status: str = ""
    message: str = ""
    ok: bool = True
    log: str = ""


STATE = ModelsState()


def start(mode: str, engine: EngineSettings) -> EngineProcess:
    """Run ``poseanything models`` in ``mode`` (check, plan or download); ``tick`` follows it."""
    if STATE.process is not None:
        raise ModelsError(f"a model {STATE.mode} is running; wait for it or press Cancel")
    if mode in ("plan", "download") and not engine.online:
        raise ModelsError(ONLINE_ACCESS_OFF)
    if mode == "download" and STATE.plan is None:
        raise ModelsError("the download's size is not known yet; press Download to see it first")
    folder = Path(tempfile.gettempdir()) / "poseanything-models"
    folder.mkdir(exist_ok=True)
    log = folder / f"models-{mode}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        process = EngineProcess(ModelsRequest(mode, engine), log)
    except EngineSetupError as error:
        raise ModelsError(str(error)) from error
    STATE.process, STATE.mode, STATE.log = process, mode, str(log)
    STATE.report_sources = tuple(engine.weights_options())
    STATE.progress, STATE.message, STATE.ok = 0.0, "", True
    STATE.status = {
        "check": "checking the model files",
        "plan": "asking the hub for the file sizes",
        "download": "starting the download",
    }[mode]
    if mode != "download":
        STATE.plan = None
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_INTERVAL_S, persistent=True)
    return process


def cancel() -> bool:
    """Stop the running models process (a download keeps what it fetched); whether one ran."""
    if STATE.process is None:
        return False
    STATE.process.cancel()
    STATE.status = "cancelling"
    return True


def tick() -> float | None:
    """Apply the running process's events; returns the seconds to the next call, None when idle."""
    process = STATE.process
    if process is None:
        return None
    status = process.poll()
    latest = status.latest
    if "plan" in latest:
        STATE.plan = DownloadPlan.from_event(latest["plan"])
    if "file" in latest and STATE.mode == "download":
        event = latest["file"]
        STATE.progress = event["bytes_done"] / max(1, event["bytes_total"])
        STATE.status = (
            f"{event['index']}/{event['count']} files, {format_size(event['bytes_done'])} of "
            f"{format_size(event['bytes_total'])}"
        )
    if "models" in latest:
        STATE.report = ModelsReport.from_event(latest["models"])
    if status.finished:
        _finish(process)
    redraw_areas(SIDEBAR_AREAS | {"PREFERENCES"})  # the sidebar tab shows it too
    return TICK_INTERVAL_S if STATE.process is not None else None


def _finish(process: EngineProcess) -> None:
    """The outcome as the preferences' message; its log stays only when a message names it."""
    status = process.status
    failure = status.message if status.state != DONE else ""
    if status.state == DONE and "models" not in status.latest:
        failure = f"poseanything models stopped without its report: {process.log_tail()}"
        failure += f" (log: {process.log_path})"
    STATE.process, STATE.status, STATE.ok = None, "", not failure
    STATE.progress = 0.0 if failure else 1.0
    if failure:
        STATE.message = failure
    elif STATE.mode == "download":
        complete = STATE.report is not None and STATE.report.complete
        STATE.message = "download finished" + ("" if complete else "; some files are still missing")
        STATE.plan = None
    else:
        STATE.message = ""
    if str(process.log_path) not in STATE.message:
        process.log_path.unlink(missing_ok=True)
        STATE.log = ""


def wait(poll_s: float = 0.05) -> ModelsState:
    """Tick until the running process ends (tests and headless runs, where timers never fire)."""
    while STATE.process is not None:
        tick()
        time.sleep(poll_s)
    return STATE


def stop() -> None:
    """Cancel the running process and forget it (unregistering the extension)."""
    process = STATE.process
    if process is not None:
        process.cancel()
        process.wait()
        STATE.process = None
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)


def missing_weights(engine: EngineSettings) -> str | None:
    """Why the full model cannot render yet, when the last Check Models of these weights folders
    found files missing (a render would otherwise fetch gigabytes unannounced, or fail); None
    when nothing is known to be missing."""
    report = STATE.report
    if report is None or report.complete:
        return None
    if STATE.report_sources != tuple(engine.weights_options()):
        return None
    count = len(report.missing) + len(report.unknown)
    head = (
        f"the full model's weights are incomplete ({count} files missing, see Check Models in "
        "the PoseAnything preferences): "
    )
    if engine.online:
        return head + "press Download there (it shows the size first), then Generate again"
    return head + (
        "turn on Allow Online Access in Preferences > System > Network and press Download, or "
        f"put the files in {report.cache} or in the weights folders set in the preferences"
    )


def report_lines(state: ModelsState, online: bool) -> list[tuple[str, str]]:
    """What the preferences show about the full model's files, as (text, icon) lines."""
    lines: list[tuple[str, str]] = []
    report = state.report
    if report is not None:
        if report.complete:
            lines.append(
                (
                    f"All {len(report.files)} files present, {format_size(report.present_bytes)}",
                    "CHECKMARK",
                )
            )
        else:
            count = len(report.missing) + len(report.unknown)
            lines.append(
                (f"{count} files missing; present: {format_size(report.present_bytes)}", "ERROR")
            )
        for item in report.files:
            size = format_size(item.size) if item.present else "missing"
            lines.append(
                (
                    f"{size:>9}  {item.component}: {item.file}",
                    "CHECKBOX_HLT" if item.present else "CHECKBOX_DEHLT",
                )
            )
        lines += [(f"missing  {note}", "CHECKBOX_DEHLT") for note in report.unknown]
        lines.append((f"Cache: {report.cache}", "FILE_FOLDER"))
        if not report.complete and not online:
            lines.append(
                (
                    "To get them, turn on Allow Online Access in Preferences > System > Network "
                    f"and press Download, or put the files in {report.cache} (or in the weights "
                    "folders above)",
                    "INFO",
                )
            )
    if state.plan is not None:
        plan = state.plan
        lines.append(
            (
                f"Download: {len(plan.to_fetch)} of {len(plan.files)} files, "
                f"{format_size(plan.download_bytes)} of {format_size(plan.total_bytes)}",
                "IMPORT",
            )
        )
        lines += [(f"{format_size(size):>9}  {name}", "BLANK1") for name, size, _ in plan.to_fetch]
    if state.message:
        lines.append((state.message, "CHECKMARK" if state.ok else "ERROR"))
    return lines
