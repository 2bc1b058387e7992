"""Parity with the released PoseAnything: the cases both sides share.

``tools/official_parity.py`` builds the release's DiffSynth ``WanModel`` at a tiny config from a
checkout of github Ryan-w2024/PoseAnything, runs the release's code on these cases (in the
release's own Python: its packages and ours cannot share one) and compares it with our side
(``official_parity_engine``), or stores its outputs (``--write``);
``tests/test_official_parity.py`` compares our side with the stored outputs
(``tests/data/official_parity/``) without the release's code. This module imports neither the
release nor our engine:

- the tiny config (``ParityConfig``: dim 256 = 2 heads of 128, 30 blocks so block 27 exists,
  21 latent frames = 81 video frames, a 4 x 6 token grid);
- the checkpoint: every weight is a function of (seed, key name, shape) (``seeded_tensor``), so
  a fixture holds the key list and the outputs, never the weights, and a test rebuilds the same
  two shards in the release's file names (``write_checkpoint``);
- the inputs: the noise as the release's test script draws it (CPU generator, seed 123),
  seeded reference and skeleton latents, text embeddings, and per-frame part masks (three
  partial parts, shuffled and sometimes missing per frame, a few frames without a pose);
  a small skeleton graph and its subject image for the skeleton-image and part-mask check;
  fake VAE functions (each tile's output depends on the whole tile) for the tiling check;
- the measure the checks report: ``relative_difference = max |ours - release| / max |release|``.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

RELEASE_SHARDS = (
    "diffusion_pytorch_model-00001-of-00002.safetensors",
    "diffusion_pytorch_model-00002-of-00002.safetensors",
)
RELEASE_INDEX = "diffusion_pytorch_model.safetensors.index.json"
FIXTURES = Path(__file__).parent / "data" / "official_parity"
CASES_JSON = "cases.json"
GOLDEN_NPZ = "golden.npz"
TOLERANCE = 1e-4
"""Largest relative difference a check may have (images: identical or PSNR >= 45 dB)."""
MIN_PSNR = 45.0
TEMPORAL_FACTOR = 4
PATCH = 2


@dataclass(frozen=True)
class ParityConfig:
    """The tiny official model and the inputs of one parity run."""

    seed: int = 0
    dim: int = 256
    layers: int = 30
    latent_frames: int = 21
    latent_height: int = 8
    latent_width: int = 12
    parts: int = 3
    latent_channels: int = 16
    text_dim: int = 64
    text_tokens: int = 24
    prompt_tokens: int = 17
    """Tokens of the prompt; the rest of the ``text_tokens`` are zero, as umT5 padding is."""
    freq_dim: int = 256
    ffn_dim: int = 512
    steps: int = 50
    shift: float = 5.0
    recorded_steps: int = 7
    """Steps of the restarted run compared: past the PTCM read at step 5 and its 6 steps."""
    noise_seed: int = 123

    @property
    def heads(self) -> int:
        return self.dim // 128

    @property
    def grid(self) -> tuple[int, int]:
        return self.latent_height // PATCH, self.latent_width // PATCH

    @property
    def video_frames(self) -> int:
        return 1 + TEMPORAL_FACTOR * (self.latent_frames - 1)

    def official_model_kwargs(self) -> dict:
        """DiffSynth ``WanModel`` arguments: Wan2.2-TI2V-5B's with the sizes scaled down."""
        return dict(
            dim=self.dim,
            in_dim=2 * self.latent_channels,
            ffn_dim=self.ffn_dim,
            out_dim=self.latent_channels,
            text_dim=self.text_dim,
            freq_dim=self.freq_dim,
            eps=1e-6,
            patch_size=(1, PATCH, PATCH),
            num_heads=self.heads,
            num_layers=self.layers,
            has_image_input=False,
            seperated_timestep=True,
            require_vae_embedding=False,
            require_clip_embedding=False,
            fuse_vae_embedding_in_latents=True,
            ptc_enabled=True,
        )


def relative_difference(ours, release) -> float:
    ours = torch.as_tensor(np.asarray(ours), dtype=torch.float64)
    release = torch.as_tensor(np.asarray(release), dtype=torch.float64)
    if ours.shape != release.shape:
        raise ValueError(f"shapes differ: ours {tuple(ours.shape)}, release {tuple(release.shape)}")
    scale = release.abs().max().clamp(min=1e-30)
    return float((ours - release).abs().max() / scale)


def psnr(ours: np.ndarray, release: np.ndarray) -> float:
    error = np.mean((ours.astype(np.float64) - release.astype(np.float64)) ** 2)
    return math.inf if error == 0 else 10 * math.log10(255.0**2 / error)


# The checkpoint ------------------------------------------------------------------------------


def seeded_tensor(seed: int, name: str, shape) -> torch.Tensor:
    """One weight of the tiny checkpoint, a function of (seed, name, shape) only.

    Scaled like a trained net so 30 blocks stay finite: weights 1/sqrt(fan-in), biases 0.02,
    norm weights around 1, modulation tables 1/sqrt(dim).
    """
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{name}".encode()))
    values = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    if name.endswith(".bias"):
        return 0.02 * values
    if ".norm" in name:
        return 1.0 + 0.1 * values
    if name.endswith("modulation"):
        return values / math.sqrt(shape[-1])
    return values / math.sqrt(math.prod(shape[1:]))


def checkpoint_tensors(seed: int, keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {name: seeded_tensor(seed, name, shape) for name, shape in keys.items()}


def weights_checksum(tensors: dict[str, torch.Tensor]) -> float:
    """Sum of |w| over the checkpoint: tells a changed random generator from a parity bug."""
    return float(sum(tensor.double().abs().sum() for tensor in tensors.values()))


def write_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], index: bool) -> Path:
    """The two shards in the release's names (blocks of the first half in the first), with or
    without the safetensors index."""
    folder.mkdir(parents=True, exist_ok=True)
    layers = 1 + max(int(name.split(".")[1]) for name in tensors if name.startswith("blocks."))
    first_half = tuple(f"blocks.{block}." for block in range(layers // 2))
    shards: dict[str, dict[str, torch.Tensor]] = {name: {} for name in RELEASE_SHARDS}
    for name, tensor in tensors.items():
        shard = RELEASE_SHARDS[0] if name.startswith(first_half) else RELEASE_SHARDS[1]
        shards[shard][name] = tensor.contiguous()
    weight_map = {}
    for shard, content in shards.items():
        save_file(content, str(folder / shard))
        weight_map.update(dict.fromkeys(content, shard))
    if index:
        (folder / RELEASE_INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


# The inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartMasksCase:
    """Per-frame part masks, the fields of the engine's ``FramePartMasks``."""

    masks: torch.Tensor  # (F, Q, gh, gw) bool
    first_parts: int
    posed: torch.Tensor  # (F,) bool


@dataclass(frozen=True)
class ParityInputs:
    noise: torch.Tensor  # (1, C, T, h, w)
    reference: torch.Tensor  # (1, C, 1, h, w) the clean first latent frame
    pose: torch.Tensor  # (1, C, T, h, w) the skeleton video's latents
    text: torch.Tensor  # (1, L, text_dim), zero after the prompt
    parts: PartMasksCase

    @property
    def start(self) -> torch.Tensor:
        """The latents of the first step: the noise with the reference as frame 0."""
        return torch.cat([self.reference, self.noise[:, :, 1:]], dim=2)


def frame_part_masks(config: ParityConfig) -> PartMasksCase:
    """Three partial parts per frame on the token grid, moving, shuffled per frame; some frames
    lose a part, every fifth frame (from 2) has no pose."""
    generator = torch.Generator().manual_seed(config.seed + 7)
    frames, parts = config.video_frames, config.parts
    masks = torch.zeros(frames, parts, *config.grid, dtype=torch.bool)
    base = torch.rand(parts, *config.grid, generator=generator) > 0.55
    posed = torch.ones(frames, dtype=torch.bool)
    for frame in range(frames):
        shifted = torch.roll(base, shifts=frame // 9, dims=2)
        order = torch.randperm(parts, generator=generator) if frame else torch.arange(parts)
        count = parts - 1 if frame % 7 == 3 else parts
        masks[frame, :count] = shifted[order[:count]]
        posed[frame] = frame == 0 or frame % 5 != 2
    masks[~posed] = False
    return PartMasksCase(masks, parts, posed)


def parity_inputs(config: ParityConfig) -> ParityInputs:
    shape = (1, config.latent_channels, config.latent_frames, config.latent_height)
    shape = (*shape, config.latent_width)
    generator = torch.Generator().manual_seed(config.seed + 1)
    reference = torch.randn(*shape[:2], 1, *shape[3:], generator=generator)
    pose = torch.randn(shape, generator=generator)
    text = torch.randn(1, config.text_tokens, config.text_dim, generator=generator)
    text[:, config.prompt_tokens :] = 0.0
    # As the release's generate_noise(seed=123) and our initial_noise draw it.
    noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(config.noise_seed))
    return ParityInputs(noise, reference, pose, text, frame_part_masks(config))


def release_binary_masks(frame_parts: PartMasksCase) -> tuple[list[list[np.ndarray]], list[int]]:
    """The part masks as the release's pipeline takes them: per posed frame (``condition_index``
    order) a list of float32 masks, only the parts the frame has."""
    condition_index = torch.nonzero(frame_parts.posed).flatten().tolist()
    binary_masks = []
    for frame in condition_index:
        masks = frame_parts.masks[frame]
        kept = masks[: frame_parts.first_parts] if frame == 0 else [m for m in masks if m.any()]
        binary_masks.append([m.numpy().astype(np.float32) for m in kept])
    return binary_masks, condition_index


# (f) skeleton images and part masks of a small graph -----------------------------------------

GRAPH_SOURCE_SIZE = (480, 270)
"""The graph's source resolution (16:9): the release's working size is 832 x 448."""
GRAPH_EDGES = np.array(
    [[0, 1], [1, 2], [2, 3], [1, 4], [4, 5], [1, 6], [6, 7], [2, 8], [8, 9], [2, 10], [10, 11]]
)
"""A quadruped: neck-spine-tail, head, four two-bone legs."""
GRAPH_FRAMES = 4
GRAPH_POSE_FRAMES = (0, 1, 3)


def graph_track() -> tuple[np.ndarray, np.ndarray]:
    """(F, J, 2) joints in source pixels and (F, J) in-front flags, walking to the right."""
    base = np.array(
        [
            [150, 80],
            [180, 110],
            [300, 115],
            [350, 95],
            [175, 190],
            [170, 240],
            [200, 185],
            [215, 238],
            [290, 190],
            [280, 242],
            [318, 188],
            [335, 240],
        ],
        dtype=np.float64,
    )
    frames = []
    for f in range(GRAPH_FRAMES):
        joints = base + [12.5 * f, 0.0]
        swing = 9.0 * math.sin(f)
        joints[[5, 9]] += [swing, 0.0]
        joints[[7, 11]] -= [swing, 0.0]
        frames.append(joints)
    in_front = np.ones((GRAPH_FRAMES, len(base)), dtype=bool)
    in_front[3, 3] = False  # the tail tip goes behind the camera in the last frame
    return np.stack(frames), in_front


def graph_subject_image(joints: np.ndarray) -> np.ndarray:
    """The first frame's subject (dark body around the bones) on white, BGR, source size."""
    import cv2

    width, height = GRAPH_SOURCE_SIZE
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    for a, b in GRAPH_EDGES:
        p, q = joints[a].astype(np.int32), joints[b].astype(np.int32)
        cv2.line(image, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), (60, 70, 80), 15)
    return image


# (g) VAE tiling ------------------------------------------------------------------------------

TILE_SCALE = 2
"""The fake VAE's spatial factor: the release's tiling arithmetic at 1/8 of the real 16, so the
stored tensors stay small."""
TILE = (34, 34)
TILE_STRIDE = (18, 16)
TILE_LATENT_SIZE = (36, 36)
"""Two tiles down and two across at the release's tile and stride."""


def fake_decode(latents: torch.Tensor, scale=None) -> torch.Tensor:
    """A 'VAE decode' whose output depends on the whole tile (its mean), so blending shows."""
    rgb = torch.tanh(latents[:, :3]) + latents[:, :3].mean(dim=(-2, -1), keepdim=True)
    frames = torch.cat([rgb[:, :, :1], rgb[:, :, 1:].repeat_interleave(TEMPORAL_FACTOR, 2)], 2)
    return frames.repeat_interleave(TILE_SCALE, -2).repeat_interleave(TILE_SCALE, -1)


def fake_encode(video: torch.Tensor, scale=None) -> torch.Tensor:
    pooled = torch.nn.functional.avg_pool3d(
        video[:, :, ::TEMPORAL_FACTOR], (1, TILE_SCALE, TILE_SCALE)
    )
    latents = torch.cat([pooled, pooled.mean(1, keepdim=True)], 1)
    return latents + video.mean(dim=(-3, -2, -1), keepdim=True)[:, :1]


def tiling_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed + 11)
    latents = torch.randn(1, 4, 1, *TILE_LATENT_SIZE, generator=generator)
    pixels = tuple(TILE_SCALE * side for side in TILE_LATENT_SIZE)
    video = torch.rand(1, 3, 1, *pixels, generator=generator) * 2 - 1
    return latents, video


# The fixture files ---------------------------------------------------------------------------


def save_fixture(folder: Path, meta: dict, golden: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, indent=1)
    text = re.sub(r"\[\s+([\d,\s]*?)\s+\]", lambda m: f"[{' '.join(m.group(1).split())}]", text)
    (folder / CASES_JSON).write_text(text + "\n", encoding="utf-8")
    arrays = {name: np.asarray(value) for name, value in golden.items()}
    np.savez_compressed(folder / GOLDEN_NPZ, **arrays)


def load_fixture(folder: Path = FIXTURES) -> tuple[dict, ParityConfig, dict[str, np.ndarray]]:
    meta = json.loads((folder / CASES_JSON).read_text(encoding="utf-8"))
    with np.load(folder / GOLDEN_NPZ, allow_pickle=False) as npz:
        golden = {name: npz[name] for name in npz.files}
    return meta, ParityConfig(**meta["config"]), golden


def fixture_meta(config: ParityConfig, commit: str, keys: dict, checksum: float) -> dict:
    return {
        "official_repository": "github.com/Ryan-w2024/PoseAnything",
        "official_commit": commit,
        "made_by": "tools/official_parity.py --write",
        "config": asdict(config),
        "weights_checksum": checksum,
        "keys": keys,
    }
