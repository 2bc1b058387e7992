"""Blender's side of Install Engine, Repair, Remove and Check Engine: where the engine goes (the
extension's user folder), the plan from the preferences, and the tick that moves the install on.

Blender calls ``tick`` from a timer; tests and headless scripts call ``wait`` (timers never fire
in the bpy module). A finished install becomes the preferences' Engine Python. The install
itself, and every refusal, is ``engine_install``'s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import bpy

from . import engine_install
from .engine_install import TORCH_BUILDS, EngineInstall, InstallPlan, StepRun
from .engine_process import DONE, EngineSettings
from .generate import ADDON_PACKAGE, addon_preferences
from .redraw import redraw_areas

TICK_INTERVAL_S = 0.25
ENGINE_FOLDER = "engine"


def engine_folder() -> Path:
    """Where Install Engine puts the environment: the extension's user folder (kept across
    updates of the extension); for an add-on installed with pip, Blender's user data folder."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_PACKAGE, path=ENGINE_FOLDER))
    except ValueError:  # not an extension: "poseanything" from pip (scripts, tests)
        return Path(bpy.utils.user_resource("DATAFILES", path=f"poseanything/{ENGINE_FOLDER}"))


def install_plan(preferences) -> InstallPlan:
    """The install the preferences ask for: torch build, and the Python making the venv."""
    chosen = bpy.path.abspath(preferences.install_python) if preferences.install_python else ""
    return InstallPlan(
        engine_folder(), chosen or sys.executable, TORCH_BUILDS[preferences.torch_build]
    )


def installed() -> bool:
    return engine_install.venv_python(engine_folder()).is_file()


def start_install(preferences) -> EngineInstall:
    """Install Engine (Repair when one is installed); raises ``InstallError`` saying what to do."""
    run = engine_install.start_install(install_plan(preferences), bool(bpy.app.online_access))
    _keep_ticking()
    return run


def check_engine(engine: EngineSettings) -> StepRun:
    run = engine_install.check_engine(engine)
    _keep_ticking()
    return run


def remove_engine(preferences) -> str:
    """Delete the installed environment; the Engine Python is cleared if it was that one."""
    folder = engine_folder()
    message = engine_install.remove_engine(folder)
    if preferences.engine_python and Path(preferences.engine_python).is_relative_to(folder):
        preferences.engine_python = ""
    return message


def _keep_ticking() -> None:
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_INTERVAL_S, persistent=True)


def tick() -> float | None:
    """Move the install or check on; a finished install becomes the Engine Python. Returns the
    seconds to the next call, None when idle (a timer's contract)."""
    run = engine_install.tick()
    if isinstance(run, EngineInstall) and run.status.state == DONE:
        preferences = addon_preferences()
        if preferences is not None:
            preferences.engine_python = str(run.python)
    redraw_areas({"PREFERENCES"})
    return TICK_INTERVAL_S if engine_install.STATE.run is not None else None


def wait(poll_s: float = 0.1) -> StepRun | None:
    """Tick until the running install or check ends (headless, tests); returns it."""
    run = engine_install.STATE.run
    while engine_install.STATE.run is not None:
        tick()
        time.sleep(poll_s)
    return run


def stop() -> None:
    """Cancel and forget the running install or check (unregistering the extension)."""
    engine_install.stop()
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
