"""``poseanything train DATA --out DIR``: train the bundled default model on synthetic clips.

Two stages, one command, one checkpoint that resumes either:

1. **codec**: ``TinyVideoCodec`` autoencodes single frames (video frames and skeleton images, so
   the encoder keeps the thin bones the pose latent must carry), then its latent mean and std are
   fitted so the diffusion latents have unit scale. The codec is then frozen.
2. **transformer**: flow matching on codec latents of 16-frame windows cut from the clips, with
   the paper's training-time choices: random sparse poses (only some frames carry a skeleton, the
   rest are black), condition dropout for CFG (blank skeleton), and the two decoupled-CFG anchors
   drawn from ``engine.guidance`` exactly as inference draws them (``subject_track``: camera
   motion taken out; ``rectangle_track``: camera motion only), each trained against the real
   video, so the model learns what each anchor leaves open. PTCM's part attention is trained on
   half the batches with the rig's own part labels (identity correspondence).

Departures from the 5B recipe, for a 2-core CPU budget (see the model card):
- The flow starts from a base plus noise (``reference_source``): the reference latent repeated
  over the window, or (``flow_base="warp"``) the reference moved along the sample's skeleton and
  camera (``engine.warp``), and the transformer predicts the change from that base
  (``prediction="reference_delta"``); the loss is on the clean estimate (x0), in latent space or
  on decoded pixels (``loss_space``), up-weighted inside the subject's mask, where whole-frame
  error under-counts the pose.
- Preprocessed clips (frames at working size, skeleton images re-rendered at that size from
  ``joints2d``, masks, part masks) are cached as .npz per clip, and once the codec is frozen
  their latents are kept in memory, so a step costs only the transformer.

Checkpoints are safetensors (model, EMA, codec and optimizer tensors) plus JSON (step, stage,
config, RNG state, loss history); no pickle. The folder being trained may still be growing: the
clip list is rescanned every ``rescan_steps``. Clips not marked ``"source": "synthetic"`` (the
metarig evaluation clips) are refused.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..configs import known_fields
from ..contract.shot import read_shot
from ..contract.skeleton import part_masks, render_skeleton_frames
from ..inference.guidance import (
    RECTANGLE_EDGES,
    SkeletonTrack,
    full_track,
    rectangle_track,
    subject_track,
)
from ..inference.pipeline import PipelineConfig, PoseAnythingPipeline, fit_image, working_size
from ..inference.sampling import rebase_velocity
from ..inference.warp import flow_base
from ..model import HashTextEncoder, PartConditioning, PoseAnythingTransformer, TinyVideoCodec
from . import TrainingError

CHECKPOINT_DIR = "checkpoint"
MODEL_DIR = "model"
LOSS_PNG = "loss.png"
CACHE_DIR = "cache"
CACHE_VERSION = 2
"""Bumped when ``preprocess_clip`` changes what it stores (2: the tracks' joints, for warps)."""
MAX_PARTS = 5
CONDITIONS = ("full", "subject", "camera", "blank")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint; fixed on resume)."""

    size: int = 64
    window: int = 16
    codec_latent_channels: int = 8
    codec_hidden_channels: int = 64
    codec_factor: int = 2
    patch: int = 4
    """Transformer patch (pixels per token side = codec_factor x patch)."""
    codec_steps: int = 300
    codec_batch: int = 24
    codec_lr: float = 2e-3
    heads: int = 4
    head_dim: int = 32
    ffn_dim: int = 512
    layers: int = 4
    batch: int = 4
    lr: float = 4e-4
    warmup: int = 50
    ema_decay: float = 0.998
    prediction: str = "reference_delta"
    reference_source: float | None = 0.5
    flow_base: str = "reference"
    """``PipelineConfig.flow_base``: "warp" starts each window's flow from the reference moved
    along the sample's skeleton and camera (``engine.warp``) and learns the change from it."""
    shift: float = 3.0
    sample_steps: int = 8
    reference_detail: float | None = 0.2
    """``PipelineConfig.reference_detail`` of the exported model (inference only)."""
    warp_outside_region: bool = False
    """``PipelineConfig.warp_outside_region`` of the exported model (inference only)."""
    loss_space: str = "latent"
    """Where the x0 loss is measured: "latent" (the codec's normalised latents) or "pixels"
    (the prediction decoded by the frozen codec against the ground-truth frames, the space the
    evaluation measures; a change that helps in latent space can still blur pixels)."""
    mask_weight: float = 4.0
    condition_probs: tuple[float, ...] = (0.7, 0.1, 0.1, 0.1)
    """Probability of each of ``CONDITIONS`` for a training sample."""
    sparse_prob: float = 0.3
    ptcm_prob: float = 0.5
    rescan_steps: int = 100
    decoder_steps: int = 0
    """Decoder-only codec steps after the transformer stage: the encoder stays frozen, so the
    latent space the transformer learned is unchanged while reconstructions get sharper. The
    resumed run may raise it (``RESUMABLE``)."""
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict, source: str = "TrainConfig") -> TrainConfig:
        """The config in ``data`` (JSON values); a key that is not a field is named in a
        warning (``source``: where ``data`` came from) and ignored."""
        values = known_fields(cls, data, source)
        if "condition_probs" in values:
            values["condition_probs"] = tuple(values["condition_probs"])
        return cls(**values)


@dataclass
class TrainState:
    """The resumable state besides tensors (``state.json``)."""

    config: TrainConfig
    codec_step: int = 0
    step: int = 0
    decoder_step: int = 0
    stats_fitted: bool = False
    """The codec's latent statistics are set (fitted here, or came with a taken codec)."""
    seconds: float = 0.0
    codec_losses: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    """Mean transformer loss per logged interval of ``LOG_EVERY`` steps."""
    rng: dict = field(default_factory=dict)


LOG_EVERY = 10
RESUMABLE = (
    "decoder_steps",
    "sample_steps",
    "reference_detail",
    "warp_outside_region",
    "flow_base",
    "reference_source",
    "loss_space",
)
"""Settings a resumed run may change: they only add work after what is done, only change how
the exported model samples, or (``flow_base``, ``reference_source``, ``loss_space``) turn the
steps that follow into a fine-tune towards another flow start or loss. A new ``flow_base`` also
zeroes the transformer's output layer, so the fine-tune starts from exactly the new base
instead of from changes measured against the old one."""


# ---------------------------------------------------------------------------------------------
# Data


def list_clips(data: Path) -> list[Path]:
    """Complete synthetic clip folders under ``data`` (staged ones are hidden dot-folders)."""
    if not data.is_dir():
        raise TrainingError(
            f"{data} is not a folder of clips; make one with "
            "`poseanything-blender make-dataset --out DATA --clips N`"
        )
    clips = []
    for folder in sorted(data.iterdir()):
        meta_path = folder / "clip.json"
        if folder.name.startswith(".") or not meta_path.is_file():
            continue
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("source") != "synthetic":
            raise TrainingError(
                f"{folder} is a {meta.get('source')!r} clip, not a synthetic one; the metarig "
                "clips are the held-out evaluation set: train on `make-dataset` output only"
            )
        clips.append(folder)
    return clips


def read_image(path: Path, size: tuple[int, int], mode: str = "RGB") -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert(mode)
        if mode == "L":
            return np.asarray(image.resize(size, Image.Resampling.BOX))
        return fit_image(np.asarray(image), *size)


def preprocess_clip(clip: Path, size: int, grid: int) -> dict[str, np.ndarray]:
    """A clip at working size: frames, the three skeleton videos, masks and PTCM part masks."""
    shot = read_shot(clip)
    width, height = working_size(shot.width, shot.height, size * size, grid)
    scale = np.array([width / shot.width, height / shot.height])
    count = shot.num_frames
    frames = np.stack(
        [read_image(clip / "frames" / f"{i:04d}.png", (width, height)) for i in range(1, count + 1)]
    )
    masks = np.stack(
        [
            read_image(clip / "masks" / f"{i:04d}.png", (width, height), "L")
            for i in range(1, count + 1)
        ]
    )
    out = {"frames": frames, "masks": masks, "edges": shot.skeleton.edges}
    tracks = {
        "full": full_track(shot),
        "subject": subject_track(shot),
        "camera": rectangle_track(shot),
    }
    for name, track in tracks.items():
        out[name] = render_skeleton_frames(
            track.joints2d * scale, track.in_front, track.edges, width, height
        )
        out[f"{name}_joints"] = (track.joints2d * scale).astype(np.float32)
        out[f"{name}_in_front"] = track.in_front
    parts = part_masks(
        shot.joints2d * scale,
        shot.in_front,
        shot.skeleton.edges,
        shot.skeleton.edge_part,
        width,
        height,
        (height // grid, width // grid),
    )
    padded = np.zeros((count, MAX_PARTS, *parts.shape[2:]), dtype=bool)
    padded[:, : parts.shape[1]] = parts[:, :MAX_PARTS]
    out["parts"] = padded
    return out


class ClipStore:
    """Preprocessed clips on disk (``.npz``), loaded on demand; latents in memory once the codec
    is frozen."""

    def __init__(self, data: Path, cache: Path, config: TrainConfig) -> None:
        self.data = data
        self.cache = cache
        self.config = config
        self.grid = config.codec_factor * config.patch  # pixels per token side
        self.clips: list[Path] = []
        self.latents: dict[str, dict[str, torch.Tensor]] = {}
        cache.mkdir(parents=True, exist_ok=True)
        self.rescan()

    def rescan(self) -> int:
        self.clips = list_clips(self.data)
        if not self.clips:
            raise TrainingError(
                f"no clips in {self.data}; make some with "
                "`poseanything-blender make-dataset --out DATA --clips N`"
            )
        return len(self.clips)

    def pixels(self, clip: Path) -> dict[str, np.ndarray]:
        path = self.cache / f"{clip.name}_{self.config.size}_{CACHE_VERSION}.npz"
        if path.is_file():
            with np.load(path) as stored:
                return dict(stored)
        arrays = preprocess_clip(clip, self.config.size, self.grid)
        temporary = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(temporary, **arrays)
        os.replace(temporary, path)
        return arrays

    @torch.no_grad()
    def clip_latents(self, clip: Path, codec: TinyVideoCodec) -> dict[str, torch.Tensor]:
        cached = self.latents.get(clip.name)
        if cached is not None:
            return cached
        arrays = self.pixels(clip)
        out = {}
        for name in ("frames", "full", "subject", "camera"):
            video = torch.from_numpy(arrays[name]).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
            out[name] = codec.encode(video)[0].transpose(0, 1).to(torch.float16)  # (F,C,h,w)
        coverage = torch.from_numpy(arrays["masks"]).float()[:, None] / 255.0
        out["coverage"] = F.avg_pool2d(coverage, self.config.codec_factor)[:, 0].half()
        out["parts"] = torch.from_numpy(arrays["parts"])
        if self.config.flow_base == "warp" or self.config.loss_space == "pixels":
            out["pixels"] = arrays["frames"]
            edges = arrays["edges"]
            for name in ("full", "subject", "camera"):
                track_edges = RECTANGLE_EDGES if name == "camera" else edges
                out[f"{name}_track"] = SkeletonTrack(
                    arrays[f"{name}_joints"], arrays[f"{name}_in_front"], track_edges
                )
        self.latents[clip.name] = out
        return out


# ---------------------------------------------------------------------------------------------
# Models


def build_models(config: TrainConfig) -> tuple[TinyVideoCodec, PoseAnythingTransformer]:
    codec = TinyVideoCodec(
        latent_channels=config.codec_latent_channels,
        spatial_factor=config.codec_factor,
        hidden_channels=config.codec_hidden_channels,
    )
    model = PoseAnythingTransformer(
        latent_channels=config.codec_latent_channels,
        patch_size=(1, config.patch, config.patch),
        num_attention_heads=config.heads,
        attention_head_dim=config.head_dim,
        text_dim=128,
        freq_dim=128,
        ffn_dim=config.ffn_dim,
        num_layers=config.layers,
        prediction=config.prediction,
    )
    return codec, model


def text_encoder(seed: int) -> HashTextEncoder:
    """The default model's text encoder. Training clips have no prompt (an empty prompt is an
    all-zero embedding), so it stays at its seeded initialisation."""
    torch.manual_seed(seed)
    return HashTextEncoder(dim=128).eval()


def pipeline_config(config: TrainConfig) -> PipelineConfig:
    return PipelineConfig(
        window_frames=config.window,
        pixel_area=config.size * config.size,
        size_multiple=config.codec_factor * config.patch,
        steps=config.sample_steps,
        shift=config.shift,
        reference_source=config.reference_source,
        reference_detail=config.reference_detail,
        flow_base=config.flow_base,
        warp_outside_region=config.warp_outside_region,
    )


def sample_sigmas(count: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """Training noise levels: uniform, then shifted as the sampler's schedule is."""
    u = torch.rand(count, generator=generator).clamp(1e-3, 1.0)
    return shift * u / (1 + (shift - 1) * u)


# ---------------------------------------------------------------------------------------------
# Checkpoints (safetensors + json)


def _optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> dict[str, torch.Tensor]:
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"{prefix}.{index}.{key}"] = torch.as_tensor(value).clone()
    return tensors


def _load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    current = optimizer.state_dict()
    current["state"] = state
    optimizer.load_state_dict(current)


def save_checkpoint(folder: Path, state: TrainState, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``folder/{state.safetensors,state.json}`` atomically (a crash keeps the old one)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(contiguous, folder / "state.safetensors.tmp")
    (folder / "state.json.tmp").write_text(json.dumps(asdict(state)), encoding="utf-8")
    os.replace(folder / "state.safetensors.tmp", folder / "state.safetensors")
    os.replace(folder / "state.json.tmp", folder / "state.json")


def load_checkpoint(folder: Path) -> tuple[TrainState, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    data = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    data["config"] = TrainConfig.from_dict(data["config"], f"{folder / 'state.json'} config")
    return TrainState(**data), load_file(folder / "state.safetensors")


def _split(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


# ---------------------------------------------------------------------------------------------
# Progress and the loss curve


class ProgressBar:
    """``stage step/total loss L s/step ETA`` on one rewritten stderr line."""

    def __init__(self, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stderr

    def __call__(self, stage: str, step: int, total: int, loss: float, rate: float, eta: float):
        filled = round(24 * min(step / max(total, 1), 1.0))
        bar = "#" * filled + "." * (24 - filled)
        minutes, seconds = divmod(int(eta), 60)
        self.stream.write(
            f"\r{stage} {step}/{total} [{bar}] loss {loss:.4f} {rate:.2f} s/step "
            f"ETA {minutes}m{seconds:02d}s   "
        )
        self.stream.flush()


def draw_loss_curve(path: Path, state: TrainState) -> None:
    """Two panels (codec reconstruction, transformer x0 loss), log scale, drawn with PIL."""
    from PIL import Image, ImageDraw

    width, height, margin = 720, 300, 40
    image = Image.new("RGB", (width, 2 * height), "white")
    draw = ImageDraw.Draw(image)
    panels = (
        ("codec reconstruction loss per step", state.codec_losses, 1),
        (f"transformer loss, mean per {LOG_EVERY} steps", state.losses, LOG_EVERY),
    )
    for row, (title, values, every) in enumerate(panels):
        top = row * height
        draw.text((margin, top + 8), title, fill="black")
        box = (margin, top + 28, width - 12, top + height - 24)
        draw.rectangle(box, outline="grey")
        series = np.log10(np.maximum(np.asarray(values, dtype=np.float64), 1e-8))
        if len(series) < 2:
            continue
        low, high = float(series.min()), float(series.max())
        high = high if high > low else low + 1.0
        xs = box[0] + (box[2] - box[0]) * np.arange(len(series)) / (len(series) - 1)
        ys = box[3] - (box[3] - box[1]) * (series - low) / (high - low)
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=(30, 90, 200), width=1)
        # A running mean over ~5% of the curve, so the trend reads through the noise.
        k = max(1, len(series) // 20)
        smooth = np.convolve(series, np.ones(k) / k, mode="valid")
        sx = xs[k - 1 :]
        sy = box[3] - (box[3] - box[1]) * (smooth - low) / (high - low)
        draw.line(list(zip(sx.tolist(), sy.tolist(), strict=True)), fill=(220, 60, 30), width=2)
        draw.text((box[0] + 4, box[1] + 2), f"{10**high:.4g}", fill="black")
        draw.text((box[0] + 4, box[3] - 12), f"{10**low:.4g}", fill="black")
        draw.text((box[2] - 90, box[3] + 4), f"step {len(series) * every}", fill="black")
    temporary = path.with_suffix(".tmp.png")
    image.save(temporary)
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------
# Training


class Trainer:
    """Owns the models, optimizers, data and state of one run folder."""

    def __init__(
        self,
        data: Path,
        out: Path,
        config: TrainConfig,
        resume: bool,
        device: str = "cpu",
        init_codec: Path | None = None,
        progress: ProgressBar | None = None,
        cache: Path | None = None,
        resume_overrides: dict | None = None,
    ) -> None:
        self.out = out
        self.device = torch.device(device)
        self.progress = progress
        checkpoint = out / CHECKPOINT_DIR
        tensors: dict[str, torch.Tensor] = {}
        rebase = False
        if resume:
            if not (checkpoint / "state.json").is_file():
                raise TrainingError(
                    f"--resume: no checkpoint in {checkpoint}; start without --resume"
                )
            self.state, tensors = load_checkpoint(checkpoint)
            unknown = set(resume_overrides or {}) - set(RESUMABLE)
            if unknown:
                raise TrainingError(
                    f"a resumed run keeps its settings; only {', '.join(RESUMABLE)} may change "
                    f"(not {', '.join(sorted(unknown))})"
                )
            previous_base = self.state.config.flow_base
            self.state.config = replace(self.state.config, **(resume_overrides or {}))
            config = self.state.config
            rebase = config.flow_base != previous_base
        elif (checkpoint / "state.json").is_file():
            raise TrainingError(
                f"{checkpoint} holds a checkpoint; pass --resume to continue it or choose "
                "another --out"
            )
        else:
            self.state = TrainState(config=config)
        self.config = config
        torch.manual_seed(config.seed)
        self.codec, self.model = build_models(config)
        self.ema = build_models(config)[1]
        self.codec.to(self.device)
        self.model.to(self.device)
        self.ema.to(self.device).requires_grad_(False)
        self.codec_optimizer = torch.optim.AdamW(self.codec.parameters(), lr=config.codec_lr)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=0.01)
        if tensors:
            self.codec.load_state_dict(_split(tensors, "codec"))
            self.model.load_state_dict(_split(tensors, "model"))
            self.ema.load_state_dict(_split(tensors, "ema"))
            _load_optimizer(self.codec_optimizer, tensors, "codec_opt")
            _load_optimizer(self.optimizer, tensors, "opt")
            if rebase:
                for model in (self.model, self.ema):
                    torch.nn.init.zeros_(model.proj_out.weight)
                    torch.nn.init.zeros_(model.proj_out.bias)
        else:
            self.ema.load_state_dict(self.model.state_dict())
            if init_codec is not None:
                self._take_codec(init_codec)
        self.store = ClipStore(data, cache or out / CACHE_DIR, config)
        self.python_rng = random.Random(config.seed)
        self.generator = torch.Generator("cpu").manual_seed(config.seed)
        if self.state.rng:
            self.python_rng.setstate(_tuple_state(self.state.rng["python"]))
            self.generator.set_state(torch.tensor(self.state.rng["torch"], dtype=torch.uint8))

    def _take_codec(self, source: Path) -> None:
        """Start from the trained codec of another run (its model folder or checkpoint)."""
        if not (source / "state.safetensors").is_file() and not (source / "codec").is_dir():
            raise TrainingError(
                f"--init-codec: {source} holds no training checkpoint (state.safetensors) and no "
                "model folder's codec/; give the --out folder of an earlier run"
            )
        if (source / "state.safetensors").is_file():
            source_state, tensors = load_checkpoint(source)
            self.codec.load_state_dict(_split(tensors, "codec"))
            self.state.codec_losses = source_state.codec_losses  # the curve shows its training
        else:
            loaded = TinyVideoCodec.from_pretrained(source / "codec")
            self.codec.load_state_dict(loaded.state_dict())
        self.state.codec_step = self.config.codec_steps
        self.state.stats_fitted = True

    # --- stage 1 ----------------------------------------------------------------------------

    def _codec_batch(self) -> torch.Tensor:
        """Random single frames, half video and half skeleton images, (B,3,1,H,W)."""
        images = []
        for _ in range(self.config.codec_batch):
            arrays = self.store.pixels(self.python_rng.choice(self.store.clips))
            kind = self.python_rng.choice(("frames", "frames", "full", "camera"))
            images.append(arrays[kind][self.python_rng.randrange(len(arrays[kind]))])
        video = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)[:, :, None]
        return (video.float() / 127.5 - 1.0).to(self.device)

    def codec_step(self) -> float:
        video = self._codec_batch()
        reconstruction = self.codec(video)
        loss = F.l1_loss(reconstruction, video) + F.mse_loss(reconstruction, video)
        self.codec_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.codec_optimizer.step()
        return loss.item()

    @torch.no_grad()
    def fit_codec_statistics(self) -> None:
        batches = [self._codec_batch() for _ in range(8)]
        self.codec.fit_latent_statistics(torch.cat(batches))

    # --- stage 2 ----------------------------------------------------------------------------

    def _sparse_keep(self, frames: int) -> torch.Tensor:
        """Which frames keep their skeleton in a sparse-pose sample (the paper trains with
        random keyframes): every k-th, first and last, or a random subset."""
        keep = torch.zeros(frames, dtype=torch.bool)
        mode = self.python_rng.randrange(3)
        if mode == 0:
            keep[:: self.python_rng.randint(2, 6)] = True
        elif mode == 1:
            keep[[0, frames - 1]] = True
        else:
            keep = torch.rand(frames, generator=self.generator) < 0.5
            keep[self.python_rng.randrange(frames)] = True
        return keep

    def _sample(self) -> dict[str, torch.Tensor]:
        config = self.config
        clip = self.python_rng.choice(self.store.clips)
        latents = self.store.clip_latents(clip, self.codec)
        frames = latents["frames"].shape[0]
        start = self.python_rng.randrange(frames - config.window + 1)
        window = slice(start, start + config.window)
        condition = self.python_rng.choices(CONDITIONS, weights=config.condition_probs)[0]
        blank = self.blank_latent.expand_as(latents["frames"][window])
        if condition == "blank":
            pose = blank
            keep = torch.zeros(config.window, dtype=torch.bool)
        else:
            pose = latents[condition][window]
            keep = torch.ones(config.window, dtype=torch.bool)
            if self.python_rng.random() < config.sparse_prob:
                keep = self._sparse_keep(config.window)
                pose = torch.where(keep[:, None, None, None], pose, blank)
        # PTCM masks only where a skeleton is shown, and on the reference, as at inference.
        parts = latents["parts"][window].clone()
        posed = keep.clone()
        posed[0] = True
        parts[~posed] = False
        coverage = latents["coverage"][window]
        weight = 1.0 + config.mask_weight * torch.maximum(coverage, coverage[:1])
        x0 = latents["frames"][window].transpose(0, 1).float()
        sample = {
            "x0": x0,
            "base": self._flow_base(latents, condition, window, keep)
            if config.flow_base == "warp"
            else x0[:, :1].expand_as(x0),
            "pose": pose.transpose(0, 1).float(),
            "parts": parts.transpose(0, 1),
            "weight": weight.float(),
        }
        if config.loss_space == "pixels":
            frames = torch.from_numpy(latents["pixels"][window]).permute(3, 0, 1, 2)
            sample["target"] = frames.float() / 127.5 - 1.0
        return sample

    @torch.no_grad()
    def _flow_base(
        self, latents: dict, condition: str, window: slice, keep: torch.Tensor
    ) -> torch.Tensor:
        """The sample's flow base latent (C,T,h,w): its first frame moved along what the
        condition's skeleton video shows, as the pipeline does at inference."""

        def cut(name: str) -> SkeletonTrack:
            return latents[f"{name}_track"].select(window)

        pixels = flow_base(
            latents["pixels"][window.start],
            condition,
            cut(condition) if condition in ("full", "subject") else None,
            cut("camera"),
            self.config.window,
            None if bool(keep.all()) else keep.numpy(),
        ).frames
        video = torch.from_numpy(np.rint(pixels)).permute(3, 0, 1, 2)[None] / 127.5 - 1.0
        return self.codec.encode(video.to(self.device))[0].float()

    def transformer_step(self) -> float:
        config = self.config
        samples = [self._sample() for _ in range(config.batch)]
        x0 = torch.stack([s["x0"] for s in samples]).to(self.device)  # (B,C,T,h,w)
        pose = torch.stack([s["pose"] for s in samples]).to(self.device)
        weight = torch.stack([s["weight"] for s in samples]).to(self.device)[:, None]
        batch, _, frames = x0.shape[:3]
        sigma = sample_sigmas(batch, config.shift, self.generator).to(self.device)
        noise = torch.randn(x0.shape, generator=self.generator).to(self.device)
        base = torch.stack([s["base"] for s in samples]).to(self.device)
        reference = x0[:, :, :1]
        source = noise
        if config.reference_source is not None:
            source = base + config.reference_source * noise
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = (1 - s) * x0 + s * source
        noisy = torch.cat([reference, noisy[:, :, 1:]], dim=2)
        timestep = (sigma * 1000.0)[:, None].repeat(1, frames)
        timestep[:, 0] = 0.0
        text = torch.zeros(batch, 32, self.model.config.text_dim, device=self.device)
        ptcm = None
        if self.python_rng.random() < config.ptcm_prob:
            ptcm = PartConditioning(torch.stack([s["parts"] for s in samples]).to(self.device))
        velocity = self.model(noisy, pose, timestep, text, ptcm=ptcm)
        if config.flow_base == "warp":
            velocity = rebase_velocity(velocity, base - reference, timestep)
        predicted = noisy - s * velocity
        target = x0
        if config.loss_space == "pixels":
            predicted = self.codec.decode_unclamped(predicted)
            target = torch.stack([s["target"] for s in samples]).to(self.device)
            factor = config.codec_factor
            weight = weight.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
        error = (predicted - target)[:, :, 1:].pow(2) * weight[:, :, 1:]
        loss = error.mean() / weight[:, :, 1:].mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, (self.state.step + 1) / config.warmup)
        self.optimizer.step()
        self._update_ema()
        return loss.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1 + self.state.step) / (10 + self.state.step))
        for ema, live in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            ema.lerp_(live, 1 - decay)

    # --- the run ----------------------------------------------------------------------------

    def run(self, minutes: float, max_steps: int | None = None, checkpoint_minutes: float = 3.0):
        """Train for ``minutes`` of wall time (or up to ``max_steps`` transformer steps in all),
        checkpointing every ``checkpoint_minutes``; returns the exported model folder, or None
        when the time ran out inside the codec stage."""
        self._clock = time.monotonic()
        deadline = self._clock + 60.0 * minutes
        last_save = self._clock
        config = self.config
        state = self.state

        def save_if_due(force: bool = False) -> None:
            nonlocal last_save
            if force or time.monotonic() - last_save > 60.0 * checkpoint_minutes:
                self.save()
                last_save = time.monotonic()

        self.codec.train()
        self._stage("codec", state.codec_step)
        while state.codec_step < config.codec_steps and time.monotonic() < deadline:
            state.codec_losses.append(self.codec_step())
            state.codec_step += 1
            if state.codec_step % config.rescan_steps == 0:
                self.store.rescan()
            self._report(state.codec_step, config.codec_steps, deadline)
            save_if_due()
        if state.codec_step < config.codec_steps:
            save_if_due(force=True)
            return None
        self.codec.eval().requires_grad_(False)
        if not state.stats_fitted and state.step == 0 and not state.losses:
            self.fit_codec_statistics()
        state.stats_fitted = True
        black = torch.full((1, 3, 1, config.size, config.size), -1.0, device=self.device)
        self.blank_latent = self.codec.encode(black)[0].transpose(0, 1).half()
        self.model.train()
        self._stage("transformer", state.step)
        window: list[float] = []
        while time.monotonic() < deadline and (max_steps is None or state.step < max_steps):
            if state.step % config.rescan_steps == 0:
                self.store.rescan()
            window.append(self.transformer_step())
            state.step += 1
            if len(window) == LOG_EVERY:
                state.losses.append(float(np.mean(window)))
                window = []
            self._report(state.step, max_steps, deadline)
            save_if_due()
        if state.decoder_step < config.decoder_steps:
            self.codec.decoder.train().requires_grad_(True)
            self._stage("decoder", state.decoder_step)
            while state.decoder_step < config.decoder_steps and time.monotonic() < deadline:
                state.codec_losses.append(self.codec_step())
                state.decoder_step += 1
                self._report(state.decoder_step, config.decoder_steps, deadline)
                save_if_due()
            self.codec.eval().requires_grad_(False)
        save_if_due(force=True)
        if self.progress is not None:
            sys.stderr.write("\n")
        if state.decoder_step < config.decoder_steps:
            return None
        return self.export(self.out / MODEL_DIR)

    def _stage(self, name: str, step: int) -> None:
        self._stage_name, self._stage_step, self._stage_began = name, step, time.monotonic()

    def _report(self, step: int, total: int | None, deadline: float) -> None:
        """Progress: the ETA is the earlier of the step budget and the time budget."""
        if self.progress is None:
            return
        codec = self._stage_name != "transformer"
        losses = self.state.codec_losses if codec else self.state.losses
        loss = float(np.mean(losses[-10:])) if losses else 0.0
        rate = (time.monotonic() - self._stage_began) / max(1, step - self._stage_step)
        remaining = max(0.0, deadline - time.monotonic())
        if total is not None:
            remaining = min(remaining, rate * (total - step))
        shown_total = total if total is not None else step + int(remaining / rate)
        self.progress(self._stage_name, step, shown_total, loss, rate, remaining)

    def save(self) -> None:
        now = time.monotonic()
        self.state.seconds += now - self._clock
        self._clock = now
        self.state.rng = {
            "python": self.python_rng.getstate(),
            "torch": self.generator.get_state().tolist(),
        }
        tensors = {
            **_prefixed("codec", self.codec.state_dict()),
            **_prefixed("model", self.model.state_dict()),
            **_prefixed("ema", self.ema.state_dict()),
            **_optimizer_tensors(self.codec_optimizer, "codec_opt"),
            **_optimizer_tensors(self.optimizer, "opt"),
        }
        save_checkpoint(self.out / CHECKPOINT_DIR, self.state, tensors)
        draw_loss_curve(self.out / LOSS_PNG, self.state)

    def export(self, folder: Path) -> Path:
        """Save the EMA transformer with the codec as a model folder the engine loads."""
        ema = build_models(self.config)[1]
        ema.load_state_dict(self.ema.state_dict())
        pipeline = PoseAnythingPipeline(
            ema,
            self.codec,
            text_encoder(self.config.seed),
            pipeline_config(self.config),
            model_id="poseanything-default",
        )
        return pipeline.save_pretrained(folder)


def _tuple_state(value):
    """JSON turns ``random.getstate()``'s tuples into lists; ``setstate`` wants tuples."""
    return tuple(_tuple_state(v) for v in value) if isinstance(value, list) else value


def train(
    data: Path,
    out: Path,
    minutes: float,
    resume: bool = False,
    config: TrainConfig | None = None,
    device: str = "cpu",
    init_codec: Path | None = None,
    max_steps: int | None = None,
    progress: ProgressBar | None = None,
    cache: Path | None = None,
    resume_overrides: dict | None = None,
) -> Path | None:
    """Train (or resume) a run in ``out``; returns the exported model folder, or None when the
    time ran out inside a codec stage (resume to continue). ``cache``: where preprocessed
    clips are kept (default ``out/cache``; runs on the same data and size can share one)."""
    trainer = Trainer(
        data,
        out,
        config or TrainConfig(),
        resume,
        device,
        init_codec,
        progress,
        cache,
        resume_overrides,
    )
    return trainer.run(minutes, max_steps)
