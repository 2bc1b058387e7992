"""The "PoseAnything" sidebar tab, in the 3D Viewport and in the Sequencer, and the job's
progress in the status bar.

The same panels appear in both editors: each panel is written once as a mixin and made into a
``bpy.types.Panel`` per editor by ``_panels_for``.
"""

import textwrap

import bpy

PANEL_PREFIX = {"VIEW_3D": "VIEW3D", "SEQUENCE_EDITOR": "SEQUENCER"}
CHARACTER_WIDTH_PX = 7
PREVIEW_SCALE = 8.0


def _job(scene):
    from ..poseanything_blender.job import job_for

    return job_for(scene)


def _wrapped_labels(layout, context, text: str, icon: str) -> None:
    """A long message as several labels that fit the sidebar's width."""
    width = max(20, context.region.width // CHARACTER_WIDTH_PX if context.region else 40)
    column = layout.column(align=True)
    for index, line in enumerate(textwrap.wrap(text, width)):
        column.label(text=line, icon=icon if index == 0 else "BLANK1")


def _default_model_chosen(context) -> bool:
    """The bundled default model reads no prompt (its text encoder never trained: its clips
    have none) and renders the warp alone (``"network": false``): seed, steps and guidance
    change nothing either."""
    from ..poseanything_blender.generate import addon_preferences

    preferences = addon_preferences(context)
    return preferences is None or preferences.model_choice == "DEFAULT"


def _draw_models_process(layout) -> None:
    """A model check or download started in the preferences, with its progress and Cancel."""
    from ..poseanything_blender import models

    state = models.STATE
    if state.process is None:
        return
    layout.progress(factor=state.progress, type="BAR", text=f"Full model: {state.status}")
    layout.operator("poseanything.cancel_models", text=f"Cancel {state.mode.title()}")


class _Sidebar:
    bl_region_type = "UI"
    bl_category = "PoseAnything"

    @staticmethod
    def settings_layout(layout):
        layout.use_property_split = True
        layout.use_property_decorate = False
        return layout


class _MainPanel(_Sidebar):
    """Generate, its progress and live preview, and the other actions."""

    bl_label = "PoseAnything"
    suffix = ""

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.poseanything
        job = _job(context.scene)
        if job is None:
            row = layout.row(align=True)
            row.scale_y = 1.5
            row.operator("poseanything.generate", icon="RENDER_ANIMATION")
            layout.operator("poseanything.generate_all", icon="SEQUENCE")
        else:
            layout.progress(factor=settings.job_progress, type="BAR", text=settings.job_status)
            layout.operator("poseanything.cancel", icon="CANCEL")
            image = job.preview_image()
            if image is not None and image.preview is not None:
                layout.template_icon(icon_value=image.preview.icon_id, scale=PREVIEW_SCALE)
        if job is None and settings.job_message:
            icon = "CHECKMARK" if settings.job_ok else "ERROR"
            _wrapped_labels(layout, context, settings.job_message, icon)
            if settings.job_log:
                layout.prop(settings, "job_log")
        _draw_models_process(layout)
        row = layout.row(align=True)
        row.operator("poseanything.export_shot", text="Export Shot Only", icon="EXPORT")
        row.operator("poseanything.open_output_folder", text="", icon="FILE_FOLDER")


class _ShotPanel(_Sidebar):
    bl_label = "Shot"
    suffix = "_shot"

    def draw(self, context: bpy.types.Context) -> None:
        scene = context.scene
        settings = scene.poseanything
        layout = self.settings_layout(self.layout)
        layout.prop(settings, "armature", text="Armature")
        if settings.armature is None:
            active = context.view_layer.objects.active
            shown = active.name if active is not None and active.type == "ARMATURE" else "none"
            layout.label(text=f"Active armature: {shown}", icon="ARMATURE_DATA")
        layout.prop(settings, "camera")
        if settings.camera is None:
            scene_camera = scene.camera.name if scene.camera is not None else "none"
            layout.label(text=f"Scene camera: {scene_camera}", icon="CAMERA_DATA")
        layout.prop(settings, "use_frame_range")
        frames = layout.column(align=True)
        if settings.use_frame_range:
            frames.prop(settings, "frame_start")
            frames.prop(settings, "frame_end", text="End")
        else:
            frames.enabled = False
            frames.prop(scene, "frame_start", text="Start")
            frames.prop(scene, "frame_end", text="End")
        size = layout.column(align=True)
        size.prop(scene.render, "resolution_x", text="Resolution X")
        size.prop(scene.render, "resolution_y", text="Y")
        size.prop(scene.render, "resolution_percentage", text="%")


class _LookPanel(_Sidebar):
    bl_label = "Prompt and Reference"
    suffix = "_look"

    def draw(self, context: bpy.types.Context) -> None:
        settings = context.scene.poseanything
        layout = self.settings_layout(self.layout)
        prompt = layout.column()
        prompt.prop(settings, "prompt")
        if _default_model_chosen(context):
            prompt.enabled = False
            prompt.label(text="The default model reads no prompt; the full model does", icon="INFO")
        layout.prop(settings, "reference_mode")
        if settings.reference_mode == "IMAGE":
            layout.prop(settings, "reference_image", text="Image")
        else:
            layout.prop(settings, "render_background")


class _SamplingPanel(_Sidebar):
    bl_label = "Sampling"
    suffix = "_sampling"

    def draw(self, context: bpy.types.Context) -> None:
        settings = context.scene.poseanything
        layout = self.settings_layout(self.layout)
        sampling = layout.column()
        sampling.prop(settings, "seed")
        sampling.prop(settings, "steps")
        column = sampling.column(align=True)
        column.prop(settings, "subject_guidance", text="Guidance Subject")
        column.prop(settings, "camera_guidance", text="Camera")
        if _default_model_chosen(context):
            sampling.enabled = False
            _wrapped_labels(
                sampling,
                context,
                "The default model renders the warp alone: seed, steps and guidance change "
                "nothing; a custom or the full model reads them",
                "INFO",
            )
        layout.prop(settings, "sparse_poses")
        if settings.sparse_poses == "NTH":
            layout.prop(settings, "pose_every")


class _SkeletonPanel(_Sidebar):
    """Which bones make the skeleton, and ways to see it before generating."""

    bl_label = "Skeleton"
    suffix = "_skeleton"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        settings = context.scene.poseanything
        layout = self.settings_layout(self.layout)
        layout.prop(settings, "deform_only")
        if settings.armature is not None:
            layout.prop_search(
                settings, "bone_collection", settings.armature.data, "collections_all"
            )
        else:
            layout.prop(settings, "bone_collection")
        layout.prop(settings, "include_hidden")
        layout.prop(settings, "show_overlay")
        layout.prop(settings, "part_colors")
        layout.operator("poseanything.preview_skeleton", icon="ARMATURE_DATA")


class _OutputPanel(_Sidebar):
    bl_label = "Output"
    suffix = "_output"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.settings_layout(self.layout)
        layout.prop(context.scene.poseanything, "output_folder")


PANELS = (_MainPanel, _ShotPanel, _LookPanel, _SamplingPanel, _SkeletonPanel, _OutputPanel)


def _panels_for(space_type: str) -> tuple[type, ...]:
    """Every panel of the tab, as ``bpy.types.Panel`` classes for one editor."""
    prefix = PANEL_PREFIX[space_type]
    parent = f"{prefix}_PT_poseanything"
    classes = []
    for mixin in PANELS:
        name = f"{parent}{mixin.suffix}"
        attributes = {"bl_space_type": space_type, "bl_idname": name}
        if mixin is not _MainPanel:
            attributes["bl_parent_id"] = parent
        classes.append(type(name, (mixin, bpy.types.Panel), attributes))
    return tuple(classes)


def draw_status_bar(self, context: bpy.types.Context) -> None:
    """The running job's progress in the status bar, beside Blender's own jobs."""
    if _job(context.scene) is None:
        return
    settings = context.scene.poseanything
    self.layout.progress(
        factor=settings.job_progress, type="RING", text=f"PoseAnything: {settings.job_status}"
    )


CLASSES = (*_panels_for("VIEW_3D"), *_panels_for("SEQUENCE_EDITOR"))
