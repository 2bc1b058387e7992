"""Extension preferences, looked up under the extension's own package name."""

import bpy

# ``bl_ext.<repo>.poseanything`` when Blender loads the extension, ``poseanything`` from pip.
ADDON_PACKAGE = __package__.rpartition(".")[0]


class PoseAnythingPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    unsaved_output_folder: bpy.props.StringProperty(
        name="Folder for Unsaved Files",
        subtype="DIR_PATH",
        description=(
            "Where shots go while the .blend has not been saved and the scene's output folder "
            "is relative to it (empty: the system's temporary folder)"
        ),
    )

    def draw(self, _context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "unsaved_output_folder")


CLASSES = (PoseAnythingPreferences,)
