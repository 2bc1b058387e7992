"""Install Engine for real: venvs made by a real Python, pip in child processes, the probe.

The small installs take numpy and pillow (what the engine needs to import) from wherever this
machine's pip configuration finds them;
``test_full_install_from_the_button_then_generate_renders_with_it`` installs the whole engine
(torch CPU build and the pinned rest, from the pip cache and the index) and renders with it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from poseanything.poseanything_blender import engine_install
from poseanything.poseanything_blender.engine_install import (
    ENGINE_REQUIREMENTS,
    TORCH_PIN,
    InstallError,
    InstallPlan,
    TorchBuild,
    pip_activity,
    start_install,
    venv_python,
)
from poseanything.poseanything_blender.engine_process import (
    CANCELLED,
    DONE,
    FAILED,
    EngineSettings,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SMALL = ("numpy<2", "pillow")


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(engine_install, "STATE", engine_install.SetupState())
    yield
    engine_install.stop()


def small_plan(folder: Path, **changes) -> InstallPlan:
    """An engine without torch into ``folder/engine-env``, made by this Python."""
    plan = InstallPlan(folder / "engine-env", sys.executable, torch=None, requirements=SMALL)
    return dataclasses.replace(plan, **changes)


def leftovers(folder: Path) -> list[str]:
    """What an install left beside the environment: partial or old folders, the lock."""
    if not folder.exists():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if ".partial-" in p.name or ".old-" in p.name or p.name == engine_install.LOCK_NAME
    )


def test_the_installers_requirements_are_pyprojects():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    engine_extra = project["optional-dependencies"]["engine"]
    assert TORCH_PIN in engine_extra
    expected = [*project["dependencies"], *(r for r in engine_extra if r != TORCH_PIN)]
    assert list(ENGINE_REQUIREMENTS) == expected, (
        "copy pyproject.toml's dependencies and engine extra (torch aside) into "
        "engine_install.ENGINE_REQUIREMENTS"
    )


def test_pip_lines_become_the_progress_bars_text():
    assert pip_activity("Collecting torch==2.13.0") == "collecting torch==2.13.0"
    line = "  Downloading pillow-13.0.0-cp311-cp311-manylinux_2_28_x86_64.whl (7.1 MB)"
    assert pip_activity(line) == "downloading pillow-13.0.0 (7.1 MB)"
    line = "Processing /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert pip_activity(line) == "unpacking torch-2.13.0+cpu"
    assert pip_activity("Installing collected packages: numpy, pillow") == (
        "installing numpy, pillow"
    )
    assert pip_activity("Looking in links: /somewhere") is None


def test_install_repair_check_and_remove_a_small_engine(tmp_path):
    plan = small_plan(tmp_path / "user")
    run = start_install(plan, online=True)
    texts = set()
    while engine_install.STATE.run is not None:
        engine_install.tick()
        texts.add(run.status.text)
        time.sleep(0.05)
    assert run.status.state == DONE, run.status.message
    assert (
        engine_install.STATE.ok
        and engine_install.STATE.message == f"engine installed in {plan.target}"
    )
    assert "Step 1/4: creating the environment" in texts
    assert any(
        text.startswith("Step 2/4: installing the engine's dependencies: ") for text in texts
    )
    python = venv_python(plan.target)
    assert run.python == python and python.is_file()
    assert leftovers(plan.target.parent) == []
    log = plan.log_path.read_text()
    assert "== creating the environment" in log and "Successfully installed" in log
    # The engine imports from the environment's own copy, not from this checkout.
    where = subprocess.run(
        [python, "-c", "import poseanything.engine.contract.shot as m; print(m.__file__)"],
        capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]},
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(plan.target)
    assert run.report.engine and run.report.torch is None

    # Check Engine on it: no torch, said so.
    engine_install.check_engine(EngineSettings(python=str(python)))
    engine_install.wait(poll_s=0.05)
    assert not engine_install.STATE.ok
    assert engine_install.STATE.message.startswith(f"torch does not import in {python}")

    # Repair builds a new one beside and swaps it in; the old one's files go.
    marker = plan.target / "marker"
    marker.write_text("from the first install")
    start_install(plan, online=True)
    engine_install.wait(poll_s=0.05)
    assert engine_install.STATE.ok, engine_install.STATE.message
    assert python.is_file() and not marker.exists()
    assert leftovers(plan.target.parent) == []

    assert engine_install.remove_engine(plan.target) == f"removed {plan.target}"
    assert not plan.target.exists() and not plan.log_path.exists()
    assert leftovers(plan.target.parent) == []
    with pytest.raises(InstallError, match="no engine is installed"):
        engine_install.remove_engine(plan.target)


def test_check_engine_reports_pythons_torch_and_device():
    engine_install.check_engine(EngineSettings(python=sys.executable))
    run = engine_install.wait(poll_s=0.05)
    assert run.status.state == DONE, run.status.message
    report = engine_install.STATE.report
    assert engine_install.STATE.ok and report.python == sys.executable
    assert report.torch.startswith("2.13.0")
    assert report.device.startswith("CPU: ") or report.device.startswith("CUDA GPU: ")
    assert report.lines()[0] == f"Python {report.version}: {sys.executable}"
    assert not Path(run.log_path).exists()  # nothing to read after a good check


def wait_for_pip(run) -> None:
    """Poll until the run is inside a pip install (step 2), so Cancel hits pip itself."""
    deadline = time.monotonic() + 120
    while run.status.step < 2 or not run.process.lines:
        assert not run.poll().finished, run.status.message
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_cancel_mid_install_leaves_nothing_and_a_repair_keeps_the_old_engine(tmp_path):
    plan = small_plan(tmp_path / "user")
    run = start_install(plan, online=True)
    wait_for_pip(run)
    staging = run.staging
    assert staging.is_dir()
    pid = run.process._process.pid
    engine_install.cancel()
    engine_install.wait(poll_s=0.02)
    assert run.status.state == CANCELLED
    assert engine_install.STATE.message == "Install Engine cancelled; nothing was installed"
    assert not staging.exists() and not plan.target.exists()
    assert leftovers(plan.target.parent) == []
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # pip's whole process group is gone

    # An installed engine survives a cancelled Repair untouched.
    plan.target.mkdir()
    (plan.target / "marker").write_text("the engine before")
    run = start_install(plan, online=True)
    wait_for_pip(run)
    engine_install.cancel()
    engine_install.wait(poll_s=0.02)
    assert engine_install.STATE.message.endswith("(the engine installed before is unchanged)")
    assert (plan.target / "marker").read_text() == "the engine before"
    assert leftovers(plan.target.parent) == []


def test_install_refuses_offline_access_and_makes_nothing(tmp_path):
    plan = small_plan(tmp_path / "user")
    with pytest.raises(InstallError, match="Allow Online Access is off: turn it on in Preferences"):
        start_install(plan, online=False)
    assert not (tmp_path / "user").exists()


def test_install_refuses_an_unwritable_extension_folder(tmp_path):
    folder = tmp_path / "user"
    folder.mkdir()
    immutable = os.geteuid() == 0  # root writes anywhere chmod says not to
    if immutable:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", folder]).returncode:
            pytest.skip("running as root on a file system without chattr +i")
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(InstallError, match=f"cannot write to {folder} .*make it writable"):
            start_install(small_plan(folder), online=True)
        assert list(folder.iterdir()) == []
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", folder], check=True)
        folder.chmod(0o755)
    file_in_the_way = tmp_path / "file"
    file_in_the_way.write_text("")
    with pytest.raises(InstallError, match=f"cannot write to {file_in_the_way}"):
        start_install(small_plan(file_in_the_way), online=True)


def old_python() -> str | None:
    """A Python older than 3.11 that runs: on PATH, the system's, or one of pyenv's."""
    candidates = [shutil.which(f"python3.{minor}") for minor in (10, 9, 8)] + ["/usr/bin/python3"]
    pyenv = shutil.which("pyenv")
    if pyenv is not None:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        candidates += sorted(str(p) for p in Path(root).glob("versions/3.*/bin/python3"))
    check = "import sys; sys.exit(sys.version_info >= (3, 11))"
    for python in filter(None, candidates):
        if Path(python).is_file() and subprocess.run([python, "-c", check]).returncode == 0:
            return python
    return None


def test_install_refuses_a_python_too_old_or_missing(tmp_path):
    folder = tmp_path / "user"
    with pytest.raises(InstallError, match="does not exist; clear 'Install With'"):
        start_install(small_plan(folder, python=str(tmp_path / "python9")), online=True)
    old = old_python()
    if old is None:
        pytest.skip("no Python older than 3.11 on this machine")
    with pytest.raises(InstallError, match=r"is Python 3\.\d+\.\d+; the engine needs Python 3\.11"):
        start_install(small_plan(folder, python=old), online=True)
    assert leftovers(folder) == [] and not (folder / "engine-env").exists()


def test_install_refuses_without_the_space_it_needs(tmp_path):
    huge = TorchBuild("CPU", "https://example.invalid/cpu", 10**18, 10**18, "too big")
    with pytest.raises(InstallError, match=r"needs about 2000000000\.\d GB, .* is free"):
        start_install(small_plan(tmp_path / "user", torch=huge), online=True)
    assert leftovers(tmp_path / "user") == []


def test_a_second_install_at_once_is_refused_here_and_from_another_process(tmp_path):
    plan = small_plan(tmp_path / "user")
    run = start_install(plan, online=True)
    with pytest.raises(
        InstallError, match="Install Engine is running; wait for it or press Cancel"
    ):
        start_install(plan, online=True)
    other = subprocess.run(
        [sys.executable, "-c", SECOND_INSTALL, str(plan.target)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert other.stdout.strip().startswith("another Install Engine is running for this folder")
    engine_install.cancel()
    engine_install.wait(poll_s=0.02)
    assert run.status.state == CANCELLED and leftovers(plan.target.parent) == []


SECOND_INSTALL = """
import sys
from pathlib import Path
from poseanything.poseanything_blender.engine_install import (
    InstallError, InstallPlan, start_install
)
try:
    start_install(InstallPlan(Path(sys.argv[1]), sys.executable, torch=None), online=True)
except InstallError as error:
    print(error)
"""


def test_pip_failures_say_what_happened_with_the_log(tmp_path, monkeypatch):
    wheels = tmp_path / "no-wheels"
    wheels.mkdir()
    plan = small_plan(
        tmp_path / "user",
        requirements=("poseanything-no-such-package==1.0",),
        pip_options=("--no-index", "--find-links", str(wheels)),
    )
    start_install(plan, online=True)
    run = engine_install.wait(poll_s=0.05)
    message = engine_install.STATE.message
    assert run.status.state == FAILED and not engine_install.STATE.ok
    assert message.startswith("installing the engine's dependencies failed: ")
    assert "No matching distribution found for poseanything-no-such-package==1.0" in message
    assert message.endswith(f"(log: {plan.log_path})") and plan.log_path.is_file()
    assert leftovers(plan.target.parent) == [] and not plan.target.exists()

    # No network: the index cannot be reached (a closed local port), pip's config left out;
    # one retry, as pip names the connection error only when it retries.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in [
        name for name in os.environ if name.startswith("PIP_") and name != "PIP_CONFIG_FILE"
    ]:
        monkeypatch.delenv(name)
    offline = small_plan(
        tmp_path / "user",
        requirements=("pillow",),
        pip_options=("--index-url", "http://127.0.0.1:9/simple", "--retries", "1"),
    )
    start_install(offline, online=True)
    engine_install.wait(poll_s=0.05)
    message = engine_install.STATE.message
    assert "pip cannot reach the package index (offline?). Connect to the internet" in message
    assert message.endswith(f"(log: {offline.log_path})")
    assert leftovers(offline.target.parent) == [] and not offline.target.exists()


@pytest.fixture
def preferences(fresh_scene, tmp_path, monkeypatch):
    """The extension enabled as an add-on, Blender's user folders in ``tmp_path``."""
    import bpy

    monkeypatch.setenv("BLENDER_USER_RESOURCES", str(tmp_path / "resources"))
    system = bpy.context.preferences.system
    online_before = system.use_online_access
    system.use_online_access = False
    assert bpy.ops.preferences.addon_enable(module="poseanything") == {"FINISHED"}
    yield bpy.context.preferences.addons["poseanything"].preferences
    bpy.ops.preferences.addon_disable(module="poseanything")
    system.use_online_access = online_before


def test_the_buttons_install_cancel_and_check_in_the_extensions_folder(preferences, tmp_path):
    import bpy

    from poseanything.poseanything_blender import engine_setup

    folder = engine_setup.engine_folder()
    assert folder.is_relative_to(tmp_path / "resources")
    with pytest.raises(RuntimeError, match="Allow Online Access is off: turn it on"):
        bpy.ops.poseanything.install_engine()
    with pytest.raises(RuntimeError, match="no engine is installed"):
        bpy.ops.poseanything.remove_engine()
    assert not folder.parent.exists()

    bpy.context.preferences.system.use_online_access = True
    preferences.install_python = sys.executable
    assert bpy.ops.poseanything.install_engine() == {"FINISHED"}
    run = engine_install.STATE.run
    assert run.plan.target == folder and run.plan.torch.name == "CPU"
    with pytest.raises(RuntimeError, match="Install Engine is running; wait for it or press Canc"):
        bpy.ops.poseanything.check_engine()
    wait_for_pip(run)
    assert run.status.text.startswith("Step 2/5: installing torch (CPU build)")
    assert bpy.ops.poseanything.cancel_engine_install() == {"FINISHED"}
    engine_setup.wait(poll_s=0.02)
    assert engine_install.STATE.message == "Install Engine cancelled; nothing was installed"
    assert not folder.exists() and leftovers(folder.parent) == []
    assert preferences.engine_python == ""

    preferences.engine_python = sys.executable
    assert bpy.ops.poseanything.check_engine() == {"FINISHED"}
    engine_setup.wait(poll_s=0.05)
    assert engine_install.STATE.ok, engine_install.STATE.message
    assert engine_install.STATE.report.lines()[1].startswith("torch 2.13.0")


def test_full_install_from_the_button_then_generate_renders_with_it(
    preferences, tmp_path, monkeypatch
):
    """The whole engine (torch CPU build and the pinned rest; from the pip cache and this
    machine's index) installed by the button, then a Generate whose engine is that Python."""
    import bpy
    from rigs import build_armature, chain
    from tiny_models import tiny_model_folder

    from poseanything.engine.contract.video import read_video
    from poseanything.poseanything_blender import engine_setup
    from poseanything.poseanything_blender.job import wait

    bpy.context.preferences.system.use_online_access = True
    preferences.install_python = sys.executable
    assert bpy.ops.poseanything.install_engine() == {"FINISHED"}
    run = engine_setup.wait(poll_s=0.2)
    assert run.status.state == DONE, run.status.message
    python = venv_python(engine_setup.engine_folder())
    assert preferences.engine_python == str(python) and engine_setup.installed()
    assert run.report.python == str(python) and run.report.torch.startswith("2.13.0")

    monkeypatch.setenv("POSEANYTHING_MODEL", str(tiny_model_folder(tmp_path / "model")))
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 64, 48
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = 1, 3
    rig = build_armature("Rig", chain("arm", (0, 0, 0), (0, 0, 0.5), 3))
    rig.keyframe_insert("location", frame=1)
    rig.location.x = 0.3
    rig.keyframe_insert("location", frame=3)
    scene.poseanything.armature = rig
    scene.poseanything.steps = 2
    preferences.unsaved_output_folder = str(tmp_path / "out")
    assert bpy.ops.poseanything.generate() == {"FINISHED"}
    job = wait(scene, poll_s=0.1)
    assert job.results[0].status == "done", scene.poseanything.job_message
    strip = next(iter(scene.sequence_editor.strips))
    frames, _fps = read_video(Path(bpy.path.abspath(strip.filepath)))
    assert frames.shape == (3, 48, 64, 3)
