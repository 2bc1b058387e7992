"""Every panel's and the preferences' draw(), under this Blender, in the states a user sees.

``ui_recording.RecordingLayout`` stands in for the window the bpy module lacks and fails on
anything this Blender's UILayout would not draw: a property path the data lacks, an icon name,
a layout function or parameter, an operator that is not registered.
"""

from __future__ import annotations

import pytest
from conftest import in_engine_python
from rigs import build_armature, chain
from ui_recording import RecordingLayout, draw

pytestmark = pytest.mark.blender


@pytest.fixture
def addon(fresh_scene, tmp_path, monkeypatch):
    """The add-on enabled in a factory scene with a rig; outputs in tmp_path; network off."""
    import bpy

    from poseanything.poseanything_blender import models

    system = bpy.context.preferences.system
    online_before = system.use_online_access
    system.use_online_access = False
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "STATE", models.ModelsState())
    assert bpy.ops.preferences.addon_enable(module="poseanything") == {"FINISHED"}
    rig = build_armature("rig", chain("arm", (0, 0, 0), (0, 0, 0.5), 3))
    bpy.context.view_layer.objects.active = rig
    fresh_scene.poseanything.output_folder = str(tmp_path / "out")
    yield bpy.context.preferences.addons["poseanything"].preferences
    models.stop()
    bpy.ops.preferences.addon_disable(module="poseanything")
    system.use_online_access = online_before


def draw_everything(preferences) -> dict[str, RecordingLayout]:
    """Each sidebar panel (3D Viewport and Sequencer), the status bar and the preferences."""
    import bpy

    from poseanything.ui import panels
    from poseanything.ui.preferences import PoseAnythingPreferences

    context = bpy.context
    drawn = {cls.bl_idname: draw(cls.draw, cls, context) for cls in panels.CLASSES}
    drawn["status bar"] = draw(panels.draw_status_bar, None, context)
    drawn["preferences"] = draw(PoseAnythingPreferences.draw, preferences, context)
    return drawn


def all_texts(drawn: dict[str, RecordingLayout]) -> str:
    return "\n".join(text for layout in drawn.values() for text in layout.texts())


def test_idle_with_every_setting_branch_drawn(addon):
    import bpy

    settings = bpy.context.scene.poseanything
    idle = draw_everything(addon)
    assert len(idle) == 14  # six panels in two editors, the status bar, the preferences
    assert idle["status bar"].drawn == []
    assert "generate" in str([d.args for d in idle["VIEW3D_PT_poseanything"].walk()])
    greyed = all_texts(idle)  # the default model: no prompt, no sampling settings
    assert "The default model reads no prompt" in greyed
    assert "The default model renders the warp" in greyed  # wrapped to the sidebar
    assert "render_background" in {p for layout in idle.values() for p in layout.props()}

    settings.armature = bpy.data.objects["rig"]
    settings.camera = bpy.context.scene.camera
    settings.use_frame_range = True
    settings.reference_mode = "IMAGE"
    settings.sparse_poses = "NTH"
    settings.job_message = "Scene: failed while loading the model; see the log"
    settings.job_log = "/nowhere/engine.log"
    settings.job_ok = False
    addon.model_choice = "CUSTOM"
    branches = draw_everything(addon)
    props = {p for layout in branches.values() for p in layout.props()}
    assert {"frame_end", "reference_image", "pose_every", "job_log", "model_folder"} <= props
    search = [d for d in branches["VIEW3D_PT_poseanything_skeleton"].walk()]
    assert any(d.function == "prop_search" for d in search)


def test_engine_not_installed(addon, monkeypatch):
    """No engine Python chosen and none found: the preferences say so."""
    from poseanything.poseanything_blender import engine_process

    addon.engine_python = ""
    monkeypatch.delenv(engine_process.ENGINE_PYTHON_VARIABLE, raising=False)
    if engine_process.default_engine_python() is not None:  # bpy 5.0's venv has torch
        monkeypatch.setattr(engine_process, "default_engine_python", lambda: None)
    assert "has no torch" in all_texts(draw_everything(addon))


def test_full_model_chosen_while_checking_and_with_its_files_missing(addon):
    from poseanything.poseanything_blender import models

    addon.model_choice = "FULL"
    chosen = draw_everything(addon)
    assert {"poseanything_weights", "wan_weights", "cpu_offload"} <= set(
        chosen["preferences"].props()
    )
    assert "Online Access" in all_texts(chosen)

    import bpy

    assert bpy.ops.poseanything.check_models() == {"FINISHED"}
    checking = draw_everything(addon)
    assert any(d.function == "progress" for d in checking["preferences"].walk())
    assert "Full model:" in all_texts(checking)  # the sidebar shows the check too
    models.wait()
    missing = all_texts(draw_everything(addon))
    assert models.STATE.report is not None and "files missing" in missing, missing


def test_running_and_finished(addon, tmp_path, monkeypatch):
    """A real Generate with the tiny model: drawn while the engine runs, then when done."""
    import bpy

    from poseanything.poseanything_blender.job import wait

    save = "import sys, tiny_models; print(tiny_models.tiny_model_folder(sys.argv[1]))"
    monkeypatch.setenv("POSEANYTHING_MODEL", in_engine_python(save, str(tmp_path)).split()[-1])
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    scene.frame_start, scene.frame_end = 1, 2
    scene.poseanything.steps = 1
    assert bpy.ops.poseanything.generate() == {"FINISHED"}
    running = draw_everything(addon)
    assert running["status bar"].drawn and running["status bar"].drawn[0].function == "progress"
    assert "poseanything.cancel" in str([d.args for d in running["VIEW3D_PT_poseanything"].walk()])
    wait(scene, poll_s=0.05)
    done = all_texts(draw_everything(addon))
    assert scene.poseanything.job_message and scene.poseanything.job_message[:20] in done


def test_engine_box_not_installed_installing_failed_installed_and_checked(
    addon, tmp_path, monkeypatch
):
    """The preferences' engine box through real installs into a temporary user folder: the
    button, the bar with its step and Cancel, a pip failure with its log, then Repair and the
    check's report once an engine is installed."""
    import sys
    from dataclasses import replace

    import bpy

    from poseanything.poseanything_blender import engine_install, engine_setup

    monkeypatch.setenv("BLENDER_USER_RESOURCES", str(tmp_path / "resources"))
    monkeypatch.setattr(engine_install, "STATE", engine_install.SetupState())
    state = engine_install.STATE

    def engine_box() -> list[str]:
        return draw_everything(addon)["preferences"].texts()

    offline = engine_box()
    assert "Install Engine" in offline and "Repair Engine" not in offline
    assert "Install Engine needs Allow Online Access (System > Network)" in offline

    bpy.context.preferences.system.use_online_access = True
    addon.install_python = sys.executable
    assert bpy.ops.poseanything.install_engine() == {"FINISHED"}
    installing = draw_everything(addon)["preferences"]
    bar = next(d for d in installing.walk() if d.function == "progress")
    assert bar.kwargs["text"].startswith("Step 1/5: ")
    assert "poseanything.cancel_engine_install" in str([d.args for d in installing.walk()])
    assert bpy.ops.poseanything.cancel_engine_install() == {"FINISHED"}
    engine_setup.wait(poll_s=0.02)
    assert "Install Engine cancelled; nothing was installed" in engine_box()

    small = replace(
        engine_setup.install_plan(addon),
        torch=None,
        requirements=(
            "numpy<2; python_version < '3.13'",
            "numpy>=2.1; python_version >= '3.13'",
            "pillow",
        ),
    )
    engine_install.start_install(replace(small, requirements=("no-such-package==1",)), True)
    engine_setup.wait(poll_s=0.05)
    failed = engine_box()
    assert not state.ok and state.message in failed and f"Log: {state.log}" in failed

    engine_install.start_install(small, True)
    engine_setup.wait(poll_s=0.05)
    assert state.ok, state.message
    installed = engine_box()
    assert "Repair Engine" in installed and state.message in installed
    assert state.report is not None and state.report.lines()[0] in installed
    assert addon.engine_python == str(engine_install.venv_python(engine_setup.engine_folder()))
