"""Part-aware Temporal Coherence Module (PTCM): part masks, part correspondence, part attention.

What the paper does (and the official code, Ryan-w2024/PoseAnything, ``CrossAttention_instance``
in its DiffSynth ``wan_video_dit.py`` and the correspondence loop in ``wan_video_new.py``):

1. Every latent frame has up to 5 part masks on the token grid (dilated skeleton parts).
2. Correspondence: at an early denoising step, the self-attention of a late block is read with
   the first latent frame's tokens as queries; for every later frame, each first-frame part is
   matched to the frame's part its tokens attend to most (mean attention over the two masks).
   Sampling then restarts with that correspondence.
3. Part attention, after the text cross-attention of every block, for the first few steps:
   the tokens of a part in frames 1..T-1 attend to the tokens of the corresponding part in the
   first latent frame (the clean reference), one attention per part, the results summed, and
   added to the residual stream.

Choices and why:
- Own projections (``to_q/to_k/to_v/to_out`` with RMS q/k norms and a LayerNorm in front), as the
  official module has, so the official weights (``cross_attn_instance.*``, ``norm4``) map onto it
  one to one. ``to_out`` starts at zero, so an untrained module is exactly the identity and a
  model trained without PTCM is unchanged by switching it on.
- Hard attention masks instead of the official code's zeroing of the hidden states outside a
  part (there, tokens outside the part still enter the softmax with bias-only keys and every
  token receives an update). Masking is what the paper describes: a token only ever attends to
  the tokens of its own part in the reference frame, and tokens outside every part are untouched.
- Correspondence as a one-to-one assignment (best permutation over <= 5 parts) instead of the
  official independent argmax per part, so two reference parts never claim the same part; parts
  absent in either frame keep the identity.
- Affinity aggregation in query chunks, so the tokens x tokens attention matrix of a big model
  (8k tokens for 81 frames at 832x480) is never materialised.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.normalization import FP32LayerNorm
from torch import nn

MAX_BRUTE_FORCE_PARTS = 7


@dataclass(frozen=True)
class PartConditioning:
    """Per-call PTCM input of the transformer.

    masks: (B or 1, P, T, gh, gw) bool, part p of latent frame t on the token grid
        (gh = h / patch_h, gw = w / patch_w); B = 1 is broadcast over the batch.
    correspondence: (T, P) or (B, T, P) int, ``correspondence[t, q] = p`` means part q of frame t
        is part p of the first frame (see ``match_parts``); None = identity (parts labelled
        consistently, e.g. from the rig).
    active: whether part attention runs in this call (the sampler turns it off after the first
        steps; ablations turn it off entirely).
    """

    masks: torch.Tensor
    correspondence: torch.Tensor | None = None
    active: bool = True


@dataclass(frozen=True)
class PartAttentionMasks:
    """PTCM masks flattened to tokens, built once per forward and shared by all blocks.

    query: (B, P, (T-1) * n) bool, tokens of frames 1..T-1 that belong to first-frame part p.
    key: (B, P, n) bool, tokens of the first frame in part p (n tokens per frame).
    """

    query: torch.Tensor
    key: torch.Tensor

    @property
    def tokens_per_frame(self) -> int:
        return self.key.shape[-1]


def part_attention_masks(
    conditioning: PartConditioning, batch_size: int, device: torch.device | str = "cpu"
) -> PartAttentionMasks:
    """Resolve the correspondence into per-token query and key masks for part attention."""
    masks = conditioning.masks.to(device=device, dtype=torch.bool)
    if masks.ndim != 5:
        raise ValueError(
            f"PartConditioning.masks must be (B, P, T, gh, gw), got shape {tuple(masks.shape)}"
        )
    if masks.shape[0] not in (1, batch_size):
        raise ValueError(
            f"PartConditioning.masks has batch {masks.shape[0]}; use 1 (shared by all anchors) "
            f"or the model batch {batch_size}"
        )
    masks = masks.expand(batch_size, *masks.shape[1:])
    _, num_parts, num_frames, _, _ = masks.shape
    flat = masks.flatten(3)  # (B, P, T, n)
    correspondence = conditioning.correspondence
    if correspondence is None:
        query = flat[:, :, 1:]
    else:
        correspondence = correspondence.to(device=masks.device, dtype=torch.long)
        if correspondence.shape[-2:] != (num_frames, num_parts):
            raise ValueError(
                f"PartConditioning.correspondence must be (T, P) = ({num_frames}, {num_parts}), "
                f"got {tuple(correspondence.shape)}"
            )
        correspondence = correspondence.expand(batch_size, num_frames, num_parts)
        # assignment[b, t, q, p]: part q of frame t is first-frame part p.
        assignment = F.one_hot(correspondence, num_parts).float()
        query = torch.einsum("bqtn,btqp->bptn", flat.float(), assignment)[:, :, 1:] > 0
    return PartAttentionMasks(query=query.flatten(2), key=flat[:, :, 0])


class PartCrossAttention(nn.Module):
    """Part-aware cross-attention from frames 1..T-1 to the first frame, one softmax per part.

    Returns the residual to add to the hidden states (zero on the first frame and on tokens in no
    part).
    """

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.norm = FP32LayerNorm(dim, eps, elementwise_affine=True)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, hidden_states: torch.Tensor, masks: PartAttentionMasks) -> torch.Tensor:
        batch, length, dim = hidden_states.shape
        n = masks.tokens_per_frame
        x = self.norm(hidden_states.float()).type_as(hidden_states)
        reference, others = x[:, :n], x[:, n:]

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, L, C) -> (B, 1, H, L, D)
            return t.unflatten(2, (self.num_heads, -1)).transpose(1, 2).unsqueeze(1)

        query = heads(self.norm_q(self.to_q(others)))
        key = heads(self.norm_k(self.to_k(reference)))
        value = heads(self.to_v(reference))
        num_parts = masks.key.shape[1]
        allowed = masks.query[..., :, None] & masks.key[..., None, :]  # (B, P, Lq, n)
        has_keys = allowed.any(-1)  # (B, P, Lq)
        # Rows with no allowed key would softmax to NaN; let them see everything, then drop them.
        allowed = allowed | ~has_keys[..., None]
        shape = (batch, num_parts, self.num_heads)

        def parts_as_batch(t: torch.Tensor) -> torch.Tensor:  # 4D for SDPA (and ONNX export)
            return t.expand(*shape, *t.shape[-2:]).flatten(0, 1)

        out = F.scaled_dot_product_attention(
            parts_as_batch(query),
            parts_as_batch(key),
            parts_as_batch(value),
            attn_mask=allowed.flatten(0, 1)[:, None],
        ).unflatten(0, (batch, num_parts))  # (B, P, H, Lq, D)
        out = (out * has_keys[:, :, None, :, None].to(out.dtype)).sum(1)
        out = self.to_out(out.transpose(1, 2).flatten(2))
        out = out * has_keys.any(1)[..., None].to(out.dtype)
        return torch.cat([out.new_zeros(batch, n, dim), out], dim=1)


def part_affinity_from_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    part_masks: torch.Tensor,
    query_chunk: int = 64,
) -> torch.Tensor:
    """Mean attention from each first-frame part to each part of every frame.

    query: (B, H, n, D) queries of the first frame's n tokens (after norm and RoPE).
    key: (B, H, T * n, D) keys of all tokens.
    part_masks: (B, P, T, gh, gw) bool with gh * gw = n.
    Returns (B, P, T, P): ``affinity[b, p, t, q]`` = mean softmax attention of first-frame part p
    tokens to frame-t part q tokens (heads summed, as the official code does). The softmax runs
    over all keys, in chunks of ``query_chunk`` queries, so memory is O(chunk x tokens).
    """
    batch, _, n, head_dim = query.shape
    flat = part_masks.to(torch.bool).expand(batch, *part_masks.shape[1:]).flatten(3)
    _, num_parts, num_frames, _ = flat.shape
    if flat.shape[-1] != n or key.shape[2] != num_frames * n:
        raise ValueError(
            f"part masks {tuple(part_masks.shape)} do not match {n} tokens per frame and "
            f"{key.shape[2]} tokens in total"
        )
    key_masks = flat.float()  # (B, P, T, n)
    query_masks = flat[:, :, 0].float()  # (B, P, n)
    sums = query.new_zeros(batch, num_parts, num_frames, num_parts, dtype=torch.float32)
    scaled_keys = key.float().transpose(-1, -2) / math.sqrt(head_dim)  # (B, H, D, T*n)
    for start in range(0, n, query_chunk):
        chunk = query[:, :, start : start + query_chunk]
        probs = torch.softmax(chunk.float() @ scaled_keys, dim=-1)  # (B, H, c, T*n)
        per_key = probs.sum(1).unflatten(-1, (num_frames, n))  # (B, c, T, n)
        per_key_part = torch.einsum("bctn,bqtn->bctq", per_key, key_masks)
        chunk_masks = query_masks[:, :, start : start + query_chunk]
        sums += torch.einsum("bpc,bctq->bptq", chunk_masks, per_key_part)
    query_counts = flat[:, :, 0].sum(-1).float()  # (B, P)
    key_counts = flat.sum(-1).float().transpose(1, 2)  # (B, T, P)
    counts = query_counts[:, :, None, None] * key_counts[:, None]
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.zeros_like(sums))


def match_parts(affinity: torch.Tensor, part_masks: torch.Tensor) -> torch.Tensor:
    """Map each frame's parts to the first frame's parts by the best one-to-one assignment.

    affinity: (..., P, T, P) from ``part_affinity_from_attention``; part_masks: (..., P, T, gh, gw).
    Returns (..., T, P) long: ``out[t, q] = p`` means part q of frame t is first-frame part p.
    Frame 0 is the identity; among assignments of equal score (parts absent in either frame add
    nothing) the one closest to the identity wins, so absent parts keep their own label.
    """
    num_parts = affinity.shape[-1]
    if num_parts > MAX_BRUTE_FORCE_PARTS:
        raise ValueError(
            f"match_parts handles at most {MAX_BRUTE_FORCE_PARTS} parts, got {num_parts}; "
            "segment the skeleton into fewer parts (the paper uses at most 5)"
        )
    present = part_masks.to(torch.bool).flatten(-2).any(-1)  # (..., P, T)
    # valid[..., p, t, q]: first-frame part p and frame-t part q are both drawn.
    valid = present[..., :, 0, None, None] & present[..., None, :, :].transpose(-1, -2)
    scores = torch.where(valid, affinity.float(), torch.zeros_like(affinity, dtype=torch.float32))
    scores = scores.permute(*range(scores.ndim - 3), -2, -1, -3)  # (..., T, Q, P)
    perms = torch.tensor(list(itertools.permutations(range(num_parts))), device=affinity.device)
    parts = torch.arange(num_parts, device=affinity.device)
    totals = scores[..., parts, perms].sum(-1)  # (..., T, n_perms)
    fixed_points = (perms == parts).sum(-1)  # (n_perms,)
    best = totals.max(-1, keepdim=True).values
    tolerance = 1e-6 * best.abs().clamp(min=1e-12)
    tie_break = torch.where(totals >= best - tolerance, fixed_points, -1)
    out = perms[tie_break.argmax(-1)]  # (..., T, P)
    out[..., 0, :] = parts
    return out


def pool_part_masks_to_latent_frames(masks: torch.Tensor, temporal_factor: int) -> torch.Tensor:
    """OR pixel-frame part masks (..., F, gh, gw) into latent frames (..., T, gh, gw).

    Follows the causal video VAE layout: latent frame 0 is pixel frame 0, latent frame t >= 1
    covers pixel frames (t-1)*k+1 .. t*k, so F must be 1 + k*(T-1) (any F when k == 1).
    """
    frames = masks.shape[-3]
    if temporal_factor == 1:
        return masks.to(torch.bool)
    if (frames - 1) % temporal_factor:
        raise ValueError(
            f"{frames} frames do not fit a temporal factor of {temporal_factor}: "
            f"use 1 + {temporal_factor} * k frames"
        )
    first = masks[..., :1, :, :].to(torch.bool)
    rest = masks[..., 1:, :, :].to(torch.bool)
    rest = rest.unflatten(-3, (-1, temporal_factor)).any(-3)
    return torch.cat([first, rest], dim=-3)
