"""The official PoseAnything weights on our transformer, and the full pipeline around them.

The official checkpoint (``Ryan241005/PoseAnything``) is a DiffSynth ``WanModel``: its keys are
DiffSynth's (``blocks.N.self_attn.q``, ``head.head``, ``blocks.N.cross_attn_instance.q`` ...),
ours are diffusers' plus ``blocks.N.ptcm.*``. ``official_to_ours`` renames one key; the loader
then checks the whole mapping strictly (every checkpoint tensor used, none of the model's missing,
every shape equal) before it reads a byte of tensor data, so a wrong or damaged checkpoint fails
in a second with a list of the first mismatches instead of producing noise.

The repository ships no config: the architecture is read from the tensor shapes (Wan's attention
head size of 128 gives the head count), so the same code loads the 5B model and the scaled-down
checkpoints the tests build; ``RELEASE_SETTINGS`` makes the model run as the release runs it.
The shards are found as the release finds them (every ``diffusion_pytorch_model-*.safetensors``
in the folder), so no index file is needed; when the index is there, it is checked against the
shards. Weights are built on the meta device and assigned shard by shard, converted to the
target dtype as they are read, so peak host memory is the model once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..model import PoseAnythingTransformer
from ..model.transformer import WAN22_TI2V_5B_CONFIG
from .hub import DIT_INDEX, DIT_SHARD_PREFIX, CheckpointError, FullModelSources, require_complete

WAN_HEAD_DIM = 128
MAX_LISTED_MISMATCHES = 8
KEEP_IN_FP32 = ("time_embedder", "scale_shift_table", "norm1", "norm2", "norm3", "ptcm.norm")
"""Modules whose parameters stay float32 under a bf16 model (as diffusers keeps Wan's), for the
modulation; matched as whole dotted names, so ``ptcm.norm`` (the LayerNorm) is kept but not
``ptcm.norm_q``/``norm_k``, RMS norms whose fp32 weights on bf16 inputs would cost the fused
kernel."""
RELEASE_SETTINGS = dict(ptcm_variant="release", timestep_rounding="bfloat16")
"""How the official weights run: PTCM and timesteps as the release does (``engine.model``)."""

_RULES: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^text_embedding\.0\.", "condition_embedder.text_embedder.linear_1."),
        (r"^text_embedding\.2\.", "condition_embedder.text_embedder.linear_2."),
        (r"^time_embedding\.0\.", "condition_embedder.time_embedder.linear_1."),
        (r"^time_embedding\.2\.", "condition_embedder.time_embedder.linear_2."),
        (r"^time_projection\.1\.", "condition_embedder.time_proj."),
        (r"^head\.head\.", "proj_out."),
        (r"^head\.modulation$", "scale_shift_table"),
        (r"^blocks\.(\d+)\.self_attn\.([qkv])\.", r"blocks.\1.attn1.to_\2."),
        (r"^blocks\.(\d+)\.self_attn\.o\.", r"blocks.\1.attn1.to_out.0."),
        (r"^blocks\.(\d+)\.self_attn\.(norm_[qk])\.", r"blocks.\1.attn1.\2."),
        (r"^blocks\.(\d+)\.cross_attn\.([qkv])\.", r"blocks.\1.attn2.to_\2."),
        (r"^blocks\.(\d+)\.cross_attn\.o\.", r"blocks.\1.attn2.to_out.0."),
        (r"^blocks\.(\d+)\.cross_attn\.(norm_[qk])\.", r"blocks.\1.attn2.\2."),
        (r"^blocks\.(\d+)\.cross_attn_instance\.([qkv])\.", r"blocks.\1.ptcm.to_\2."),
        (r"^blocks\.(\d+)\.cross_attn_instance\.o\.", r"blocks.\1.ptcm.to_out."),
        (r"^blocks\.(\d+)\.cross_attn_instance\.(norm_[qk])\.", r"blocks.\1.ptcm.\2."),
        (r"^blocks\.(\d+)\.norm3\.", r"blocks.\1.norm2."),
        (r"^blocks\.(\d+)\.norm4\.", r"blocks.\1.ptcm.norm."),
        (r"^blocks\.(\d+)\.ffn\.0\.", r"blocks.\1.ffn.net.0.proj."),
        (r"^blocks\.(\d+)\.ffn\.2\.", r"blocks.\1.ffn.net.2."),
        (r"^blocks\.(\d+)\.modulation$", r"blocks.\1.scale_shift_table"),
    )
)


def official_to_ours(name: str) -> str:
    """Our parameter name for an official (DiffSynth) key; unknown keys come back unchanged."""
    for pattern, replacement in _RULES:
        renamed, count = pattern.subn(replacement, name)
        if count:
            return renamed
    return name


def _open_shard(path: Path):
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{path.name} cannot be read as safetensors ({error}); the file is damaged or "
            "was not fully downloaded: delete it and download it again"
        ) from error


def read_index(folder: Path, index_name: str = DIT_INDEX) -> dict[str, str]:
    """The index's weight map (tensor name -> shard file), checked to name existing shards."""
    index_path = folder / index_name
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{index_path} is not a safetensors index (JSON with a 'weight_map'): {error}"
        ) from error
    missing = sorted({shard for shard in weight_map.values() if not (folder / shard).is_file()})
    if missing:
        raise CheckpointError(f"shards listed in {index_name} are missing in {folder}: {missing}")
    return weight_map


def shard_files(folder: Path) -> list[str]:
    """The shards the release loads: every ``diffusion_pytorch_model-*.safetensors``, sorted."""
    return sorted(
        path.name for path in folder.glob(f"{DIT_SHARD_PREFIX}*.safetensors") if path.is_file()
    )


def weight_map_of(folder: Path) -> dict[str, str]:
    """Tensor name -> shard file: from the index when there is one, else from the shards."""
    if (folder / DIT_INDEX).is_file():
        return read_index(folder)
    shards = shard_files(folder)
    if not shards:
        raise CheckpointError(
            f"{folder} holds no {DIT_SHARD_PREFIX}*.safetensors shards of the PoseAnything DiT; "
            "point to the folder of the Ryan241005/PoseAnything download"
        )
    weight_map: dict[str, str] = {}
    for shard in shards:
        with _open_shard(folder / shard) as handle:
            for name in handle.keys():
                if name in weight_map:
                    raise CheckpointError(
                        f"{name} is in both {weight_map[name]} and {shard}: the folder mixes "
                        "shards of two downloads; keep one set and download it again"
                    )
                weight_map[name] = shard
    return weight_map


def checkpoint_shapes(folder: Path, weight_map: Mapping[str, str]) -> dict[str, tuple[int, ...]]:
    """Official name -> shape of every tensor, from the shard headers (no tensor data read).

    Also checks that each shard holds exactly the tensors the index says and that its data is
    complete (a truncated download fails here, not halfway through loading).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in sorted(set(weight_map.values())):
        path = folder / shard
        with _open_shard(path) as handle:
            names = set(handle.keys())
            for name in names:
                shapes[name] = tuple(handle.get_slice(name).get_shape())
        expected = {name for name, owner in weight_map.items() if owner == shard}
        if names != expected:
            absent = sorted(expected - names)[:MAX_LISTED_MISMATCHES]
            raise CheckpointError(
                f"{shard} does not hold the tensors its index lists (missing e.g. {absent}); "
                "the index and the shards come from different downloads: download both again"
            )
    return shapes


def infer_config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """Our transformer config from the official tensor shapes (see the module docstring)."""
    try:
        dim, in_channels, *patch = shapes["patch_embedding.weight"]
        text_dim = shapes["text_embedding.0.weight"][1]
        freq_dim = shapes["time_embedding.0.weight"][1]
        ffn_dim = shapes["blocks.0.ffn.0.weight"][0]
    except KeyError as error:
        raise CheckpointError(
            f"the checkpoint has no {error.args[0]}: it is not a Wan/PoseAnything DiT"
        ) from error
    if dim % WAN_HEAD_DIM or in_channels % 2:
        raise CheckpointError(
            f"patch_embedding.weight {shapes['patch_embedding.weight']}: width {dim} is not a "
            f"multiple of Wan's head size {WAN_HEAD_DIM}, or the {in_channels} input channels are "
            "not [video latent, skeleton latent]"
        )
    layers = {int(name.split(".")[1]) for name in shapes if name.startswith("blocks.")}
    return dict(
        latent_channels=in_channels // 2,
        patch_size=tuple(patch),
        num_attention_heads=dim // WAN_HEAD_DIM,
        attention_head_dim=WAN_HEAD_DIM,
        text_dim=text_dim,
        freq_dim=freq_dim,
        ffn_dim=ffn_dim,
        num_layers=max(layers) + 1 if layers else 0,
        ptcm=any(".cross_attn_instance." in name for name in shapes),
    )


def check_mapping(
    model_shapes: Mapping[str, tuple[int, ...]], official_shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, str]:
    """Our name -> official name for every tensor, or a ``CheckpointError`` listing mismatches."""
    mapping: dict[str, str] = {}
    claimed: set[str] = set()
    problems: list[str] = []
    for official, shape in sorted(official_shapes.items()):
        ours = official_to_ours(official)
        if ours not in model_shapes:
            problems.append(f"unexpected tensor {official} (no model parameter {ours})")
        elif ours in claimed:
            problems.append(f"{official} maps to {ours}, which another tensor already fills")
        elif tuple(model_shapes[ours]) != tuple(shape):
            problems.append(
                f"{official} -> {ours}: checkpoint shape {tuple(shape)}, model shape "
                f"{tuple(model_shapes[ours])}"
            )
        else:
            mapping[ours] = official
        claimed.add(ours)
    problems += [
        f"missing tensor for model parameter {ours}" for ours in model_shapes if ours not in claimed
    ]
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED_MISMATCHES])
        more = len(problems) - MAX_LISTED_MISMATCHES
        raise CheckpointError(
            f"the checkpoint does not match the PoseAnything transformer ({len(problems)} "
            f"problems):\n  {listed}" + (f"\n  ... and {more} more" if more > 0 else "")
        )
    return mapping


def parameter_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    dotted = f".{name}."
    return torch.float32 if any(f".{module}." in dotted for module in KEEP_IN_FP32) else dtype


def load_official_transformer(
    folder: str | Path, dtype: torch.dtype = torch.bfloat16
) -> PoseAnythingTransformer:
    """Build the transformer from an official checkpoint folder (shards, index optional) on the
    CPU, set to run as the release runs it (``RELEASE_SETTINGS``)."""
    folder = Path(folder)
    weight_map = weight_map_of(folder)
    shapes = checkpoint_shapes(folder, weight_map)
    config = {**infer_config(shapes), **RELEASE_SETTINGS}
    with torch.device("meta"):
        model = PoseAnythingTransformer(**config)
    model_shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    mapping = check_mapping(model_shapes, shapes)
    by_shard: dict[str, list[str]] = {}
    for ours, official in mapping.items():
        by_shard.setdefault(weight_map[official], []).append(ours)
    state: dict[str, torch.Tensor] = {}
    for shard, names in sorted(by_shard.items()):
        with _open_shard(folder / shard) as handle:
            for ours in names:
                tensor = handle.get_tensor(mapping[ours])
                state[ours] = tensor.to(parameter_dtype(ours, dtype))
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def is_wan22_5b(model: PoseAnythingTransformer) -> bool:
    """Whether the loaded transformer has the size of Wan2.2-TI2V-5B (the official model)."""
    config = model.config
    return all(config[key] == value for key, value in WAN22_TI2V_5B_CONFIG.items())


def load_full_components(sources: FullModelSources, dtype: torch.dtype):
    """(transformer, codec, text encoder) of the full model from local files only."""
    from ..model import UMT5TextEncoder, WanVAECodec

    found = require_complete(sources)
    transformer = load_official_transformer(found.folder("poseanything", sources), dtype)
    wan = found.folder("wan", sources)
    codec = WanVAECodec.from_pretrained(wan, "vae", torch_dtype=dtype, local_files_only=True)
    text = UMT5TextEncoder.from_pretrained(wan, torch_dtype=dtype, local_files_only=True)
    return transformer, codec, text
