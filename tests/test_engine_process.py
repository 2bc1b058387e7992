"""The engine child process runner (no bpy): command lines, the engine Python, failures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from poseanything.poseanything_blender.engine_process import (
    FAILED,
    BatchRequest,
    EngineProcess,
    EngineSettings,
    EngineSetupError,
    RenderRequest,
    default_engine_python,
    resolve_engine_python,
)


def test_engine_python_defaults_to_this_python_with_torch_and_names_the_fix(tmp_path):
    assert default_engine_python() == sys.executable  # the test venv has torch
    assert resolve_engine_python("") == sys.executable
    with pytest.raises(EngineSetupError, match="does not exist; press Install Engine"):
        resolve_engine_python(str(tmp_path / "python3"))


def test_command_lines_for_render_and_ray_batch(tmp_path):
    engine = EngineSettings(python="py", model="/models/m", device="cpu", steps=3)
    render = RenderRequest(tmp_path / "shot", tmp_path / "v.mp4", engine).argv()
    assert render[:5] == ["py", "-m", "poseanything.engine.cli", "render", str(tmp_path / "shot")]
    assert render[render.index("--steps") + 1] == "3" and "--model" in render
    assert render[render.index("--progress") + 1] == "json"
    batch = BatchRequest((tmp_path / "a", tmp_path / "b"), tmp_path / "out", "local", engine)
    argv = batch.argv()
    assert argv[3:6] == ["batch", str(tmp_path / "a"), str(tmp_path / "b")]
    assert argv[argv.index("--ray") + 1] == "local"
    assert argv[argv.index("--out-dir") + 1] == str(tmp_path / "out")


def test_an_engine_that_dies_without_a_word_is_reported_with_its_log(tmp_path):
    """Any executable can stand in for a broken engine Python: ``false`` exits 1 silently."""
    false = next(Path(p) / "false" for p in ("/bin", "/usr/bin") if (Path(p) / "false").exists())
    request = RenderRequest(tmp_path, tmp_path / "v.mp4", EngineSettings(python=str(false)))
    status = EngineProcess(request, tmp_path / "engine.log").wait(poll_s=0.01)
    assert status.state == FAILED
    assert status.message.startswith("the engine exited with code 1")
    assert f"(log: {tmp_path / 'engine.log'})" in status.message


def test_an_engine_python_without_the_engine_points_at_install_engine(tmp_path):
    """A Python of its own (a bare venv) that has neither torch nor the engine."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "bare"], check=True)
    bare = tmp_path / "bare" / "bin" / "python"
    request = RenderRequest(tmp_path, tmp_path / "v.mp4", EngineSettings(python=str(bare)))
    status = EngineProcess(request, tmp_path / "engine.log").wait(poll_s=0.01)
    assert status.state == FAILED
    assert status.message.startswith(f"the engine Python {bare} has no module 'poseanything'")
    assert "press Install Engine" in status.message
    assert f"(log: {tmp_path / 'engine.log'})" in status.message


def test_an_engine_python_that_cannot_start_says_what_to_set(tmp_path):
    missing = tmp_path / "no-python"
    request = RenderRequest(tmp_path, tmp_path / "v.mp4", EngineSettings(python=str(missing)))
    with pytest.raises(EngineSetupError, match="cannot start the engine Python"):
        EngineProcess(request, tmp_path / "engine.log")
