"""Per-scene settings, saved with the .blend (``scene.poseanything``): what to generate, and the
state of the scene's running job (progress, status, the last result) for the panel to draw."""

import bpy

from ..engine.contract.shot import GUIDANCE_RANGE


def _is_armature(_settings: bpy.types.PropertyGroup, obj: bpy.types.Object) -> bool:
    return obj.type == "ARMATURE"


def _is_camera(_settings: bpy.types.PropertyGroup, obj: bpy.types.Object) -> bool:
    return obj.type == "CAMERA"


def _toggle_overlay(settings: bpy.types.PropertyGroup, _context: bpy.types.Context) -> None:
    from ..poseanything_blender import overlay

    overlay.refresh()


class PoseAnythingSceneSettings(bpy.types.PropertyGroup):
    armature: bpy.props.PointerProperty(
        name="Armature",
        type=bpy.types.Object,
        poll=_is_armature,
        description="The rig whose motion drives the video (empty: the active armature)",
    )
    camera: bpy.props.PointerProperty(
        name="Camera",
        type=bpy.types.Object,
        poll=_is_camera,
        description="The camera the shot is seen through (empty: the scene camera)",
    )
    use_frame_range: bpy.props.BoolProperty(
        name="Custom Frame Range",
        description="Export these frames instead of the scene's frame range",
    )
    frame_start: bpy.props.IntProperty(name="Start", default=1)
    frame_end: bpy.props.IntProperty(name="End", default=49)
    deform_only: bpy.props.EnumProperty(
        name="Deform Bones",
        items=(
            ("AUTO", "Auto", "Deform bones only for rigs with control bones, such as Rigify"),
            ("ON", "Only Deform", "Only bones that deform the mesh"),
            ("OFF", "All Bones", "Every bone, deforming or not"),
        ),
        default="AUTO",
    )
    bone_collection: bpy.props.StringProperty(
        name="Bone Collection",
        description="Only bones in this bone collection (empty: all collections)",
    )
    include_hidden: bpy.props.BoolProperty(
        name="Include Hidden Bones", description="Also export bones hidden in the viewport"
    )
    output_folder: bpy.props.StringProperty(
        name="Output Folder",
        subtype="DIR_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        default="//poseanything/",
        description="Shot folders are written here, one per scene",
    )
    reference_mode: bpy.props.EnumProperty(
        name="Reference",
        items=(
            ("RENDER", "Render First Frame", "A Workbench render of the shot's first frame"),
            (
                "IMAGE",
                "Image File",
                "An image of the subject at the shot's aspect (its alpha, if any, is the subject)",
            ),
        ),
        default="RENDER",
        description="What the subject looks like in the video's first frame",
    )
    render_background: bpy.props.BoolProperty(
        name="Render Background",
        default=True,
        description=(
            "Also render the scene without the subject through the camera at every frame: the "
            "bundled model moves the subject over it, so what the subject uncovers and the "
            "camera's parallax are the scene's own. Off: a faster export, and the first "
            "frame's background moved with the camera"
        ),
    )
    reference_image: bpy.props.StringProperty(
        name="Reference Image",
        subtype="FILE_PATH",
        options={"PATH_SUPPORTS_BLEND_RELATIVE"},
        description="The subject's first frame, when Reference is an image file",
    )
    prompt: bpy.props.StringProperty(name="Prompt", description="What the video shows")
    seed: bpy.props.IntProperty(name="Seed", min=0, description="Noise seed for the video")
    steps: bpy.props.IntProperty(
        name="Steps",
        min=0,
        soft_max=100,
        description="Sampling steps: more is slower and finer (0: the model's default)",
    )
    subject_guidance: bpy.props.FloatProperty(
        name="Subject Guidance",
        min=GUIDANCE_RANGE[0],
        max=GUIDANCE_RANGE[1],
        default=1.0,
        description="How strongly the skeleton's own motion drives the subject",
    )
    camera_guidance: bpy.props.FloatProperty(
        name="Camera Guidance",
        min=GUIDANCE_RANGE[0],
        max=GUIDANCE_RANGE[1],
        default=1.0,
        description=(
            "How strongly the scene camera's motion drives the video camera "
            "(0: a locked-off camera)"
        ),
    )
    sparse_poses: bpy.props.EnumProperty(
        name="Poses",
        items=(
            ("ALL", "Every Frame", "Every frame carries the skeleton"),
            ("KEYED", "Keyed Frames", "Only frames where the armature has keyframes"),
            ("NTH", "Every Nth Frame", "One frame in N carries the skeleton"),
        ),
        default="ALL",
        description="Which frames show the model the pose; the model fills in the others",
    )
    pose_every: bpy.props.IntProperty(
        name="Every", min=2, default=4, description="Frames from one pose to the next"
    )
    part_colors: bpy.props.BoolProperty(
        name="Part Colours",
        description="Colour the previewed skeleton by body part, as the model groups the bones",
    )
    show_overlay: bpy.props.BoolProperty(
        name="Skeleton Overlay",
        description="Draw the extracted skeleton and its parts over the armature in the viewport",
        update=_toggle_overlay,
    )
    job_progress: bpy.props.FloatProperty(subtype="FACTOR", min=0.0, max=1.0)
    job_status: bpy.props.StringProperty(name="Status")
    job_message: bpy.props.StringProperty(name="Last Result")
    job_ok: bpy.props.BoolProperty(name="Last Result Succeeded")
    job_log: bpy.props.StringProperty(name="Engine Log", subtype="FILE_PATH")


CLASSES = (PoseAnythingSceneSettings,)
