"""The pose-conditioned video model: DiT with PTCM, video codecs, text encoders."""

from .codec import TinyVideoCodec, VideoCodec, WanVAECodec
from .ptcm import (
    PTCM_VARIANTS,
    FramePartMasks,
    PartConditioning,
    PartCrossAttention,
    match_parts,
    part_affinity_from_attention,
    pool_part_masks_to_latent_frames,
    resolve_parts,
)
from .text import HashTextEncoder, TextEncoder, UMT5TextEncoder
from .transformer import (
    TINY_CONFIG,
    WAN22_TI2V_5B_CONFIG,
    PoseAnythingBlock,
    PoseAnythingTransformer,
)

__all__ = [
    "PTCM_VARIANTS",
    "FramePartMasks",
    "TINY_CONFIG",
    "WAN22_TI2V_5B_CONFIG",
    "HashTextEncoder",
    "PartConditioning",
    "PartCrossAttention",
    "PoseAnythingBlock",
    "PoseAnythingTransformer",
    "TextEncoder",
    "TinyVideoCodec",
    "UMT5TextEncoder",
    "VideoCodec",
    "WanVAECodec",
    "match_parts",
    "part_affinity_from_attention",
    "pool_part_masks_to_latent_frames",
    "resolve_parts",
]
