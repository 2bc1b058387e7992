"""The extension zip, built with Blender's own tool, installs and works the way a user's would.

Installing happens in a child process whose user resources (preferences, extension
repositories) live in a temporary folder, set before bpy starts, so the test never touches the
real user's Blender and can check that uninstalling leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from poseanything.engine.contract.shot import read_shot

pytestmark = pytest.mark.blender

REPO_ROOT = Path(__file__).resolve().parent.parent
MODULE = "bl_ext.user_default.poseanything"

INSTALL_AND_USE = r"""
import json, sys
zip_path, shots = sys.argv[1:3]
import bpy

preferences = bpy.context.preferences
repos = [repo.module for repo in preferences.extensions.repos]
bpy.ops.extensions.package_install_files(
    filepath=zip_path, repo="user_default", enable_on_install=True
)
report = {
    "enabled": "MODULE" in preferences.addons,
    "module_file": sys.modules["MODULE"].__file__,
    "preferences": type(preferences.addons["MODULE"].preferences).__name__,
}

scene = bpy.context.scene
scene.render.resolution_x, scene.render.resolution_y = 64, 48
scene.frame_start, scene.frame_end = 1, 3
bpy.ops.object.armature_add(location=(0.0, 0.0, 0.0))
rig = bpy.context.object
rig.keyframe_insert("location", frame=1)
rig.location.x = 0.5
rig.keyframe_insert("location", frame=3)
scene.poseanything.armature = rig
scene.poseanything.output_folder = shots
report["export"] = sorted(bpy.ops.poseanything.export_shot())

bpy.ops.extensions.package_uninstall(repo_index=repos.index("user_default"), pkg_id="poseanything")
report["enabled_after_uninstall"] = "MODULE" in preferences.addons
report["operator_after_uninstall"] = hasattr(bpy.types, "POSEANYTHING_OT_export_shot")
report["settings_after_uninstall"] = hasattr(bpy.types.Scene, "poseanything")
print("REPORT " + json.dumps(report))
""".replace("MODULE", MODULE)


def load_build_tool():
    spec = importlib.util.spec_from_file_location(
        "build_extension", REPO_ROOT / "tools" / "build_extension.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "build_extension.py"), "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return Path(completed.stdout.strip())


def test_manifest_and_zip_validate_with_blenders_tool(extension_zip):
    build_tool = load_build_tool()
    assert "Success" in build_tool.validate(REPO_ROOT)
    assert "Success" in build_tool.validate(extension_zip)


def test_zip_holds_the_extension_and_none_of_the_development_files(extension_zip):
    assert extension_zip.name == "poseanything-0.1.0.zip"
    names = set(zipfile.ZipFile(extension_zip).namelist())
    for required in (
        "blender_manifest.toml",
        "__init__.py",
        "operators/__init__.py",
        "ui/__init__.py",
        "poseanything_blender/shot_export.py",
        "engine/contract/shot.py",
    ):
        assert required in names
    kept_out = ("tests/", "tools/", "benchmarks/", ".venv/", ".git/", ".ci/", "__pycache__/")
    assert not [name for name in names if any(part in name for part in kept_out)]


def test_zip_installs_enables_exports_and_uninstalls_cleanly(extension_zip, tmp_path):
    resources = tmp_path / "user_resources"
    resources.mkdir()
    shots = tmp_path / "shots"
    env = os.environ | {"BLENDER_USER_RESOURCES": str(resources)}
    completed = subprocess.run(
        [sys.executable, "-c", INSTALL_AND_USE, str(extension_zip), str(shots)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    report_line = next(line for line in completed.stdout.splitlines() if line.startswith("REPORT"))
    report = json.loads(report_line.removeprefix("REPORT "))

    assert report["enabled"]
    assert Path(report["module_file"]).is_relative_to(resources)
    assert report["preferences"] == "PoseAnythingPreferences"
    assert report["export"] == ["FINISHED"]
    shot = read_shot(shots / "Scene")
    assert shot.num_frames == 3 and (shot.width, shot.height) == (64, 48)
    assert not report["enabled_after_uninstall"]
    assert not report["operator_after_uninstall"]
    assert not report["settings_after_uninstall"]
    leftovers = [path for path in resources.rglob("*") if "poseanything" in path.name.lower()]
    assert leftovers == []
