"""Part-aware Temporal Coherence Module (PTCM): part masks, part correspondence, part attention.

What the paper does (and the official code, Ryan-w2024/PoseAnything, ``CrossAttention_instance``
in its DiffSynth ``wan_video_dit.py`` and the correspondence loop in ``wan_video_new.py``):

1. Every video frame has up to 5 part masks on the token grid (dilated skeleton parts).
2. Correspondence: at an early denoising step, the self-attention of a late block is read with
   the first latent frame's tokens as queries; each first-frame part is matched to the part of
   a later frame its tokens attend to most. Sampling then restarts with that correspondence.
3. Part attention, after the text cross-attention of every block, for the first few steps:
   the tokens of a part in frames 1..T-1 attend to the tokens of the corresponding part in the
   first latent frame (the clean reference), one attention per part, the results summed, and
   added to the residual stream.

Two variants, chosen by the transformer's ``ptcm_variant`` (``PTCM_VARIANTS``); every
difference between them is a branch in this module or in ``PoseAnythingTransformer.
first_part_attention``:

- ``"release"``, what the released code does, quirks included, so the official weights see
  exactly the inputs they were tested with (proven by ``tests/test_official_parity.py``):
  (1) a part's attention zeroes the hidden states outside the part (queries: all tokens of
  frames 1..T-1 outside the part's union mask; keys and values: first-frame tokens outside the
  part's first-frame mask) and keeps every token in the softmax, so every token of frames
  1..T-1 gets the summed residual; (2) the correspondence is read from the self-attention of
  the capture block recomputed on that block's OUTPUT; (3) each first-frame part takes the
  argmax part of every posed video frame independently; (4) the union mask of latent frame l
  gathers the matched masks of the video frames of latent frame l+1 (matched against latent l's
  keys) and only the last posed video frame of each group counts, index l = 0 wrapping to the
  last latent frame (``release_conditioning`` spells this out).
- ``"paper"`` (the default model's): (1) hard attention masks: a token only attends to the
  tokens of its own part in the reference frame, tokens in no part are untouched, which is what
  the paper describes and what a small model trains best with; (2) the capture block's
  queries and keys on its input; (3) a one-to-one assignment (best permutation over <= 5 parts)
  so two reference parts never claim the same part, parts absent in either frame keeping the
  identity; (4) each latent frame's masks OR-pooled from its own video frames.

Shared choices: own projections (``to_q/to_k/to_v/to_out`` with RMS q/k norms and a LayerNorm
in front), as the official module has, so the official weights (``cross_attn_instance.*``,
``norm4``) map onto it one to one; ``to_out`` starts at zero, so an untrained module is exactly
the identity. Attention read-outs are aggregated in query chunks, so the tokens x tokens
attention matrix of a big model (8k tokens for 81 frames at 832x480) is never materialised.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.normalization import FP32LayerNorm
from torch import nn

MAX_BRUTE_FORCE_PARTS = 7
PTCM_VARIANTS = ("paper", "release")
"""``ptcm_variant`` values of the transformer config; see the module docstring."""


def check_variant(variant: str) -> str:
    if variant not in PTCM_VARIANTS:
        raise ValueError(f"ptcm_variant {variant!r} is not one of {', '.join(PTCM_VARIANTS)}")
    return variant


@dataclass(frozen=True)
class PartConditioning:
    """Per-call PTCM input of the transformer.

    masks: (B or 1, P, T, gh, gw) bool, part p of latent frame t on the token grid
        (gh = h / patch_h, gw = w / patch_w); B = 1 is broadcast over the batch.
    correspondence: (T, P) or (B, T, P) int, ``correspondence[t, q] = p`` means part q of frame t
        is part p of the first frame (see ``match_parts``); None = identity (parts labelled
        consistently, e.g. from the rig, or already resolved by ``release_conditioning``).
    active: whether part attention runs in this call (the sampler turns it off after the first
        steps; ablations turn it off entirely).
    """

    masks: torch.Tensor
    correspondence: torch.Tensor | None = None
    active: bool = True


@dataclass(frozen=True)
class FramePartMasks:
    """The part masks of every video frame of a window on the token grid: PTCM's input.

    masks: (F, Q, gh, gw) bool, part q of video frame f; a frame with fewer parts is padded with
        empty masks (an empty mask matches nothing). With the "paper" variant part q is the same
        body part in every frame (the rig's labels); with "release" each frame's parts are
        unordered, as the release's image segmentation finds them.
    first_parts: how many of frame 0's masks are the reference's parts; each gets its own
        attention (the release counts an empty one too).
    posed: (F,) bool, frames that carry a skeleton (only they have masks to match); None: all.
    """

    masks: torch.Tensor
    first_parts: int
    posed: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        return self.masks.shape[0]

    def to(self, device: torch.device | str) -> FramePartMasks:
        posed = None if self.posed is None else self.posed.to(device)
        return FramePartMasks(self.masks.to(device), self.first_parts, posed)

    def temporal_factor(self, latent_frames: int) -> int:
        """Video frames per latent frame (after the first), from the causal VAE layout."""
        frames = self.num_frames
        if latent_frames == 1 and frames == 1:
            return 1
        if latent_frames < 2 or (frames - 1) % (latent_frames - 1):
            raise ValueError(
                f"{frames} video frames of part masks do not fit {latent_frames} latent frames "
                "(1 + k * (T - 1) frames)"
            )
        return (frames - 1) // (latent_frames - 1)

    def posed_masks(self) -> torch.Tensor:
        """(F, Q, gh, gw) with unposed frames emptied (frame 0, the reference, always kept)."""
        masks = self.masks.to(torch.bool)
        if self.posed is None:
            return masks
        keep = self.posed.to(device=masks.device, dtype=torch.bool).clone()
        keep[0] = True
        return masks & keep[:, None, None, None]

    def latent_masks(self, latent_frames: int) -> torch.Tensor:
        """(1, P, T, gh, gw): each latent frame's masks OR-pooled from its video frames."""
        masks = self.posed_masks()[:, : self.first_parts].permute(1, 0, 2, 3)
        return pool_part_masks_to_latent_frames(masks, self.temporal_factor(latent_frames))[None]


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

    Returns the residual to add to the hidden states (zero on the first frame; with the "paper"
    variant also on tokens in no part). ``variant`` picks the masking, see the module docstring.
    """

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6, variant: str = "paper"):
        super().__init__()
        self.num_heads = num_heads
        self.variant = check_variant(variant)
        self.norm = FP32LayerNorm(dim, eps, elementwise_affine=True)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (..., L, C) -> (..., H, L, D)
        return t.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)

    def _merge_heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, H, L, D) -> (B, L, C)
        return t.transpose(1, 2).flatten(2)

    def forward(self, hidden_states: torch.Tensor, masks: PartAttentionMasks) -> torch.Tensor:
        batch, _, dim = hidden_states.shape
        n = masks.tokens_per_frame
        x = self.norm(hidden_states.float()).type_as(hidden_states)
        reference, others = x[:, :n], x[:, n:]
        attend = self._zeroed_inputs if self.variant == "release" else self._masked
        out = attend(reference, others, masks)
        return torch.cat([out.new_zeros(batch, n, dim), out], dim=1)

    def _zeroed_inputs(self, reference, others, masks: PartAttentionMasks) -> torch.Tensor:
        """The release's part attention: per part, the inputs outside the part are zeroed (they
        stay in the softmax as bias-only keys) and all outputs are summed before ``to_out``."""
        total = None
        for part in range(masks.key.shape[1]):
            queries = others * masks.query[:, part, :, None].to(others.dtype)
            keys = reference * masks.key[:, part, :, None].to(reference.dtype)
            out = F.scaled_dot_product_attention(
                self._heads(self.norm_q(self.to_q(queries))),
                self._heads(self.norm_k(self.to_k(keys))),
                self._heads(self.to_v(keys)),
            )
            total = out if total is None else total + out
        if total is None:
            return others.new_zeros(others.shape)
        return self.to_out(self._merge_heads(total))

    def _masked(self, reference, others, masks: PartAttentionMasks) -> torch.Tensor:
        """Hard attention masks: a token attends only to its own part's reference tokens."""
        batch = others.shape[0]
        query = self._heads(self.norm_q(self.to_q(others))).unsqueeze(1)  # (B, 1, H, L, D)
        key = self._heads(self.norm_k(self.to_k(reference))).unsqueeze(1)
        value = self._heads(self.to_v(reference)).unsqueeze(1)
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
        out = self.to_out(self._merge_heads(out))
        return out * has_keys.any(1)[..., None].to(out.dtype)


def first_part_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    first_masks: torch.Tensor,
    query_chunk: int = 64,
) -> torch.Tensor:
    """Summed attention from each first-frame part to every token.

    query: (B, H, n, D) queries of the first frame's n tokens (after norm and RoPE).
    key: (B, H, T * n, D) keys of all tokens.
    first_masks: (B or 1, P, gh, gw) bool with gh * gw = n, the first frame's parts.
    Returns (B, P, T, n) float32: the softmax attention of the part's first-frame tokens to each
    token of each latent frame, summed over heads (as the official code sums them) and over the
    part's tokens. The softmax runs over all keys, in chunks of ``query_chunk`` queries, so memory
    is O(chunk x tokens).
    """
    batch, _, n, head_dim = query.shape
    masks = first_masks.to(torch.bool).flatten(2).float()  # (B or 1, P, n)
    if masks.shape[-1] != n or key.shape[2] % n:
        raise ValueError(
            f"first-frame part masks {tuple(first_masks.shape)} do not match {n} tokens per "
            f"frame and {key.shape[2]} tokens in total"
        )
    masks = masks.expand(batch, *masks.shape[1:])
    num_frames = key.shape[2] // n
    sums = query.new_zeros(batch, masks.shape[1], num_frames, n, dtype=torch.float32)
    scaled_keys = key.float().transpose(-1, -2) / math.sqrt(head_dim)  # (B, H, D, T*n)
    for start in range(0, n, query_chunk):
        chunk = query[:, :, start : start + query_chunk]
        probs = torch.softmax(chunk.float() @ scaled_keys, dim=-1)  # (B, H, c, T*n)
        per_key = probs.sum(1).unflatten(-1, (num_frames, n))  # (B, c, T, n)
        sums += torch.einsum("bpc,bctn->bptn", masks[:, :, start : start + query_chunk], per_key)
    return sums


def part_affinity(attention: torch.Tensor, part_masks: torch.Tensor) -> torch.Tensor:
    """(B, P, T, P) mean attention from first-frame part p to frame-t part q.

    attention: (B, P, T, n) from ``first_part_attention``; part_masks: (B or 1, P, T, gh, gw).
    ``affinity[b, p, t, q]`` is the mean over the pairs of (part-p first-frame token, part-q
    frame-t token) of the heads-summed attention; 0 where either part is empty.
    """
    flat = part_masks.to(torch.bool).expand(attention.shape[0], *part_masks.shape[1:]).flatten(3)
    sums = torch.einsum("bptn,bqtn->bptq", attention, flat.float())
    query_counts = flat[:, :, 0].sum(-1).float()  # (B, P)
    key_counts = flat.sum(-1).float().transpose(1, 2)  # (B, T, P)
    counts = query_counts[:, :, None, None] * key_counts[:, None]
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.zeros_like(sums))


def part_affinity_from_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    part_masks: torch.Tensor,
    query_chunk: int = 64,
) -> torch.Tensor:
    """``part_affinity`` straight from queries and keys; part_masks: (B, P, T, gh, gw)."""
    attention = first_part_attention(query, key, part_masks[:, :, 0], query_chunk)
    return part_affinity(attention, part_masks)


def release_conditioning(
    attention: torch.Tensor, frame_parts: FramePartMasks
) -> tuple[PartConditioning, torch.Tensor]:
    """The release's correspondence and union masks (``wan_video_new.py``), quirks included.

    attention: (P, T, n) from ``first_part_attention`` for the first ``frame_parts.first_parts``
    masks of frame 0. For every latent frame l < T-1 and every posed video frame f of latent
    frame l+1 (f = k*l+1 .. k*l+k), each first-frame part p takes the part of frame f with the
    highest mean attention between p's tokens and that part's tokens among latent frame l's keys
    (the release slices latent l, not l+1); then ``union[l-1][p] = union[l][p] | mask`` with
    index -1 the last one. So the union mask used for latent frame l holds the last posed frame
    of latent frame l+1 (plus, at the end, what l = 0 wrapped there), which is what the released
    weights were tested with. Returns the conditioning (frame 0: the first-frame masks, frames
    1..T-1: the union masks, no further correspondence) and the matching (F, P): the part of each
    video frame each first-frame part took, -1 where none.
    """
    masks = frame_parts.posed_masks()
    num_frames, _, grid_h, grid_w = masks.shape
    num_parts = frame_parts.first_parts
    latent_frames = attention.shape[1]
    factor = frame_parts.temporal_factor(latent_frames)
    flat = masks.flatten(2).to(attention.device)  # (F, Q, n)
    first = flat[0, :num_parts]  # (P, n)
    first_counts = first.sum(-1).float()  # (P,)
    union = torch.zeros(latent_frames - 1, num_parts, grid_h * grid_w, dtype=torch.bool)
    union = union.to(attention.device)
    matching = torch.full((num_frames, num_parts), -1, dtype=torch.long)
    for latent in range(latent_frames - 1):
        # Unposed frames have empty masks (``posed_masks``): nothing valid, nothing written.
        for frame in range(latent * factor + 1, min(latent * factor + factor, num_frames - 1) + 1):
            candidates = flat[frame].float()  # (Q, n)
            counts = candidates.sum(-1)
            valid = (first_counts[:, None] > 0) & (counts[None] > 0)  # (P, Q)
            means = (attention[:, latent] @ candidates.T) / (first_counts[:, None] * counts)
            means = torch.where(valid, means, torch.full_like(means, -math.inf))
            best = means.argmax(-1)  # the first of equal maxima, as the release's strict ">"
            found = valid.any(-1)
            target = latent - 1  # latent frame 0 wraps to the last union mask
            updated = union[latent] | flat[frame][best]
            union[target] = torch.where(found[:, None], updated, union[target])
            matching[frame] = torch.where(found.cpu(), best.cpu(), matching[frame])
    resolved = torch.cat([first[None], union]).view(latent_frames, num_parts, grid_h, grid_w)
    return PartConditioning(resolved.permute(1, 0, 2, 3)[None]), matching


AttentionReadout = Callable[[torch.Tensor], torch.Tensor]
"""``first_masks (1, P, gh, gw) -> (1, P, T, n)``: a model's ``first_part_attention`` at fixed
latents, timestep, pose and text."""


def resolve_parts(
    variant: str, read_attention: AttentionReadout, frame_parts: FramePartMasks, latent_frames: int
) -> tuple[PartConditioning, torch.Tensor]:
    """The part conditioning for the restart and the matching that led to it, per variant.

    "release": ``release_conditioning`` (matching: (F, P), the part of each video frame each
    first-frame part took). "paper": latent-frame masks with a one-to-one ``match_parts``
    correspondence (matching: (T, P), the correspondence).
    """
    if check_variant(variant) == "release":
        first = frame_parts.masks[:1, : frame_parts.first_parts]
        return release_conditioning(read_attention(first)[0], frame_parts)
    masks = frame_parts.latent_masks(latent_frames)
    affinity = part_affinity(read_attention(masks[:, :, 0]), masks)
    correspondence = match_parts(affinity[0], masks[0])
    return PartConditioning(masks, correspondence), correspondence


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
