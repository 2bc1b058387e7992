"""A tiny randomly initialised PoseAnything pipeline: real modules, seconds to run, for tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from poseanything.engine.inference.pipeline import PipelineConfig, PoseAnythingPipeline
from poseanything.engine.model import HashTextEncoder, PoseAnythingTransformer, TinyVideoCodec

TINY_PIPELINE = PipelineConfig(window_frames=8, pixel_area=32 * 32, size_multiple=8, steps=2)


def tiny_transformer(seed: int = 0) -> PoseAnythingTransformer:
    """The real transformer with two blocks of two 8-dim heads: milliseconds a forward."""
    torch.manual_seed(seed)
    return PoseAnythingTransformer(
        latent_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        text_dim=16,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
    ).eval()


def tiny_pipeline(config: PipelineConfig = TINY_PIPELINE, seed: int = 0) -> PoseAnythingPipeline:
    model = tiny_transformer(seed)
    for block in model.blocks:  # a trained-looking part attention, so PTCM changes the output
        torch.nn.init.normal_(block.ptcm.to_out.weight, std=0.2)
    codec = TinyVideoCodec(latent_channels=4, spatial_factor=4, hidden_channels=16)
    text = HashTextEncoder(vocab_size=64, dim=16, num_layers=1, num_heads=2, max_tokens=8)
    return PoseAnythingPipeline(model, codec, text.eval(), config, model_id="tiny-test")


def tiny_model_folder(folder: str | Path) -> Path:
    """Save ``tiny_pipeline()`` as a model folder the CLI and ``from_pretrained`` load."""
    return tiny_pipeline().save_pretrained(folder)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: one thread is fastest, and two thrash on a busy 2-core machine.

    Import it into a test module to apply it there (it is autouse within that module).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_wan_codec():
    """diffusers' Wan VAE at a toy size: the full model's codec, with 4x temporal compression."""
    from diffusers import AutoencoderKLWan

    from poseanything.engine.model import WanVAECodec

    torch.manual_seed(1)
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    return WanVAECodec(vae).eval()
