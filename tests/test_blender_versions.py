"""The Blender versions the add-on claims are the ones its tests run under."""

import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.blender

ROOT = Path(__file__).resolve().parents[1]


def blenders_of_dev_py() -> dict[str, tuple[str, str]]:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import dev
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return dev.BLENDERS


def test_the_manifest_minimum_is_the_oldest_blender_tested_and_this_bpy_is_one_of_them():
    import bpy

    blenders = blenders_of_dev_py()
    oldest = min(blenders, key=lambda version: tuple(map(int, version.split("."))))
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert manifest["blender_version_min"] == f"{oldest}.0"
    running = "{}.{}".format(*bpy.app.version[:2])
    assert running in blenders
    python, wheel = blenders[running]
    assert wheel == f"bpy=={bpy.app.version_string.split()[0]}"
    assert python == "{}.{}".format(*sys.version_info[:2])
