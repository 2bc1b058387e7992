"""The pose-conditioned video DiT: diffusers' Wan transformer with PoseAnything's additions.

Public forward (the contract with the sampler, engine/sampling.py and engine/pipeline.py):

    velocity = model(latents, pose_latents, timestep, text_embeds, ptcm=None)

    latents      (B, C, T, h, w)  noisy video latent; latent frame 0 is the clean reference (TI2V)
    pose_latents (B, C, T, h, w)  skeleton video encoded by the same codec (black = no pose)
    timestep     (B,) or (B, T)   float in [0, 1000], per latent frame; the sampler passes 0 for
                                  frame 0 (clean reference) and the current t for the others
    text_embeds  (B, L, text_dim) from the text encoder (zero-padded, as Wan's umT5 output)
    ptcm         PartConditioning | None; None or ``active=False`` skips part attention
    -> velocity  (B, C, T, h, w)  flow-matching velocity (noise - data), dtype of ``latents``

C = ``config.latent_channels``; h, w multiples of the patch size. The patch embedding takes the
channel concatenation [latents, pose_latents] (in_channels = 2C), as the official model does.
Part correspondence for PTCM comes from ``model.first_part_attention(...)`` (same inputs plus
the first frame's part masks) followed by ``ptcm.resolve_parts``.

Why a block and a forward of our own around diffusers' modules: diffusers' ``WanTransformerBlock``
has no hook between the text cross-attention and the feed-forward, where PTCM goes, and its
attention processors receive no per-call data. So ``PoseAnythingBlock`` subclasses it (same
submodules and parameter names) and overrides only ``forward``; the model reuses diffusers' RoPE,
patch embedding, condition embedder, output norm and projection, again with diffusers' names, so a
diffusers-format Wan2.2 state dict loads into it unchanged (PTCM adds ``blocks.N.ptcm.*``). The
forward also embeds the timestep once per latent frame and broadcasts it over the frame's tokens
instead of once per token (Wan2.2 TI2V gives all tokens of a frame the same timestep), which
saves the (tokens x 6 x dim) modulation tensor a big model would otherwise build.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import (
    WanRotaryPosEmbed,
    WanTimeTextImageEmbedding,
    WanTransformerBlock,
)
from torch import nn

from .ptcm import (
    PartAttentionMasks,
    PartConditioning,
    PartCrossAttention,
    check_variant,
    first_part_attention,
    part_attention_masks,
)
from .serialization import SafetensorsModel

# The bundled default model (engine/checkpoints/default-model; its config.json is what loads):
# 16 frames at 64x64 through a 2x codec, 8x8 tokens of 4x4 latent cells a frame, in seconds on a
# laptop CPU.
TINY_CONFIG: Mapping = MappingProxyType(
    dict(
        latent_channels=8,
        patch_size=(1, 4, 4),
        num_attention_heads=4,
        attention_head_dim=32,
        text_dim=128,
        freq_dim=128,
        ffn_dim=512,
        num_layers=4,
        prediction="reference_delta",
    )
)

PREDICTIONS = ("velocity", "reference_delta")
TIMESTEP_ROUNDINGS = (None, "bfloat16")
"""What the output layer predicts: the flow velocity (Wan, the official weights), or the clean
video's change from the reference frame, turned into a velocity inside ``forward`` (the default
model: a small network that outputs zero reproduces the reference instead of noise)."""

# Wan2.2-TI2V-5B, the backbone of the official PoseAnything weights.
WAN22_TI2V_5B_CONFIG: Mapping = MappingProxyType(
    dict(
        latent_channels=48,
        patch_size=(1, 2, 2),
        num_attention_heads=24,
        attention_head_dim=128,
        text_dim=4096,
        freq_dim=256,
        ffn_dim=14336,
        num_layers=30,
    )
)


@functools.lru_cache(maxsize=16)
def rotary_tables(
    attention_head_dim: int,
    patch_size: tuple[int, int, int],
    max_seq_len: int,
    latent_shape: tuple[int, ...],
    device: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's 3D RoPE (cos, sin), each (1, tokens, 1, head_dim) float32 on ``device``.

    The tables are a pure function of the config and the latent shape, so they live outside the
    module tree: ``model.to(torch.bfloat16)`` cannot round them to bf16 (diffusers keeps them in
    fp32 through ``_keep_in_fp32_modules``, which needs ``accelerate`` to load), and a model built
    on the meta device for loading a big checkpoint has no meta RoPE left to rebuild.
    """
    with torch.device("cpu"):
        rope = WanRotaryPosEmbed(attention_head_dim, patch_size, max_seq_len)
    cos, sin = rope(torch.empty(latent_shape, device="meta"))
    return cos.to(device, torch.float32), sin.to(device, torch.float32)


def _per_frame(timestep, batch: int, frames: int, device) -> torch.Tensor:
    """Timesteps as (B, T): a (B,) tensor is broadcast over the latent frames."""
    timestep = torch.as_tensor(timestep, device=device)
    if timestep.ndim == 1:
        timestep = timestep[:, None].expand(-1, frames)
    if timestep.shape != (batch, frames):
        raise ValueError(
            f"timestep must be (B,) or (B, T) = ({batch}, {frames}), got {tuple(timestep.shape)}"
        )
    return timestep


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Interleaved RoPE on (B, L, H, D), the same rotation diffusers' Wan attention applies."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2).type_as(x)


class PoseAnythingBlock(WanTransformerBlock):
    """A Wan block with per-latent-frame modulation and part attention after the cross-attention."""

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        qk_norm: str,
        cross_attn_norm: bool,
        eps: float,
        ptcm: bool,
        ptcm_variant: str = "paper",
    ):
        super().__init__(dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps)
        self.ptcm = PartCrossAttention(dim, num_heads, eps, ptcm_variant) if ptcm else None

    def _modulation(self, frame_modulation: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, T, 6, C) -> six (B, T, 1, C) tensors that broadcast over a frame's tokens."""
        table = self.scale_shift_table.unsqueeze(0) + frame_modulation.float()
        return table.unsqueeze(2).unbind(3)

    def _modulated_norm1(self, hidden_states, shift, scale) -> torch.Tensor:
        batch, length, dim = hidden_states.shape
        frames = shift.shape[1]
        normed = self.norm1(hidden_states.float()).view(batch, frames, -1, dim)
        return (normed * (1 + scale) + shift).view(batch, length, dim).type_as(hidden_states)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        frame_modulation: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
        part_masks: PartAttentionMasks | None = None,
    ) -> torch.Tensor:
        batch, length, dim = hidden_states.shape
        frames = frame_modulation.shape[1]
        shift, scale, gate, ff_shift, ff_scale, ff_gate = self._modulation(frame_modulation)

        def per_frame(x: torch.Tensor) -> torch.Tensor:
            return x.float().view(batch, frames, -1, dim)

        # 1. Self-attention over all tokens (3D RoPE).
        normed = self._modulated_norm1(hidden_states, shift, scale)
        attn = self._self_attention(normed, rotary_emb)
        hidden_states = (per_frame(hidden_states) + per_frame(attn) * gate).view(batch, length, dim)
        hidden_states = hidden_states.type_as(attn)
        # 2. Text cross-attention.
        normed = self.norm2(hidden_states.float()).type_as(hidden_states)
        hidden_states = hidden_states + self.attn2(normed, encoder_hidden_states, None, None)
        # 3. PTCM: part attention to the reference frame.
        if part_masks is not None and self.ptcm is not None:
            hidden_states = hidden_states + self.ptcm(hidden_states, part_masks)
        # 4. Feed-forward.
        normed = per_frame(self.norm3(hidden_states.float())) * (1 + ff_scale) + ff_shift
        ff = self.ffn(normed.view(batch, length, dim).type_as(hidden_states))
        hidden_states = per_frame(hidden_states) + per_frame(ff) * ff_gate
        return hidden_states.view(batch, length, dim).type_as(ff)

    def _rotated_query_key(self, normed: torch.Tensor, rotary_emb) -> tuple[torch.Tensor, ...]:
        """Self-attention queries and keys after q/k norm and RoPE, (B, L, H, D) each."""
        attn = self.attn1
        query = attn.norm_q(attn.to_q(normed)).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(attn.to_k(normed)).unflatten(2, (attn.heads, -1))
        return tuple(_apply_rotary(x, *rotary_emb) for x in (query, key))

    def _self_attention(self, normed: torch.Tensor, rotary_emb) -> torch.Tensor:
        """diffusers' Wan self-attention, with the RoPE of ``_apply_rotary``: diffusers writes
        the rotation into strided slices of an empty tensor, which ONNX export turns into
        scatters and full transposes (a fifth of ONNX Runtime's time); this is the same math."""
        attn = self.attn1
        query, key = self._rotated_query_key(normed, rotary_emb)
        value = attn.to_v(normed).unflatten(2, (attn.heads, -1))
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        )
        out = out.transpose(1, 2).flatten(2).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    def self_attention_query_key(
        self,
        hidden_states: torch.Tensor,
        frame_modulation: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This block's self-attention queries and keys, (B, H, L, D) each, to read attention."""
        shift, scale, *_ = self._modulation(frame_modulation)
        normed = self._modulated_norm1(hidden_states, shift, scale)
        query, key = self._rotated_query_key(normed, rotary_emb)
        return query.transpose(1, 2), key.transpose(1, 2)


class PoseAnythingTransformer(SafetensorsModel, ConfigMixin):
    """Wan-style video DiT taking [noisy latent, pose latent] by channel; see the module docstring.

    ``capture_block`` is the block whose self-attention gives the part correspondence (default:
    9/10 of the depth, block 27 of 30 as in the paper). ``ptcm`` builds the part attention in
    every block (the official model has it; switching it off per call is ``PartConditioning``).
    ``ptcm_variant``: "paper" or "release" (``engine.model.ptcm``; the official checkpoint loads
    with "release"). ``timestep_rounding``: "bfloat16" rounds the timesteps to bf16 before the
    sinusoidal embedding, as the release feeds its bf16 model (241.9 becomes 242); None keeps
    them exact (the default model was trained so).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["PoseAnythingBlock"]

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 48,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        num_attention_heads: int = 24,
        attention_head_dim: int = 128,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 14336,
        num_layers: int = 30,
        cross_attn_norm: bool = True,
        qk_norm: str = "rms_norm_across_heads",
        eps: float = 1e-6,
        rope_max_seq_len: int = 1024,
        ptcm: bool = True,
        capture_block: int | None = None,
        prediction: str = "velocity",
        ptcm_variant: str = "paper",
        timestep_rounding: str | None = None,
    ):
        super().__init__()
        check_variant(ptcm_variant)
        if timestep_rounding not in TIMESTEP_ROUNDINGS:
            raise ValueError(
                f"timestep_rounding {timestep_rounding!r} is not one of {TIMESTEP_ROUNDINGS}"
            )
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction {prediction!r} is not one of {', '.join(PREDICTIONS)}")
        patch_size = tuple(patch_size)
        if patch_size[0] != 1:
            raise ValueError(
                f"patch_size {patch_size}: the temporal patch must be 1, because timesteps, the "
                "clean reference frame and PTCM are all per latent frame"
            )
        if capture_block is not None and not 0 <= capture_block < num_layers:
            raise ValueError(
                f"capture_block {capture_block} is not a block index (0..{num_layers - 1})"
            )
        dim = num_attention_heads * attention_head_dim
        self.patch_embedding = nn.Conv3d(
            2 * latent_channels, dim, kernel_size=patch_size, stride=patch_size
        )
        self.condition_embedder = WanTimeTextImageEmbedding(
            dim=dim, time_freq_dim=freq_dim, time_proj_dim=dim * 6, text_embed_dim=text_dim
        )
        self.blocks = nn.ModuleList(
            PoseAnythingBlock(
                dim, ffn_dim, num_attention_heads, qk_norm, cross_attn_norm, eps, ptcm, ptcm_variant
            )
            for _ in range(num_layers)
        )
        self.norm_out = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.proj_out = nn.Linear(dim, latent_channels * math.prod(patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
        self.gradient_checkpointing = False

    @property
    def capture_block_index(self) -> int:
        """The block read for part correspondence: the configured one, else 9/10 of the depth."""
        if self.config.capture_block is not None:
            return self.config.capture_block
        return min(int(0.9 * self.config.num_layers), self.config.num_layers - 1)

    def embedding_timesteps(self, timestep: torch.Tensor) -> torch.Tensor:
        """The timesteps as the sinusoidal embedding sees them (float32, ``timestep_rounding``)."""
        timestep = timestep.float()
        if self.config.timestep_rounding == "bfloat16":
            return timestep.to(torch.bfloat16).float()
        return timestep

    def _embed(self, latents, pose_latents, timestep, text_embeds):
        """Patchify [latents, pose] and embed time (per latent frame) and text."""
        if latents.shape != pose_latents.shape:
            raise ValueError(
                f"latents {tuple(latents.shape)} and pose_latents {tuple(pose_latents.shape)} "
                "must have the same shape (encode the skeleton video with the same codec)"
            )
        batch, channels, frames, height, width = latents.shape
        _, patch_h, patch_w = self.config.patch_size
        if channels != self.config.latent_channels:
            raise ValueError(
                f"latents have {channels} channels, the model takes {self.config.latent_channels}"
            )
        if height % patch_h or width % patch_w:
            raise ValueError(
                f"latent size {height}x{width} is not a multiple of the patch {patch_h}x{patch_w}"
            )
        if text_embeds.shape[0] != batch:
            raise ValueError(f"text_embeds batch {text_embeds.shape[0]} != latents batch {batch}")
        timestep = _per_frame(timestep, batch, frames, latents.device)
        dtype = self.patch_embedding.weight.dtype
        x = torch.cat([latents, pose_latents], dim=1).to(dtype)
        config = self.config
        rotary_emb = rotary_tables(
            config.attention_head_dim,
            tuple(config.patch_size),
            config.rope_max_seq_len,
            (1, 1, *x.shape[2:]),
            str(x.device),
        )
        tokens = self.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()
        temb, time_proj, text, _ = self.condition_embedder(
            self.embedding_timesteps(timestep.reshape(-1)),
            text_embeds.to(dtype),
            timestep_seq_len=frames,
        )
        frame_modulation = time_proj.unflatten(2, (6, -1))  # (B, T, 6, dim)
        grid = (frames, height // patch_h, width // patch_w)
        return tokens, text, temb, frame_modulation, rotary_emb, grid

    def _part_masks(
        self,
        ptcm: PartConditioning | None,
        batch: int,
        grid: tuple[int, int, int],
        device: torch.device,
    ) -> PartAttentionMasks | None:
        if ptcm is None or not ptcm.active or not self.config.ptcm:
            return None
        if tuple(ptcm.masks.shape[2:]) != grid:
            raise ValueError(
                f"part masks are on a {tuple(ptcm.masks.shape[2:])} grid, the latents give "
                f"(T, h/patch, w/patch) = {grid}"
            )
        return part_attention_masks(ptcm, batch, device)

    def forward(
        self,
        latents: torch.Tensor,
        pose_latents: torch.Tensor,
        timestep: torch.Tensor,
        text_embeds: torch.Tensor,
        ptcm: PartConditioning | None = None,
    ) -> torch.Tensor:
        tokens, text, temb, modulation, rotary_emb, grid = self._embed(
            latents, pose_latents, timestep, text_embeds
        )
        batch = latents.shape[0]
        part_masks = self._part_masks(ptcm, batch, grid, tokens.device)
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                tokens = self._gradient_checkpointing_func(
                    block, tokens, text, modulation, rotary_emb, part_masks
                )
            else:
                tokens = block(tokens, text, modulation, rotary_emb, part_masks)

        frames, grid_h, grid_w = grid
        dim = tokens.shape[-1]
        shift, scale = (self.scale_shift_table.unsqueeze(0) + temb.float().unsqueeze(2)).unbind(2)
        normed = self.norm_out(tokens.float()).view(batch, frames, -1, dim)
        normed = normed * (1 + scale[:, :, None]) + shift[:, :, None]
        out = self.proj_out(normed.view(batch, -1, dim).type_as(tokens))
        _, patch_h, patch_w = self.config.patch_size
        out = out.reshape(batch, frames, grid_h, grid_w, patch_h, patch_w, -1)
        out = out.permute(0, 6, 1, 2, 4, 3, 5).reshape(
            batch, -1, frames, grid_h * patch_h, grid_w * patch_w
        )
        if self.config.prediction == "reference_delta":
            out = self._velocity_from_delta(latents, out.float(), timestep)
        return out.to(latents.dtype)

    @staticmethod
    def _velocity_from_delta(latents, delta, timestep) -> torch.Tensor:
        """Velocity of the straight flow ``x_t = x0 + sigma * (source - x0)`` whose clean end
        ``x0`` is the reference (latent frame 0) plus ``delta``: ``(x_t - x0) / sigma``.
        Frames at timestep 0 (the clean reference) do not move."""
        batch, _, frames = latents.shape[:3]
        sigma = _per_frame(timestep, batch, frames, latents.device).float() / 1000.0
        sigma = sigma[:, None, :, None, None]
        clean = latents[:, :, :1].float() + delta
        velocity = (latents.float() - clean) / sigma.clamp(min=1e-3)
        return torch.where(sigma > 0, velocity, torch.zeros_like(velocity))

    @torch.no_grad()
    def first_part_attention(
        self,
        latents: torch.Tensor,
        pose_latents: torch.Tensor,
        timestep: torch.Tensor,
        text_embeds: torch.Tensor,
        first_masks: torch.Tensor,
        query_chunk: int = 64,
    ) -> torch.Tensor:
        """(B, P, T, n) self-attention of ``capture_block`` from each first-frame part to every
        token (``ptcm.first_part_attention``), for ``ptcm.resolve_parts``.

        "paper": the capture block's queries and keys on its input (blocks before it run);
        "release": the capture block runs too and its self-attention is computed again on its
        own output, as the release's ``check=True`` pass does. Nothing after that runs.
        first_masks: (B or 1, P, h/patch, w/patch) bool.
        """
        tokens, text, _, modulation, rotary_emb, grid = self._embed(
            latents, pose_latents, timestep, text_embeds
        )
        if tuple(first_masks.shape[-2:]) != grid[1:]:
            raise ValueError(f"part masks grid {tuple(first_masks.shape[-2:])} != {grid[1:]}")
        index = self.capture_block_index
        after = self.config.ptcm_variant == "release"
        for block in self.blocks[: index + 1 if after else index]:
            tokens = block(tokens, text, modulation, rotary_emb)
        query, key = self.blocks[index].self_attention_query_key(tokens, modulation, rotary_emb)
        first_frame_tokens = grid[1] * grid[2]
        return first_part_attention(
            query[:, :, :first_frame_tokens], key, first_masks.to(key.device), query_chunk
        )
