"""Shared fixtures. bpy is imported lazily so engine-only tests never pay for it."""

import pytest


@pytest.fixture
def fresh_scene():
    """A factory-startup scene for every bpy test, as MolecularNodes does."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=False, app_template="")
    yield bpy.context.scene
