"""The "PoseAnything" tab in the 3D Viewport sidebar."""

import bpy


class VIEW3D_PT_poseanything(bpy.types.Panel):
    bl_label = "PoseAnything"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "PoseAnything"

    def draw(self, context: bpy.types.Context) -> None:
        settings = context.scene.poseanything
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False

        layout.prop(settings, "armature")
        layout.prop(settings, "camera")
        layout.prop(settings, "use_frame_range")
        frames = layout.column(align=True)
        frames.active = settings.use_frame_range
        frames.prop(settings, "frame_start")
        frames.prop(settings, "frame_end")
        layout.prop(settings, "reference_image")
        layout.prop(settings, "prompt")
        layout.prop(settings, "seed")
        layout.prop(settings, "output_folder")
        layout.operator("poseanything.export_shot", icon="EXPORT")


class VIEW3D_PT_poseanything_bones(bpy.types.Panel):
    bl_label = "Bones"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "PoseAnything"
    bl_parent_id = "VIEW3D_PT_poseanything"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        settings = context.scene.poseanything
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(settings, "deform_only")
        if settings.armature is not None:
            layout.prop_search(
                settings, "bone_collection", settings.armature.data, "collections_all"
            )
        else:
            layout.prop(settings, "bone_collection")
        layout.prop(settings, "include_hidden")


CLASSES = (VIEW3D_PT_poseanything, VIEW3D_PT_poseanything_bones)
