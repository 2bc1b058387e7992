"""Shared fixtures. bpy is imported lazily so engine-only tests never pay for it."""

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def fresh_scene():
    """A factory-startup scene for every bpy test, as MolecularNodes does."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=False, app_template="")
    yield bpy.context.scene


def in_engine_python(code: str, *args: str) -> str:
    """Run ``code`` (which may import the test helpers) in the engine's Python and return what
    it prints. bpy-side tests build torch-made data (tiny models, fake checkpoints) this way:
    under Blender 4.5 and 5.2 the test's own Python has no torch, as Blender's has none."""
    from poseanything.poseanything_blender.engine_process import default_engine_python

    done = subprocess.run(
        [default_engine_python(), "-c", code, *args],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def pytest_sessionfinish(session, exitstatus):
    session.config.poseanything_exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """pytest has reported; under bpy 4.5 leave now, as the command line does (its
    interpreter's shutdown can crash or hang after a render)."""
    if "bpy" in sys.modules:
        from poseanything.poseanything_blender import blender_versions

        if blender_versions.EXIT_CAN_CRASH:
            blender_versions.exit_process(getattr(config, "poseanything_exit_status", 0))
