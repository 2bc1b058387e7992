"""The full PoseAnything (Wan2.2-TI2V-5B) pipeline, set up for the memory of a real GPU.

Memory plan (``benchmarks/memory_table.py`` turns it into numbers):
- bf16 weights on CUDA (float32 only for the modulation tables and norms, as diffusers keeps Wan);
- the umT5 encoder (5.7 B parameters, about as big as the transformer) is kept in host memory,
  moved to the GPU for the one encode a prompt needs while the transformer waits in host memory,
  and moved back; its embeddings are cached per prompt;
- the VAE codes in spatial tiles as the release does (``WanVAECodec``: 34 x 34 latent tiles,
  stride 18 x 16), so its memory depends on the tile, not on the frame size;
- ``cpu_offload`` also keeps the VAE in host memory between its encodes and decodes, so the GPU
  holds the transformer and its activations only while sampling.
"""

from __future__ import annotations

import torch

from ..errors import BadInput
from ..inference.pipeline import FULL_MODEL_CONFIG, PipelineConfig, PoseAnythingPipeline
from .hub import DEFAULT_SOURCES, FullModelSources
from .official import is_wan22_5b, load_full_components


class FullModelDeviceError(BadInput):
    """The full model was asked to run where it cannot be useful."""


def check_full_model_device(device: str, allow_cpu: bool) -> None:
    """Refuse the CPU for the full model unless explicitly allowed (tests, tiny checkpoints)."""
    if device == "cpu" and not allow_cpu:
        hint = (
            "no CUDA GPU was found"
            if not torch.cuda.is_available()
            else "--device cpu was asked for"
        )
        raise FullModelDeviceError(
            f"device: the full model (Wan2.2-TI2V-5B, 5 B parameters plus a 5.7 B text encoder) "
            f"needs a CUDA GPU with at least 24 GB ({hint}); on a CPU one 81-frame window takes "
            "hours. Use the default model, run on a machine with a GPU (poseanything batch "
            "--address for a Ray cluster), or pass --allow-cpu to run it anyway."
        )


class OnDemandTextEncoder:
    """A text encoder kept in host memory, moved to ``device`` for each new prompt, cached.

    umT5-xxl is bigger than the transformer; it runs once per prompt, so it should not hold GPU
    memory while sampling, and the ``evict`` modules (the transformer) wait in host memory while
    it runs, so the two never share the GPU.
    """

    def __init__(self, encoder, device: str | torch.device, evict: tuple = ()) -> None:
        self.encoder = encoder
        self.device = torch.device(device)
        self.evict = evict
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}
        encoder.encoder.to("cpu")

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def encode(self, prompts: list[str]) -> torch.Tensor:
        key = tuple(prompts)
        if key not in self._cache:
            for module in self.evict:
                module.to("cpu")
            self.encoder.encoder.to(self.device)
            try:
                with torch.inference_mode():
                    self._cache[key] = self.encoder.encode(list(prompts)).to("cpu")
            finally:
                self.encoder.encoder.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                for module in self.evict:
                    module.to(self.device)
        return self._cache[key]


def load_full_pipeline(
    sources: FullModelSources = DEFAULT_SOURCES,
    device: str = "cuda",
    allow_cpu: bool = False,
    cpu_offload: bool = False,
    config: PipelineConfig = FULL_MODEL_CONFIG,
) -> PoseAnythingPipeline:
    """The official PoseAnything from local files (``engine.hub`` says where and how to fetch)."""
    check_full_model_device(device, allow_cpu)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, codec, text = load_full_components(sources, dtype)
    model_id = "poseanything-wan2.2-ti2v-5b" if is_wan22_5b(model) else "poseanything-official"
    pipeline = PoseAnythingPipeline(
        model,
        codec,
        OnDemandTextEncoder(text, device, evict=(model,)),
        config,
        model_id=model_id,
        device=device,
    )
    if cpu_offload:
        codec.offload(device)
    return pipeline
