"""The add-on's side of the full model: the model choice in the preferences becomes engine
options; Check Models runs ``poseanything models --json`` as an engine process and shows what is
present and missing; Download shows the size first and needs Blender's "Allow Online Access".

No test contacts a host: Check Models reads a temporary Hugging Face cache with tiny fake
official files (network off), and the Download plan is the engine's output replayed from
``data/models_plan.jsonl`` by a stand-in engine Python (a shell script that prints it).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from conftest import in_engine_python
from rigs import build_armature, chain

from poseanything.engine.checkpoints.hub import DIT_INDEX, DIT_SHARDS, POSEANYTHING_REPO, WAN_REPO
from poseanything.poseanything_blender.engine_process import default_engine_python

pytestmark = pytest.mark.blender

PLAN_FIXTURE = Path(__file__).parent / "data" / "models_plan.jsonl"


@pytest.fixture
def preferences(fresh_scene, monkeypatch):
    """The extension enabled as an add-on (so it has preferences), online access off."""
    import bpy

    from poseanything.poseanything_blender import models

    system = bpy.context.preferences.system
    online_before = system.use_online_access
    system.use_online_access = False
    assert bpy.ops.preferences.addon_enable(module="poseanything") == {"FINISHED"}
    prefs = bpy.context.preferences.addons["poseanything"].preferences
    prefs.engine_python = default_engine_python()
    monkeypatch.setattr(models, "STATE", models.ModelsState())
    yield prefs
    bpy.ops.preferences.addon_disable(module="poseanything")
    system.use_online_access = online_before


def test_each_model_choice_becomes_the_engines_options(preferences, tmp_path):
    import bpy

    from poseanything.poseanything_blender.engine_process import ModelsRequest
    from poseanything.poseanything_blender.generate import engine_options

    scene = bpy.context.scene

    def options() -> list[str]:
        return engine_options(scene, preferences).settings("python").options()

    assert preferences.model_choice == "DEFAULT"
    assert options() == ["--progress", "json", "--device", "auto"]
    preferences.backend = "ONNX"
    preferences.device = "CPU"
    assert options() == ["--progress", "json", "--device", "cpu", "--backend", "onnx"]

    preferences.model_folder = str(tmp_path / "mine")
    assert "--model" not in options()  # the folder counts only when Custom folder is chosen
    preferences.model_choice = "CUSTOM"
    assert options()[4:] == ["--model", str(tmp_path / "mine"), "--backend", "onnx"]

    preferences.model_choice = "FULL"
    assert options()[4:] == ["--full"]  # ONNX Runtime is the default model's; Full is torch
    preferences.poseanything_weights = str(tmp_path / "dit")
    preferences.wan_weights = str(tmp_path / "wan")
    preferences.cpu_offload = True
    weights = [
        "--poseanything-weights",
        str(tmp_path / "dit"),
        "--wan-weights",
        str(tmp_path / "wan"),
    ]
    assert options()[4:] == ["--full", *weights, "--cpu-offload"]

    # --online only when Blender allows online access.
    bpy.context.preferences.system.use_online_access = True
    assert bpy.app.online_access and options()[-1] == "--online"
    settings = engine_options(scene, preferences).settings("python")
    models_argv = ModelsRequest("plan", settings).argv()
    assert models_argv[3:] == ["models", "--json", *weights, "--plan"]
    assert ModelsRequest("check", settings).argv()[-1] == str(tmp_path / "wan")


@pytest.fixture
def half_cache(tmp_path, monkeypatch) -> Path:
    """A Hugging Face cache with the tiny official PoseAnything checkpoint and no Wan2.2 files;
    the engine child inherits the environment, network off."""
    cache = tmp_path / "hf" / "hub"
    write = (
        "import sys; from fake_full_model import POSEANYTHING_REPO, official_tensors, snapshot; "
        "from official_parity_cases import write_checkpoint; "
        "from pathlib import Path; folder = snapshot(Path(sys.argv[1]), POSEANYTHING_REPO); "
        "write_checkpoint(folder, official_tensors(), index=True)"
    )
    in_engine_python(write, str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_check_models_lists_present_and_missing_files_with_sizes(preferences, half_cache):
    import bpy

    from poseanything.engine.checkpoints.hub import format_size
    from poseanything.poseanything_blender import models
    from poseanything.poseanything_blender.job import job_for

    preferences.model_choice = "FULL"
    assert bpy.ops.poseanything.check_models() == {"FINISHED"}
    assert models.STATE.process is not None and models.STATE.status == "checking the model files"
    with pytest.raises(RuntimeError, match="poll"):
        bpy.ops.poseanything.check_models()  # one models process at a time
    state = models.wait()
    assert state.ok and state.message == "" and state.log == ""
    report = state.report
    assert report.cache == str(half_cache) and not report.complete
    present = {item.file: item.size for item in report.files if item.present}
    folder = half_cache / f"models--{POSEANYTHING_REPO.replace('/', '--')}" / "snapshots"
    for name in (DIT_INDEX, *DIT_SHARDS):
        assert present[name] == next(folder.glob(f"*/{name}")).stat().st_size > 0
    missing = {item.file for item in report.missing}
    assert {"vae/diffusion_pytorch_model.safetensors", "tokenizer/tokenizer_config.json"} <= missing

    lines = [text for text, _icon in models.report_lines(state, online=False)]
    shard_size = format_size(present[DIT_SHARDS[0]])
    assert any(shard_size in line and DIT_SHARDS[0] in line for line in lines)
    assert any(line.strip().startswith("missing") and "vae/config.json" in line for line in lines)
    assert lines[0].endswith(f"present: {format_size(report.present_bytes)}")
    hint = lines[-1]
    assert "Allow Online Access in Preferences > System > Network" in hint
    assert str(half_cache) in hint

    # Generate with these weights missing and online access off: said at once, nothing starts.
    build_armature("Rig", chain("arm", (0, 0, 0), (0, 0, 0.5), 3))
    with pytest.raises(RuntimeError, match="incomplete .*turn on Allow Online Access in Pref"):
        bpy.ops.poseanything.generate()
    bpy.context.preferences.system.use_online_access = True  # no unannounced 24 GB either
    with pytest.raises(RuntimeError, match="press Download there .*shows the size first"):
        bpy.ops.poseanything.generate()
    assert job_for(bpy.context.scene) is None


def test_a_download_that_cannot_reach_the_hub_says_why(preferences, half_cache):
    """Online access on in Blender, but the hub is unreachable (offline mode here): the
    engine's own message reaches the preferences; nothing was fetched."""
    import bpy

    from poseanything.poseanything_blender import models

    preferences.model_choice = "FULL"
    bpy.context.preferences.system.use_online_access = True
    assert bpy.ops.poseanything.plan_download() == {"FINISHED"}
    state = models.wait()
    assert not state.ok and state.plan is None
    assert state.message.startswith(f"cannot list {POSEANYTHING_REPO} on the Hugging Face hub")
    assert "check the network" in state.message
    assert models.report_lines(state, online=True)[-1] == (state.message, "ERROR")


def test_download_refuses_while_online_access_is_off(preferences):
    import bpy

    from poseanything.poseanything_blender import models
    from poseanything.poseanything_blender.generate import engine_options

    preferences.model_choice = "FULL"
    assert not bpy.app.online_access
    for operator in (bpy.ops.poseanything.plan_download, bpy.ops.poseanything.download_models):
        with pytest.raises(RuntimeError, match="Allow Online Access is off"):
            operator()
    settings = engine_options(bpy.context.scene, preferences).settings(default_engine_python())
    with pytest.raises(models.ModelsError, match="Preferences > System > Network"):
        models.start("plan", settings)
    assert models.STATE.process is None


FIRST_FILE = {
    "event": "file",
    "file": f"{POSEANYTHING_REPO}/{DIT_SHARDS[0]}",
    "index": 1,
    "count": 9,
    "bytes_done": 4_993_950_944,
    "bytes_total": 24_369_221_451,
}


def replaying_engine(folder: Path) -> Path:
    """A stand-in engine Python that prints the recorded ``models --json`` output: with
    ``--download``, the plan and the first file's event, then it keeps downloading (sleeps)."""
    replay = folder / "engine-python"
    replay.write_text(
        "#!/bin/sh\n"
        f"head -n 1 '{PLAN_FIXTURE}'\n"
        'case "$*" in\n'
        f"  *--download*) echo '{json.dumps(FIRST_FILE)}'; exec sleep 60;;\n"
        f"  *) tail -n 1 '{PLAN_FIXTURE}';;\n"
        "esac\n"
    )
    replay.chmod(replay.stat().st_mode | stat.S_IEXEC)
    return replay


def test_the_plans_sizes_become_the_download_button(preferences, tmp_path):
    """The engine's plan output (replayed) fills the confirmation: total and file list; the
    download then shows its progress and can be cancelled."""
    import bpy

    from poseanything.poseanything_blender import models

    preferences.engine_python = str(replaying_engine(tmp_path))
    preferences.model_choice = "FULL"
    bpy.context.preferences.system.use_online_access = True
    with pytest.raises(RuntimeError, match="press Download first"):
        bpy.ops.poseanything.download_models()
    assert bpy.ops.poseanything.plan_download() == {"FINISHED"}
    state = models.wait()
    assert state.ok, state.message
    recorded = json.loads(PLAN_FIXTURE.read_text().splitlines()[0])
    plan = state.plan
    assert plan.total_bytes == recorded["total_bytes"] == sum(size for _, size, _ in plan.files)
    assert plan.download_bytes == 24_369_221_451 and plan.button_text == "Download 24.4 GB"
    assert len(plan.to_fetch) == 9 and len(plan.files) == 14
    lines = [text for text, _icon in models.report_lines(state, online=True)]
    assert "Download: 9 of 14 files, 24.4 GB of 24.4 GB" in lines
    assert any(f"{WAN_REPO}/vae/diffusion_pytorch_model.safetensors" in line for line in lines)
    assert not any("Allow Online Access" in line for line in lines)
    assert bpy.ops.poseanything.download_models.poll()

    assert bpy.ops.poseanything.download_models("EXEC_DEFAULT") == {"FINISHED"}
    while "files" not in models.STATE.status:
        models.tick()
    assert models.STATE.status == "1/9 files, 5.0 GB of 24.4 GB"
    assert round(models.STATE.progress, 2) == 0.2
    assert not bpy.ops.poseanything.plan_download.poll()  # one models process at a time
    assert bpy.ops.poseanything.cancel_models() == {"FINISHED"}
    state = models.wait()
    assert not state.ok and state.process is None
    assert state.message == "download cancelled; the files fetched so far stay in the cache"


def test_generate_with_the_full_model_on_a_cpu_shows_the_engines_message(preferences, tmp_path):
    import bpy

    from poseanything.poseanything_blender.job import wait

    scene = bpy.context.scene
    build_armature("Rig", chain("arm", (0, 0, 0), (0, 0, 0.5), 3))
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    scene.frame_start, scene.frame_end = 1, 3
    scene.poseanything.output_folder = str(tmp_path)
    preferences.model_choice = "FULL"
    assert bpy.ops.poseanything.generate() == {"FINISHED"}
    job = wait(scene, poll_s=0.05)
    message = scene.poseanything.job_message
    assert job.results[0].status == "failed" and not scene.poseanything.job_ok
    assert "needs a CUDA GPU" in message and "--allow-cpu" in message
    assert not list(tmp_path.rglob("*.mp4"))
