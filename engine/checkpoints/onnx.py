"""ONNX Runtime backend for the default model: the denoiser and the codec, exported once per size.

``use_onnx_runtime(pipeline)`` swaps the pipeline's transformer and codec for ONNX Runtime
sessions with the same calls, so the sampler, guidance and windows stay the torch code.

- The denoiser is exported with ``torch.onnx.export`` (the torch.export-based exporter) per
  (latent frames, height, width), with the batch (the guidance anchors) left dynamic, in two
  variants: without part attention, and with it for a given part count (PTCM runs in the first
  steps only; its masks and correspondence are inputs). The part correspondence read-out
  (``first_part_attention``, once per window) stays in torch.
- The codec's ``encode`` and ``decode`` are exported per (height, width), batch and frame count
  dynamic (the default codec codes frames independently).
- Exports are cached in ``$POSEANYTHING_ONNX_CACHE``, else ``$XDG_CACHE_HOME/poseanything/onnx``
  (``~/.cache/poseanything/onnx``), under a name that includes a hash of the weights and of
  the model code, so a retrained or updated model never reuses a stale graph. Files are
  written under a temporary name first.
- Sessions ask for CUDA first, then the CPU; ``providers`` tells which one was taken (the CUDA
  provider needs CUDA and cuDNN libraries; without them ONNX Runtime falls back to the CPU).
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..contract.files import temporary_sibling
from ..model.ptcm import PartConditioning
from ..model.transformer import rotary_tables

CACHE_ENV_VAR = "POSEANYTHING_ONNX_CACHE"
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
OPSET = 23
"""RMSNormalization (the q/k norms) is an ONNX operator from opset 23 on."""


def onnx_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "poseanything" / "onnx"


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "--backend onnx needs ONNX Runtime: pip install onnxruntime-gpu (or onnxruntime) "
            "onnx onnxscript"
        ) from error
    return onnxruntime


def make_session(path: Path, providers: tuple[str, ...] = PREFERRED_PROVIDERS, threads=None):
    """An inference session on the first of ``providers`` that loads (check ``get_providers``).

    ``threads`` defaults to torch's thread count, so both backends use the same CPU budget.
    """
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    ort.set_default_logger_severity(3)  # a missing CUDA library is a fallback here, not an error
    available = set(ort.get_available_providers())
    wanted = [name for name in providers if name in available] or ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=wanted)


def export_key(module: nn.Module) -> str:
    """Short hash of what an export depends on: the weights (names, shapes, values), the source
    of every module class in the tree, and the torch version."""
    digest = hashlib.sha256(torch.__version__.encode())
    for source in sorted({inspect.getfile(type(child)) for child in module.modules()}):
        digest.update(Path(source).read_bytes())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def export_onnx(module: nn.Module, example: tuple, names: list[str], dynamic: dict, path: Path):
    """Export ``module`` at ``example`` inputs to ``path`` atomically (outputs: ``output``).

    Exporting traces through ``rotary_tables``' cache with fake tensors, so the cache is cleared
    around it: a traced entry left behind would poison later eager calls of the same shape.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_sibling(path, extension=".onnx")
    rotary_tables.cache_clear()
    try:
        with torch.inference_mode(False), torch.no_grad():
            example = tuple(x.clone() for x in example)
            torch.onnx.export(
                module,
                example,
                temp,
                input_names=names,
                output_names=["output"],
                dynamic_shapes=tuple(dynamic.get(name) for name in names),
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        os.replace(temp, path)
    finally:
        rotary_tables.cache_clear()
        temp.unlink(missing_ok=True)
    return path


class _Plain(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, latents, pose_latents, timestep, text_embeds):
        return self.model(latents, pose_latents, timestep, text_embeds)


class _WithParts(_Plain):
    def forward(self, latents, pose_latents, timestep, text_embeds, masks, correspondence):
        parts = PartConditioning(masks, correspondence)
        return self.model(latents, pose_latents, timestep, text_embeds, ptcm=parts)


class _Call(nn.Module):
    """A module whose forward is one method of another (``codec.encode`` / ``codec.decode``)."""

    def __init__(self, owner: nn.Module, method: str) -> None:
        super().__init__()
        self.owner = owner
        self.method = method

    def forward(self, x):
        return getattr(self.owner, self.method)(x)


class _Runtime:
    """Exports on first use and keeps one session per cache file."""

    def __init__(self, module: nn.Module, kind: str, providers: tuple[str, ...]) -> None:
        self.module = module
        self.kind = kind
        self.providers = providers
        self.hash = export_key(module)
        self.sessions: dict[Path, object] = {}

    def session(self, shape_tag: str, build) -> object:
        path = onnx_cache_dir() / f"{self.kind}-{self.hash}-{shape_tag}.onnx"
        if path not in self.sessions:
            if not path.is_file():
                build(path)
            self.sessions[path] = make_session(path, self.providers)
        return self.sessions[path]

    @property
    def taken_providers(self) -> list[str]:
        """The provider each open session runs on (CUDA, or the CPU after a fallback)."""
        return sorted({session.get_providers()[0] for session in self.sessions.values()})


def _run(session, inputs: dict[str, torch.Tensor], device) -> torch.Tensor:
    feed = {name: value.detach().cpu().numpy() for name, value in inputs.items()}
    (output,) = session.run(["output"], feed)
    return torch.from_numpy(np.ascontiguousarray(output)).to(device)


class OnnxDenoiser(nn.Module):
    """The transformer's forward through ONNX Runtime; ``first_part_attention`` stays in torch."""

    def __init__(self, model: nn.Module, providers: tuple[str, ...] = PREFERRED_PROVIDERS):
        super().__init__()
        self.model = model.eval()
        self.runtime = _Runtime(model, "denoiser", providers)

    @property
    def config(self):
        return self.model.config

    @property
    def providers(self) -> list[str]:
        return self.runtime.taken_providers

    def first_part_attention(self, *args, **kwargs) -> torch.Tensor:
        return self.model.first_part_attention(*args, **kwargs)

    def forward(self, latents, pose_latents, timestep, text_embeds, ptcm=None):
        frames, height, width = latents.shape[2:]
        timestep = torch.as_tensor(timestep, dtype=torch.float32)
        if timestep.ndim == 1:
            timestep = timestep[:, None].expand(-1, frames)
        inputs = {
            "latents": latents.float(),
            "pose_latents": pose_latents.float(),
            "timestep": timestep.float(),
            "text_embeds": text_embeds.float(),
        }
        batch = torch.export.Dim("batch", min=1, max=64)
        dynamic = {name: {0: batch} for name in inputs}
        shape_tag = f"{frames}x{height}x{width}"
        if ptcm is not None and ptcm.active and self.model.config.ptcm:
            masks = ptcm.masks.to(torch.bool)
            parts = masks.shape[1]
            correspondence = ptcm.correspondence
            if correspondence is None:
                correspondence = torch.arange(parts).expand(frames, parts)
            inputs["masks"] = masks
            inputs["correspondence"] = correspondence.to(torch.int64)
            module, shape_tag = _WithParts(self.model), f"{shape_tag}-parts{parts}"
        else:
            module = _Plain(self.model)
        names = list(inputs)

        def build(path: Path) -> None:
            example = dict(inputs)
            for name in names[:4]:  # batch 2 at export: a batch of 1 would be specialised
                example[name] = example[name][:1].expand(2, *example[name].shape[1:])
            export_onnx(module, tuple(example[n].cpu() for n in names), names, dynamic, path)

        session = self.runtime.session(shape_tag, build)
        return _run(session, inputs, latents.device).to(latents.dtype)


class OnnxCodec:
    """A codec's ``encode``/``decode`` through ONNX Runtime, same interface as the codec."""

    def __init__(self, codec: nn.Module, providers: tuple[str, ...] = PREFERRED_PROVIDERS):
        if codec.temporal_factor != 1:
            raise ValueError(
                "the ONNX backend exports frame-independent codecs (the default model's); "
                f"{type(codec).__name__} compresses time"
            )
        self.codec = codec.eval()
        self.runtime = _Runtime(codec, "codec", providers)

    def __getattr__(self, name: str):  # latent_channels, spatial_factor, frames_to_latent ...
        if name == "codec":
            raise AttributeError(name)
        return getattr(self.codec, name)

    def _call(self, method: str, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        batch = torch.export.Dim("batch", min=1, max=64)
        frames = torch.export.Dim("frames", min=1, max=4096)
        dynamic = {"x": {0: batch, 2: frames}}

        def build(path: Path) -> None:
            example = x[:1, :, :1].expand(2, -1, 2, -1, -1).float().cpu()
            export_onnx(_Call(self.codec, method), (example,), ["x"], dynamic, path)

        session = self.runtime.session(f"{method}-{height}x{width}", build)
        return _run(session, {"x": x.float()}, x.device)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return self._call("encode", video)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self._call("decode", latents)


def use_onnx_runtime(pipeline, providers: tuple[str, ...] = PREFERRED_PROVIDERS) -> None:
    """Run ``pipeline``'s transformer and codec through ONNX Runtime from now on."""
    pipeline.model = OnnxDenoiser(pipeline.model, providers)
    pipeline.codec = OnnxCodec(pipeline.codec, providers)
