"""Blender add-ons our code relies on, enabled on demand."""


def ensure_rigify() -> None:
    """Enable Rigify (bundled with Blender) for its metarig operators and rig generation.

    Enabled for real (``default_set``): Rigify's register() reads its own preferences, which
    exist only then.

    ``addon_utils`` is importable only once bpy is, so it is imported here, not at the top.
    """
    # isort: off
    import bpy  # noqa: F401
    import addon_utils
    # isort: on

    if not addon_utils.check("rigify")[1]:
        addon_utils.enable("rigify", default_set=True, handle_error=None)
