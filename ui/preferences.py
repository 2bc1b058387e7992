"""Extension preferences, looked up under the extension's own package name: where the engine
runs (its Python, model, device, an optional Ray cluster) and where unsaved files' outputs go."""

import bpy

# ``bl_ext.<repo>.poseanything`` when Blender loads the extension, ``poseanything`` from pip.
ADDON_PACKAGE = __package__.rpartition(".")[0]


class PoseAnythingPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    engine_python: bpy.props.StringProperty(
        name="Engine Python",
        subtype="FILE_PATH",
        description=(
            "The Python that runs the engine; it needs torch (pip install "
            "'poseanything[engine]'). Empty: Blender's own Python, if it has torch"
        ),
    )
    model_folder: bpy.props.StringProperty(
        name="Model",
        subtype="DIR_PATH",
        description="A PoseAnything model folder (empty: the bundled default model)",
    )
    device: bpy.props.EnumProperty(
        name="Device",
        items=(
            ("AUTO", "Auto", "A CUDA GPU if there is one, else the CPU"),
            ("CPU", "CPU", "Always the CPU"),
            ("CUDA", "CUDA", "An NVIDIA GPU"),
        ),
        default="AUTO",
    )
    ray_address: bpy.props.StringProperty(
        name="Ray Cluster",
        description=(
            "Generate All Shots renders the shots as Ray tasks on this cluster: auto (the "
            "running one), local (this machine) or an address like ray://head:10001; the shot "
            "folders must be on storage every node sees. Empty: one shot after another here"
        ),
    )
    unsaved_output_folder: bpy.props.StringProperty(
        name="Folder for Unsaved Files",
        subtype="DIR_PATH",
        description=(
            "Where shots and videos go while the .blend has not been saved and the scene's "
            "output folder is relative to it (empty: the system's temporary folder)"
        ),
    )

    def draw(self, _context: bpy.types.Context) -> None:
        from ..poseanything_blender.job import default_engine_python

        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(self, "engine_python")
        if not self.engine_python and default_engine_python() is None:
            layout.label(
                text="Blender's Python has no torch: set a Python with the engine installed",
                icon="ERROR",
            )
        layout.prop(self, "model_folder")
        layout.prop(self, "device")
        layout.prop(self, "ray_address")
        layout.prop(self, "unsaved_output_folder")


CLASSES = (PoseAnythingPreferences,)
