"""Scaled-down stand-ins for the full model's downloads, laid out as the real ones are.

- ``Ryan241005/PoseAnything``: two safetensors shards and their index, with the key names and
  tensor layout of DiffSynth's ``WanModel`` (written out here from its module structure, not from
  our mapping, so the mapping is tested against an independent description);
- ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``: a tiny ``AutoencoderKLWan`` (Wan2.2 layout: patchified,
  16x spatial, 4x temporal), a tiny umT5 encoder saved in shards with an index, and a word-level
  tokenizer, each in its diffusers subfolder;

both inside a Hugging Face cache (``models--ORG--NAME/snapshots/REV/...``, ``refs/main``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from official_parity_cases import write_checkpoint

from poseanything.engine.checkpoints.hub import POSEANYTHING_REPO, WAN_REPO

DIM = 256  # two heads of Wan's 128
LATENT_CHANNELS = 4
TEXT_DIM = 32
FREQ_DIM = 16
FFN_DIM = 64
NUM_LAYERS = 2
REVISION = "0123456789abcdef0123456789abcdef01234567"


def official_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of a DiffSynth ``WanModel`` with PoseAnything's part attention, by name."""
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (DIM, 2 * LATENT_CHANNELS, 1, 2, 2),
        "patch_embedding.bias": (DIM,),
        "text_embedding.0.weight": (DIM, TEXT_DIM),
        "text_embedding.0.bias": (DIM,),
        "text_embedding.2.weight": (DIM, DIM),
        "text_embedding.2.bias": (DIM,),
        "time_embedding.0.weight": (DIM, FREQ_DIM),
        "time_embedding.0.bias": (DIM,),
        "time_embedding.2.weight": (DIM, DIM),
        "time_embedding.2.bias": (DIM,),
        "time_projection.1.weight": (6 * DIM, DIM),
        "time_projection.1.bias": (6 * DIM,),
        "head.head.weight": (LATENT_CHANNELS * 4, DIM),
        "head.head.bias": (LATENT_CHANNELS * 4,),
        "head.modulation": (1, 2, DIM),
    }
    for block in range(NUM_LAYERS):
        prefix = f"blocks.{block}."
        for attention in ("self_attn", "cross_attn", "cross_attn_instance"):
            for projection in "qkvo":
                shapes[f"{prefix}{attention}.{projection}.weight"] = (DIM, DIM)
                shapes[f"{prefix}{attention}.{projection}.bias"] = (DIM,)
            shapes[f"{prefix}{attention}.norm_q.weight"] = (DIM,)
            shapes[f"{prefix}{attention}.norm_k.weight"] = (DIM,)
        for norm in ("norm3", "norm4"):
            shapes[f"{prefix}{norm}.weight"] = (DIM,)
            shapes[f"{prefix}{norm}.bias"] = (DIM,)
        shapes[prefix + "ffn.0.weight"] = (FFN_DIM, DIM)
        shapes[prefix + "ffn.0.bias"] = (FFN_DIM,)
        shapes[prefix + "ffn.2.weight"] = (DIM, FFN_DIM)
        shapes[prefix + "ffn.2.bias"] = (DIM,)
        shapes[prefix + "modulation"] = (1, 6, DIM)
    return shapes


def official_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in official_shapes().items():
        scale = 1.0 if name.endswith(("norm_q.weight", "norm_k.weight")) else 0.05
        tensors[name] = torch.randn(shape, generator=generator) * scale
    return tensors


def snapshot(cache: Path, repo: str) -> Path:
    """An empty snapshot folder of ``repo`` in the cache at ``cache``, with refs/main set."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(REVISION)
    folder = root / "snapshots" / REVISION
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_wan_repo(folder: Path) -> None:
    """Tiny Wan2.2 VAE, umT5 encoder (sharded) and tokenizer in diffusers layout."""
    from diffusers import AutoencoderKLWan
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=8,
        decoder_base_dim=8,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        latents_mean=[0.0] * LATENT_CHANNELS,
        latents_std=[1.0] * LATENT_CHANNELS,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
    )
    vae.save_pretrained(folder / "vae", safe_serialization=True)

    config = UMT5Config(
        vocab_size=64,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
    )
    encoder = UMT5EncoderModel(config)
    encoder.save_pretrained(folder / "text_encoder", max_shard_size="20KB")

    words = ["<pad>", "</s>", "<unk>", "a", "cat", "dog", "walks", "runs", "on", "grass"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(folder / "tokenizer")


def make_fake_cache(cache: Path) -> dict[str, Path]:
    """Both repositories in a hub cache at ``cache``; returns their snapshot folders."""
    dit = snapshot(cache, POSEANYTHING_REPO)
    write_checkpoint(dit, official_tensors(), index=True)
    wan = snapshot(cache, WAN_REPO)
    write_wan_repo(wan)
    return {"poseanything": dit, "wan": wan}
