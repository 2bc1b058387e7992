"""Video codecs: pixels <-> the latent space the transformer works in.

Interface (both implementations, and what the pipeline relies on):
    encode(video (B, 3, F, H, W) float in [-1, 1]) -> latents (B, C, T, H/s, W/s), normalised
    decode(latents) -> video (B, 3, F, H, W) in [-1, 1]
    latent_channels C, spatial_factor s, temporal_factor k,
    frames_to_latent(F) -> T and latent_to_frames(T) -> F, with F = 1 + k * (T - 1)
    (the causal layout of the Wan VAE: frame 0 alone, then groups of k; k = 1 maps frames 1:1).

- ``TinyVideoCodec``: the default model's learned codec, small enough that encoding and decoding
  16 frames at 64x64 costs a fraction of a second on a CPU. Frames are coded independently (no
  temporal compression: with 16-frame windows the transformer can afford one latent per frame).
  The encoder starts with a pixel unshuffle, the decoder upsamples bilinearly before each conv so
  its output is smooth rather than blocky (a pixel-shuffle decoder predicting raw pixel blocks
  gave visibly blocky video in the first experiments).
- ``WanVAECodec``: diffusers' ``AutoencoderKLWan`` (Wan2.2: 48 channels, 4 x 16 x 16), with the
  per-channel latent mean and std from its config, as the official Wan pipelines normalise, coding
  in spatial tiles the way the release's DiffSynth ``WanVideoVAE`` does (``tiled_code``: 34 x 34
  latent tiles, stride 18 x 16, linear ramps over the overlaps), so the full model's latents and
  frames are the release's and memory depends on the tile, not on the frame size.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Protocol

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from .serialization import SafetensorsModel


class VideoCodec(Protocol):
    """What the pipeline needs from a codec (see the module docstring)."""

    latent_channels: int
    spatial_factor: int
    temporal_factor: int

    def encode(self, video: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def frames_to_latent(self, frames: int) -> int: ...

    def latent_to_frames(self, latent_frames: int) -> int: ...


class CausalFrameLayout:
    """Frame-count arithmetic shared by the codecs (needs ``temporal_factor``)."""

    temporal_factor: int

    def frames_to_latent(self, frames: int) -> int:
        k = self.temporal_factor
        if frames < 1 or (frames - 1) % k:
            raise ValueError(
                f"{frames} frames cannot be encoded with temporal factor {k}: "
                f"use 1 + {k} * n frames (e.g. {1 + k * max(1, (frames - 1) // k)})"
            )
        return 1 + (frames - 1) // k

    def latent_to_frames(self, latent_frames: int) -> int:
        return 1 + self.temporal_factor * (latent_frames - 1)


def _check_video(video: torch.Tensor, spatial_factor: int) -> None:
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"video must be (B, 3, F, H, W), got shape {tuple(video.shape)}")
    height, width = video.shape[-2:]
    if height % spatial_factor or width % spatial_factor:
        raise ValueError(
            f"frame size {width}x{height} must be a multiple of the codec's factor {spatial_factor}"
        )


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class TinyVideoCodec(SafetensorsModel, ConfigMixin, CausalFrameLayout):
    """Learned per-frame autoencoder for the default model (spatial factor 2^n, n >= 1)."""

    temporal_factor = 1

    @register_to_config
    def __init__(
        self, latent_channels: int = 8, spatial_factor: int = 4, hidden_channels: int = 64
    ):
        super().__init__()
        levels = spatial_factor.bit_length() - 1
        if spatial_factor < 2 or 2**levels != spatial_factor:
            raise ValueError(f"spatial_factor must be a power of two >= 2, got {spatial_factor}")

        def width(level: int) -> int:  # channels at resolution / 2^level: fewer at high res
            return min(hidden_channels, 16 * 2**level)

        encoder: list[nn.Module] = [nn.PixelUnshuffle(2), _conv(12, width(1)), nn.SiLU()]
        for level in range(2, levels + 1):
            encoder += [_conv(width(level - 1), width(level), stride=2), nn.SiLU()]
        encoder += [
            _conv(width(levels), width(levels)),
            nn.SiLU(),
            nn.Conv2d(width(levels), latent_channels, 1),
        ]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [
            _conv(latent_channels, width(levels)),
            nn.SiLU(),
            _conv(width(levels), width(levels)),
            nn.SiLU(),
        ]
        for level in range(levels, 0, -1):
            decoder += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                _conv(width(level), width(level - 1)),
                nn.SiLU(),
            ]
        decoder.append(_conv(width(0), 3))
        self.decoder = nn.Sequential(*decoder)
        self.register_buffer("latents_mean", torch.zeros(latent_channels))
        self.register_buffer("latents_std", torch.ones(latent_channels))

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def spatial_factor(self) -> int:
        return self.config.spatial_factor

    def _per_frame(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        batch, _, frames = x.shape[:3]
        flat = x.transpose(1, 2).flatten(0, 1)  # (B*F, C, H, W)
        out = net(flat.to(self.dtype))
        return out.unflatten(0, (batch, frames)).transpose(1, 2)

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1, 1)
        return self.latents_mean.view(shape), self.latents_std.view(shape)

    def encode_unnormalised(self, video: torch.Tensor) -> torch.Tensor:
        _check_video(video, self.spatial_factor)
        return self._per_frame(self.encoder, video)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats()
        return (self.encode_unnormalised(video) - mean) / std

    def decode_unclamped(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats()
        return self._per_frame(self.decoder, latents * std + mean)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode_unclamped(latents).clamp(-1.0, 1.0)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Reconstruction for training (unclamped, so the loss has gradients everywhere)."""
        return self.decode_unclamped(self.encode(video))

    @torch.no_grad()
    def fit_latent_statistics(self, video: torch.Tensor) -> None:
        """Set the per-channel latent mean and std from a batch of training video.

        Diffusion wants latents of unit scale; call this after training the autoencoder (the
        decoder compensates, so reconstructions do not change).
        """
        latents = self.encode_unnormalised(video).float()
        self.latents_mean.copy_(latents.mean(dim=(0, 2, 3, 4)))
        self.latents_std.copy_(latents.std(dim=(0, 2, 3, 4)).clamp(min=1e-6))


RELEASE_TILE = (34, 34)
"""The release's VAE tile (height, width) in latent cells (``test_ddp.py``: tile_size)."""
RELEASE_TILE_STRIDE = (18, 16)
"""... and the step between tiles (tile_stride)."""


def tile_spans(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """DiffSynth's tile starts along one axis: every ``stride``, dropping a tile whose
    predecessor already reaches the end; each span is (start, start + size)."""
    return [
        (start, start + size)
        for start in range(0, length, stride)
        if not (start - stride >= 0 and start - stride + size >= length)
    ]


def tile_weights(height: int, width: int, bounds: tuple[bool, ...], border: tuple[int, int]):
    """(height, width) blend weight of one tile: linear ramps ``1/b .. 1`` over ``border`` cells
    on every side that is not the frame's edge (``bounds``: top, bottom, left, right)."""

    def ramp(length: int, first: bool, last: bool, width_: int) -> torch.Tensor:
        weights = torch.ones(length)
        rising = (torch.arange(width_) + 1) / width_
        if not first:
            weights[:width_] = rising[:length]
        if not last:
            weights[-width_:] = rising.flip(0)[-length:] if length < width_ else rising.flip(0)
        return weights

    rows = ramp(height, bounds[0], bounds[1], border[0])
    columns = ramp(width, bounds[2], bounds[3], border[1])
    return torch.minimum(rows[:, None], columns[None, :])


def tiled_code(
    x: torch.Tensor,
    code,
    tile: tuple[int, int],
    stride: tuple[int, int],
    scale: float,
) -> torch.Tensor:
    """Run ``code`` (a VAE encode or decode of one clip) on spatial tiles of ``x`` (1,C,T,H,W)
    and blend them as DiffSynth's ``tiled_encode``/``tiled_decode`` do.

    ``tile``/``stride`` are in the units of ``x``'s grid; ``scale`` is output cells per input
    cell (1/16 to encode pixels, 16 to decode latents). Overlaps blend with ``tile_weights``
    whose ramps span the overlap measured in output cells.
    """
    height, width = x.shape[-2:]
    border = tuple(round((size - step) * scale) for size, step in zip(tile, stride, strict=True))
    values = weights = None
    for top, bottom in tile_spans(height, tile[0], stride[0]):
        for left, right in tile_spans(width, tile[1], stride[1]):
            out = code(x[..., top:bottom, left:right]).float()
            bounds = (top == 0, bottom >= height, left == 0, right >= width)
            weight = tile_weights(*out.shape[-2:], bounds, border).to(out.device)
            if values is None:
                shape = (*out.shape[:-2], round(height * scale), round(width * scale))
                values = out.new_zeros(shape)
                weights = out.new_zeros(shape[-2:])
            rows = slice(round(top * scale), round(top * scale) + out.shape[-2])
            columns = slice(round(left * scale), round(left * scale) + out.shape[-1])
            values[..., rows, columns] += out * weight
            weights[rows, columns] += weight
    return values / weights


class WanVAECodec(nn.Module, CausalFrameLayout):
    """diffusers' ``AutoencoderKLWan`` behind the codec interface, latents normalised by config.

    ``tile``/``tile_stride`` (latent cells; None: no tiling) as the release tiles, see
    ``tiled_code``.
    """

    def __init__(
        self,
        vae,
        tile: tuple[int, int] | None = RELEASE_TILE,
        tile_stride: tuple[int, int] = RELEASE_TILE_STRIDE,
    ):
        super().__init__()
        self.vae = vae
        self.tile = tile
        self.tile_stride = tile_stride
        self.execution_device: torch.device | None = None
        """Set by ``offload``: where the VAE runs while it is kept in host memory."""
        config = vae.config
        shape = (1, config.z_dim, 1, 1, 1)
        self.register_buffer(
            "latents_mean", torch.tensor(config.latents_mean).view(shape), persistent=False
        )
        self.register_buffer(
            "latents_std", torch.tensor(config.latents_std).view(shape), persistent=False
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        subfolder: str | None = "vae",
        torch_dtype: torch.dtype = torch.float32,
        local_files_only: bool = True,
    ) -> WanVAECodec:
        """Load the VAE of a diffusers-format Wan2.2 repository or folder (safetensors only)."""
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan.from_pretrained(
            path,
            subfolder=subfolder,
            torch_dtype=torch_dtype,
            use_safetensors=True,
            local_files_only=local_files_only,
        )
        return cls(vae)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.z_dim

    @property
    def spatial_factor(self) -> int:
        return self.vae.config.scale_factor_spatial

    @property
    def temporal_factor(self) -> int:
        return self.vae.config.scale_factor_temporal

    def offload(self, device: str | torch.device) -> None:
        """Keep the VAE in host memory and move it to ``device`` only while it codes (GPU memory
        then holds the transformer alone between encodes and decodes)."""
        self.vae.to("cpu")
        self.execution_device = torch.device(device)

    @contextlib.contextmanager
    def _resident(self):
        if self.execution_device is None:
            yield
            return
        self.vae.to(self.execution_device)
        try:
            yield
        finally:
            self.vae.to("cpu")

    def _encode_clip(self, clip: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(clip.to(self.vae.dtype)).latent_dist.mode()

    def _decode_clip(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.to(self.vae.dtype)).sample

    def _tiled(self, x: torch.Tensor, code, scale: float) -> torch.Tensor:
        if self.tile is None:
            return code(x).float()
        factor = self.spatial_factor
        tile, stride = self.tile, self.tile_stride
        if scale < 1:  # tiles and strides are in latent cells; encoding cuts pixels
            tile = tuple(size * factor for size in tile)
            stride = tuple(step * factor for step in stride)
        return tiled_code(x, code, tile, stride, scale)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        _check_video(video, self.spatial_factor)
        self.frames_to_latent(video.shape[2])
        with self._resident():  # one video at a time: peak memory of one, not of all anchors
            latents = torch.cat(
                [
                    self._tiled(clip[None], self._encode_clip, 1 / self.spatial_factor)
                    for clip in video
                ]
            )
        return (latents.float() - self.latents_mean) / self.latents_std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = latents.float() * self.latents_std + self.latents_mean
        with self._resident():
            video = torch.cat(
                [
                    self._tiled(clip[None], self._decode_clip, self.spatial_factor)
                    for clip in latents
                ]
            )
        return video.float().clamp(-1.0, 1.0)
