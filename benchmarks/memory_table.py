"""Estimated peak GPU memory of the full model (Wan2.2-TI2V-5B PoseAnything), 81 frames.

Computed, not guessed: the real modules (our transformer with PTCM, diffusers' Wan2.2 VAE,
transformers' umT5-xxl encoder, at their published configurations) run on fake tensors
(``FakeTensorMode``: shapes and dtypes, no data, no GPU needed) while ``LiveBytes`` counts the
storage of every tensor alive at each moment; the peak of each phase is

    weights resident on the GPU in that phase (bf16; norms and modulation tables in float32)
    + the peak of live activations, inputs and outputs while it runs.

Phases, as ``engine.full_model`` runs them: text (umT5 alone: the transformer waits in host
memory), encode (the skeleton videos of all guidance anchors, tiled VAE), sampling (one step,
the larger of a plain step, a PTCM step and the part read-out), decode (tiled VAE). With
``--cpu-offload`` the VAE is in host memory during sampling. Attention is counted as the fused
kernels run it on a GPU (flash / memory-efficient: no tokens x tokens matrix). Not counted: the
CUDA context and allocator fragmentation (add about 1 GB) and PyTorch's kernel workspaces.

Run: ``.venv/bin/python benchmarks/memory_table.py`` (a few minutes on one CPU core).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import weakref

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from poseanything.engine.checkpoints.official import parameter_dtype
from poseanything.engine.model import PartConditioning, PoseAnythingTransformer
from poseanything.engine.model.transformer import WAN22_TI2V_5B_CONFIG

FRAMES = 81
TEXT_TOKENS = 512
PARTS = 5
SIZES = {"480p": (832, 480), "720p": (1280, 704)}
WAN22_VAE_CONFIG = dict(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    scale_factor_temporal=4,
    latents_mean=[0.0] * 48,
    latents_std=[1.0] * 48,
)
UMT5_XXL_CONFIG = dict(
    vocab_size=256384,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    feed_forward_proj="gated-gelu",
)
GIB = 1024**3


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def weight_bytes(module: torch.nn.Module, mixed: bool = False) -> int:
    """Bytes of the module's weights in bf16 (``mixed``: float32 where the loader keeps it)."""
    total = 0
    for name, tensor in module.state_dict().items():
        dtype = parameter_dtype(name, torch.bfloat16) if mixed else torch.bfloat16
        total += tensor.numel() * dtype.itemsize
    return total


class LiveBytes(TorchDispatchMode):
    """Bytes of tensor storage alive, and their peak, over the ops run under it.

    Each op's outputs are counted once per storage (views share it) until the storage is freed.
    Storage that existed before (the weights) is never counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self.seen = WeakIdKeyDictionary()

    def _free(self, size: int) -> None:
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                if storage not in self.seen:
                    size = storage.nbytes()
                    self.seen[storage] = size
                    self.current += size
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, size)
        return out


def activation_peak(run) -> int:
    """Peak bytes of everything ``run`` allocates (the modules' weights excluded)."""
    with LiveBytes() as tracker, torch.inference_mode():
        run()
    return tracker.peak


def transformer_peak(model, width: int, height: int, anchors: int) -> int:
    config = model.config
    shape = (anchors, config.latent_channels, 1 + (FRAMES - 1) // 4, height // 16, width // 16)
    grid = (shape[2], shape[3] // 2, shape[4] // 2)

    def inputs():
        latents = torch.randn(shape)
        pose = torch.randn(shape)
        timestep = torch.rand(anchors, shape[2])
        text = torch.randn(anchors, TEXT_TOKENS, config.text_dim)
        return latents, pose, timestep, text

    masks = PartConditioning(torch.ones(1, PARTS, *grid, dtype=torch.bool))
    first_masks = torch.ones(1, PARTS, *grid[1:], dtype=torch.bool)
    runs = (
        lambda: model(*inputs()),
        lambda: model(*inputs(), ptcm=masks),
        lambda: model.first_part_attention(*(x[:1] for x in inputs()), first_masks),
    )
    return max(activation_peak(run) for run in runs)


def vae_encode_peak(vae, width: int, height: int, anchors: int) -> int:
    """Tiled encode of the anchors' skeleton videos, as ``WanVAECodec.encode`` runs it (float32
    frames of all anchors in, each video encoded from a bf16 copy, one after the other)."""
    videos = (anchors, 3, FRAMES, height, width)

    def run() -> None:
        frames = torch.randn(videos).float()
        latents = [vae.encode(clip[None].to(torch.bfloat16)).latent_dist.mode() for clip in frames]
        torch.cat(latents)

    return activation_peak(run)


def vae_decode_peak(vae, width: int, height: int) -> int:
    """Tiled decode of one window, float32 frames out (``WanVAECodec.decode``)."""
    latent = (1, 48, 1 + (FRAMES - 1) // 4, height // 16, width // 16)
    return activation_peak(lambda: vae.decode(torch.randn(latent)).sample.float())


def text_peak(encoder) -> int:
    ids = torch.zeros(1, TEXT_TOKENS, dtype=torch.long)
    mask = torch.ones(1, TEXT_TOKENS, dtype=torch.long)
    return activation_peak(lambda: encoder(ids, mask))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--anchors", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    torch.set_num_threads(1)
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    began = time.perf_counter()
    with FakeTensorMode(), default_dtype(torch.bfloat16):
        model = PoseAnythingTransformer(**WAN22_TI2V_5B_CONFIG).eval()
        vae = AutoencoderKLWan(**WAN22_VAE_CONFIG).eval()
        vae.enable_tiling()
        encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL_CONFIG)).eval()
        weights = {
            "transformer": weight_bytes(model, mixed=True),
            "vae": weight_bytes(vae),
            "umT5": weight_bytes(encoder),
        }
        text_act = text_peak(encoder)
        rows = []
        for label, (width, height) in SIZES.items():
            decode_act = vae_decode_peak(vae, width, height)
            for anchors in args.anchors:
                sample_act = transformer_peak(model, width, height, anchors)
                encode_act = vae_encode_peak(vae, width, height, anchors)
                rows.append((label, width, height, anchors, sample_act, encode_act, decode_act))
                print(f"{label}, {anchors} anchor(s) done", file=sys.stderr, flush=True)

    print("weights (GiB): " + ", ".join(f"{k} {v / GIB:.2f}" for k, v in weights.items()))
    print(f"text phase activations: {text_act / GIB:.2f} GiB ({TEXT_TOKENS} tokens)")
    print()
    header = "| size | anchors | text | encode | sampling | decode | peak | peak, --cpu-offload |"
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    dit, vae_w, umt5 = weights["transformer"], weights["vae"], weights["umT5"]
    for label, width, height, anchors, sample_act, encode_act, decode_act in rows:
        text = umt5 + text_act + vae_w
        encode = dit + vae_w + encode_act
        sampling = dit + vae_w + sample_act
        decode = dit + vae_w + decode_act
        offloaded = max(text - vae_w, encode, sampling - vae_w, decode)
        peak = max(text, encode, sampling, decode)
        print(
            f"| {label} ({width}x{height}) | {anchors} | {text / GIB:.1f} | {encode / GIB:.1f} | "
            f"{sampling / GIB:.1f} | {decode / GIB:.1f} | **{peak / GIB:.1f}** | "
            f"{offloaded / GIB:.1f} |"
        )
    print(
        f"\nGiB, {FRAMES} frames, PTCM with {PARTS} parts; computed in "
        f"{time.perf_counter() - began:.0f} s"
    )


if __name__ == "__main__":
    main()
