"""Per-scene export settings, saved with the .blend (``scene.poseanything``)."""

import bpy


def _is_armature(_settings: bpy.types.PropertyGroup, obj: bpy.types.Object) -> bool:
    return obj.type == "ARMATURE"


def _is_camera(_settings: bpy.types.PropertyGroup, obj: bpy.types.Object) -> bool:
    return obj.type == "CAMERA"


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
        default="//poseanything/",
        description="Shot folders are written here, one per scene",
    )
    reference_image: bpy.props.StringProperty(
        name="Reference Image",
        subtype="FILE_PATH",
        description="The subject's first frame (empty: a Workbench render of the first frame)",
    )
    prompt: bpy.props.StringProperty(name="Prompt", description="What the video shows")
    seed: bpy.props.IntProperty(name="Seed", min=0, description="Noise seed for the video")


CLASSES = (PoseAnythingSceneSettings,)
