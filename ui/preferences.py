"""Extension preferences, looked up under the extension's own package name: where the engine
runs (its Python, device, an optional Ray cluster), which model it uses (the bundled default,
a custom folder, or the full official model, whose files Check Models lists and Download
fetches) and where unsaved files' outputs go."""

import bpy

from ..poseanything_blender.engine_install import TORCH_BUILDS

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
    torch_build: bpy.props.EnumProperty(
        name="Torch Build",
        items=[
            (build.name, f"{build.name} ({build.cost})", build.description)
            for build in TORCH_BUILDS.values()
        ],
        default="CPU",
        description="Which torch Install Engine downloads",
    )
    install_python: bpy.props.StringProperty(
        name="Install With",
        subtype="FILE_PATH",
        description=(
            "The Python Install Engine makes the engine's environment with (3.11 or later). "
            "Empty: Blender's own Python"
        ),
    )
    model_choice: bpy.props.EnumProperty(
        name="Model",
        items=(
            ("DEFAULT", "Default (bundled, CPU)", "The small model shipped with the engine"),
            (
                "FULL",
                "Full (PoseAnything, Wan2.2-TI2V-5B, CUDA GPU)",
                "The paper's model: 832-pixel videos; needs a CUDA GPU with 24 GB and about "
                "30 GB of weights (Check Models, Download)",
            ),
            ("CUSTOM", "Custom folder", "A model folder of your own (poseanything train)"),
        ),
        default="DEFAULT",
    )
    model_folder: bpy.props.StringProperty(
        name="Model Folder",
        subtype="DIR_PATH",
        description="A PoseAnything model folder, used when Model is Custom folder",
    )
    backend: bpy.props.EnumProperty(
        name="Backend",
        items=(
            ("TORCH", "PyTorch", "Run the model with torch"),
            (
                "ONNX",
                "ONNX Runtime",
                "Export the model once per size and run it with ONNX Runtime (often faster on "
                "a CPU; needs onnxruntime in the engine Python)",
            ),
        ),
        default="TORCH",
    )
    poseanything_weights: bpy.props.StringProperty(
        name="PoseAnything Weights",
        subtype="DIR_PATH",
        description=(
            "A folder with the PoseAnything DiT shards and their index (empty: the Hugging Face "
            "cache, repository Ryan241005/PoseAnything)"
        ),
    )
    wan_weights: bpy.props.StringProperty(
        name="Wan2.2 Weights",
        subtype="DIR_PATH",
        description=(
            "A diffusers folder of Wan2.2-TI2V-5B with vae/, text_encoder/, tokenizer/ (empty: "
            "the Hugging Face cache, repository Wan-AI/Wan2.2-TI2V-5B-Diffusers)"
        ),
    )
    cpu_offload: bpy.props.BoolProperty(
        name="CPU Offload",
        description="Keep the VAE in host memory between uses: less GPU memory, a little slower",
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
        from ..poseanything_blender.engine_process import default_engine_python

        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(self, "engine_python")
        if not self.engine_python and default_engine_python() is None:
            layout.label(
                text="Blender's Python has no torch: press Install Engine (or set a Python that "
                "has the engine)",
                icon="ERROR",
            )
        self.draw_engine(layout.box())
        layout.prop(self, "model_choice")
        if self.model_choice == "CUSTOM":
            layout.prop(self, "model_folder")
        if self.model_choice == "FULL":
            layout.prop(self, "poseanything_weights")
            layout.prop(self, "wan_weights")
            layout.prop(self, "cpu_offload")
        else:
            layout.prop(self, "backend")
        layout.prop(self, "device")
        layout.prop(self, "ray_address")
        layout.prop(self, "unsaved_output_folder")
        if self.model_choice == "FULL":
            self.draw_models(layout.box())

    def draw_engine(self, box: bpy.types.UILayout) -> None:
        """Install Engine (or Repair), Remove, Check Engine; progress, Cancel, the outcome."""
        from ..poseanything_blender import engine_install
        from ..poseanything_blender.engine_setup import installed

        state = engine_install.STATE
        box.label(text="Engine Environment", icon="CONSOLE")
        box.prop(self, "torch_build")
        box.prop(self, "install_python")
        row = box.row(align=True)
        text = "Repair Engine" if installed() else "Install Engine"
        row.operator("poseanything.install_engine", text=text, icon="IMPORT")
        row.operator("poseanything.remove_engine", icon="TRASH")
        row.operator("poseanything.check_engine", icon="VIEWZOOM")
        if not bpy.app.online_access:
            box.label(
                text="Install Engine needs Allow Online Access (System > Network)", icon="INFO"
            )
        if state.run is not None:
            status = state.run.status
            box.progress(factor=status.fraction, type="BAR", text=status.text)
            box.operator("poseanything.cancel_engine_install", icon="CANCEL")
        column = box.column(align=True)
        if state.message:
            column.label(text=state.message, icon="CHECKMARK" if state.ok else "ERROR")
        if state.report is not None and state.run is None:
            for line in state.report.lines():
                column.label(text=line)
        if state.log and not state.ok:
            column.label(text=f"Log: {state.log}", icon="TEXT")

    def draw_models(self, box: bpy.types.UILayout) -> None:
        """The full model's files: Check Models, the last answer, Download with its size."""
        from ..poseanything_blender import models

        state = models.STATE
        box.use_property_split = False
        box.label(text="Full Model Files", icon="FILE_BLEND")
        row = box.row(align=True)
        row.operator("poseanything.check_models", icon="VIEWZOOM")
        plan = state.plan
        if plan is not None and state.process is None and plan.download_bytes:
            row.operator("poseanything.download_models", text=plan.button_text, icon="IMPORT")
        else:
            row.operator("poseanything.plan_download", text="Download...", icon="IMPORT")
        if not bpy.app.online_access:
            box.label(text=models.ONLINE_ACCESS_OFF, icon="INFO")
        if state.process is not None:
            box.progress(factor=state.progress, type="BAR", text=state.status)
            box.operator("poseanything.cancel_models", icon="CANCEL")
        column = box.column(align=True)
        for text, icon in models.report_lines(state, bpy.app.online_access):
            column.label(text=text, icon=icon)
        if state.log:
            column.label(text=f"Log: {state.log}", icon="TEXT")


CLASSES = (PoseAnythingPreferences,)
