"""Redraw the editors that show progress: a tick changes data they display."""

from __future__ import annotations

from collections.abc import Collection

import bpy

SIDEBAR_AREAS = frozenset({"VIEW_3D", "SEQUENCE_EDITOR"})
"""Editors whose PoseAnything sidebar tab shows progress (a Generate job, a model download)."""


def redraw_areas(area_types: Collection[str]) -> None:
    """Tag every open area of these types for redraw (none exist in the bpy module)."""
    window_manager = bpy.context.window_manager
    if window_manager is None:
        return
    for window in window_manager.windows:
        for area in window.screen.areas:
            if area.type in area_types:
                area.tag_redraw()
