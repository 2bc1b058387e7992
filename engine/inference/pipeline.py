"""PoseAnythingPipeline: a shot and a reference image in, the shot's frames out.

Diffusers-style: the model, codec and text encoder are separate objects this pipeline holds; the
scheduler lives in ``engine.sampling``; the pipeline owns what PoseAnything adds around them:

- **any size**: the shot is scaled to the nearest size the model takes (its native pixel budget,
  aspect kept, sides a multiple of the model's tile), skeleton images are re-rendered at that
  size from ``joints2d`` (a downscaled drawing would blur the 3 px bones), and the result can be
  upscaled back to the shot's size;
- **any length**: a shot longer than the model's window renders in consecutive windows; each
  window's reference (its clean first frame) is a frame the previous window generated, and the
  frames both windows cover are cross-faded, so the frame count always equals the shot's;
- **guidance anchors** (``engine.guidance``), sparse poses and PTCM part masks per window;
- **warp only** (``PipelineConfig.network`` false, the default model's): each window is the
  reference moved along the anchors' skeletons and camera (``engine.warp``) at the shot's size,
  and neither the transformer nor the codec runs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoints.weights import MODEL_INDEX, CheckpointError, resolve_model_dir
from ..configs import known_fields
from ..contract.shot import Shot, ShotError
from ..contract.skeleton import part_masks, render_skeleton_frames
from ..model import PoseAnythingTransformer, TextEncoder, VideoCodec
from ..model.ptcm import FramePartMasks
from . import release_poses
from .frame_check import check_generated_frames
from .guidance import (
    SkeletonTrack,
    anchor_tracks,
    anchor_weights,
    anchors_needed,
    full_track,
    rectangle_track,
)
from .resize import resize_frames, resize_image
from .sampling import (
    DEFAULT_SHIFT,
    SIGMA_SCHEDULES,
    CancelToken,
    StepFn,
    initial_noise,
    ptcm_steps,
    sample_with_ptcm,
)
from .settings import DEFAULT_OVERLAP, RenderSettings
from .warp import SubjectLayers, WarpedReference, cut_subject, flow_base

FLOW_BASES = ("reference", "warp")
WORKING_SIZE_RULES = ("pixel_area", "long_side")
SKELETON_DRAWINGS = ("engine", "release")
MIN_SUBJECT_PIXELS = 4.0
"""Below this extent (pixels, at the model's working size) a skeleton is a dot, not a pose."""


def working_size(width: int, height: int, pixel_area: int, multiple: int) -> tuple[int, int]:
    """The model's size for a ``width`` x ``height`` shot: about ``pixel_area`` pixels, aspect
    kept, both sides multiples of ``multiple`` (at least one tile)."""
    if width <= 0 or height <= 0:
        raise ShotError(f"width/height: the shot is {width}x{height}; both must be positive")
    scale = math.sqrt(pixel_area / (width * height))
    return (
        max(multiple, round(width * scale / multiple) * multiple),
        max(multiple, round(height * scale / multiple) * multiple),
    )


def window_length(num_frames: int, temporal_factor: int) -> int:
    """The shortest clip of at least ``num_frames`` the codec takes (``1 + k * temporal_factor``,
    the causal video-VAE rule: the first frame is its own latent frame)."""
    return 1 + math.ceil(max(num_frames - 1, 0) / temporal_factor) * temporal_factor


def plan_windows(num_frames: int, window: int, overlap: int = DEFAULT_OVERLAP) -> list[int]:
    """Start frame of each window covering ``num_frames`` with windows of ``window`` frames.

    Consecutive windows share at least ``overlap`` frames (the first shared frame is the next
    window's reference); the last window is moved back to end exactly on the last frame, so no
    frame is generated past the shot.
    """
    if num_frames < 1:
        raise ShotError("frames: the shot has no frames; export at least one frame")
    if not 1 <= overlap < window:
        raise ValueError(
            f"overlap is {overlap}; it must be at least 1 and below the window {window}"
        )
    if num_frames <= window:
        return [0]
    stride = window - overlap
    count = math.ceil((num_frames - window) / stride) + 1
    starts = [i * stride for i in range(count)]
    starts[-1] = num_frames - window
    return starts


def blend_weights(shared: int) -> np.ndarray:
    """Weight of the later window on the ``shared`` frames two windows cover (the earlier one
    gets ``1 - w``): a linear ramp from 0 on the shared reference frame towards 1."""
    return np.arange(shared, dtype=np.float32) / shared


class WindowStitcher:
    """Cross-fades consecutive windows into the shot's frames, holding only the frames a later
    window still blends into (the overlap), so a shot's length costs no memory."""

    def __init__(self) -> None:
        self.pending = np.zeros((0, 0, 0, 3), dtype=np.float32)
        """(k,h,w,3) the stitched frames from the next window's start on, not final yet."""
        self.done = 0
        """The shot frame after the last one stitched."""

    def add(self, frames: np.ndarray, start: int, next_start: int | None) -> np.ndarray:
        """Stitch a window's ``frames`` (float) starting at shot frame ``start``, cross-fading
        the frames ``start .. done-1`` that earlier windows produced (``pending``, which begins
        at ``start``); return the float32 frames from ``start`` up to ``next_start`` (to the
        end without a next window), which no later window changes, and keep the rest."""
        shared = max(0, self.done - start)
        if shared != len(self.pending):
            raise ValueError(f"window at {start}: {len(self.pending)} frames pending, not {shared}")
        stitched = np.empty(frames.shape, dtype=np.float32)
        if shared:
            weight = blend_weights(shared)[:, None, None, None]
            stitched[:shared] = self.pending * (1.0 - weight) + frames[:shared] * weight
        stitched[shared:] = frames[shared:]
        self.done = start + len(frames)
        final = len(stitched) if next_start is None else next_start - start
        self.pending = stitched[final:].copy()
        return stitched[:final]


def check_subject_size(joints2d: np.ndarray, in_front: np.ndarray, scale: np.ndarray) -> None:
    """Fail early when the working size is too small to draw the subject as a pose."""
    if not in_front.any():
        raise ShotError(
            "visible: no joint is in front of the camera in any frame; aim the camera at the rig"
        )
    points = np.where(in_front[..., None], joints2d * scale, np.nan)[in_front.any(axis=1)]
    extent = float(np.nanmax(np.nanmax(points, axis=1) - np.nanmin(points, axis=1)))
    if extent < MIN_SUBJECT_PIXELS:
        raise ShotError(
            f"width/height: at the model's working size the subject spans {extent:.1f} px, too "
            "small to hold a pose; frame the subject larger or raise the resolution"
        )


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline needs to know about a model beyond its weights (``pipeline.json``)."""

    window_frames: int = 16
    """Frames the model generates at once (its training clip length)."""
    pixel_area: int = 64 * 64
    """Native pixel budget: the working size has about this many pixels, aspect kept."""
    size_multiple: int = 16
    """Working width and height are multiples of this (codec factor x patch size)."""
    steps: int = 20
    shift: float = DEFAULT_SHIFT
    reference_source: float | None = None
    """None: the flow starts from pure noise (as Wan). A number s: it starts from the reference
    latent repeated over the window plus s x noise, for a model trained that way (a small model
    then only learns the change from the reference)."""
    reference_detail: float | None = None
    """None: frames are the codec's decode. A number tau: the flow base's detail that the
    codec loses (its pixels minus their decode) is added back wherever a frame's latent is
    close to the base's, with weight exp(-d / tau), d the per-cell mean squared latent
    difference; a small lossy codec otherwise blurs what the model did not change."""
    warp_outside_region: bool = False
    """With ``flow_base`` "warp": keep the warped reference's own pixels outside the region
    where the warp is a guess (``WarpedReference.region``: around the moved skeleton and where
    the subject uncovered background) and the network's frames inside it. Outside, a still
    scene under the moving camera is the warp exactly, which a small codec can only blur."""
    warp_long_side: int | None = None
    """With ``flow_base`` "warp" and ``upscale``: the warp runs at the shot's own size, its long
    side at most this many pixels, and the network (at the working size) only adds its
    correction to it, at low frequency, inside the guess region (``compose_detail``): the
    reference's own pixels stay sharp in every frame. None: the warp runs at the working size
    and the frames are upscaled."""
    flow_base: str = "reference"
    """With ``reference_source``: what the flow starts from and a ``reference_delta`` model's
    change is measured from. "reference": the reference repeated over the window. "warp": the
    reference moved along each anchor's skeleton and camera (``engine.warp``), for a model
    trained that way."""
    network: bool = True
    """False, with ``flow_base`` "warp": the frames are the flow base alone, every anchor's warp
    of the reference in the guidance mix at the warp's size (``PoseAnythingPipeline.warp_window``);
    the transformer, the codec and the text encoder never run, so steps, seed and PTCM change
    nothing. For a model whose network does not beat its warp: the default model's network
    adds +0.02 dB subject PSNR to it at the shot's size (its model card) and would take most of
    a render's time."""
    sigmas: str = "diffusers"
    """The sampler's schedule (``sampling.SIGMA_SCHEDULES``): "diffusers", which the default
    model was trained and tuned on; "release", the official code's, for its weights."""
    working_size_rule: str = "pixel_area"
    """"pixel_area": about ``pixel_area`` pixels, aspect kept, sides rounded to
    ``size_multiple``, the reference centre-cropped and resized with Lanczos (the default model
    trained on a pixel budget). "long_side": the release's, long side 832 and both sides
    floored to ``size_multiple`` (1920x1080 -> 832x448), the reference resized bilinearly
    without a crop, as its test script loads images."""
    skeleton_drawing: str = "engine"
    """"engine": skeleton images drawn at the working size from the joints, part masks from
    the rig's bone chains (``contract.skeleton``), what the default model was trained on.
    "release": drawn the release's way at the shot's size and resized, part masks cut from
    those images (``release_poses``), what the official weights know; it also renders shots of
    given skeleton images (``pose_source`` "images")."""
    min_bone_px: float = 0.0
    """With "release" drawing: bones shorter than this in every frame (pixels at the working
    size) are left out; a Rigify rig's face and finger bones would draw a tangle where the
    release's medial-axis skeletons have a line."""

    def __post_init__(self) -> None:
        if self.flow_base not in FLOW_BASES:
            raise ValueError(f"flow_base {self.flow_base!r} is not one of {FLOW_BASES}")
        choices = (
            ("sigmas", SIGMA_SCHEDULES),
            ("working_size_rule", WORKING_SIZE_RULES),
            ("skeleton_drawing", SKELETON_DRAWINGS),
        )
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {allowed}")
        if self.flow_base == "warp" and self.reference_source is None:
            raise ValueError("flow_base 'warp' needs reference_source (a flow from the base)")
        if not self.network and self.flow_base != "warp":
            raise ValueError("network false needs flow_base 'warp': the warp is then the video")

    @classmethod
    def from_dict(cls, data: dict, source: str = "PipelineConfig") -> PipelineConfig:
        """The config in ``data``; a key that is not a field is named in a warning (``source``:
        where ``data`` came from) and ignored."""
        return cls(**known_fields(cls, data, source))


FULL_MODEL_CONFIG = PipelineConfig(
    window_frames=81,
    pixel_area=832 * 480,
    size_multiple=32,
    steps=50,
    shift=5.0,
    sigmas="release",
    working_size_rule="long_side",
    skeleton_drawing="release",
    min_bone_px=6.0,
)
"""The official PoseAnything on Wan2.2-TI2V-5B as its release runs it: 81 frames, long side 832
(``pixel_area`` for a ``--pixel-area`` budget), 50 steps, shift 5, its schedule and drawing."""


@dataclass(frozen=True)
class Progress:
    """One sampling step done, as the callback sees it."""

    step: int
    total: int
    eta_s: float
    window: int
    windows: int
    stage: str
    """"ptcm" while reading the part correspondence, "sampling" afterwards; "warp" for a
    warp-only window (``PipelineConfig.network`` off)."""
    preview: Callable[[], np.ndarray]
    """Decodes the current estimate of the window's last frame, (H,W,3) uint8, on request (only
    its last latent frame, so a big VAE does not decode the whole window for a thumbnail)."""


@dataclass(frozen=True)
class FinishedFrames:
    """Frames of the shot that no later window changes, as a ``RenderStream`` hands them out."""

    start: int
    """The shot frame (0-based) of ``frames[0]``."""
    frames: np.ndarray
    """(n,H,W,3) uint8 at the shot's size (the working size without ``settings.upscale``)."""


@dataclass(frozen=True)
class RenderResult:
    frames: np.ndarray
    """(F,H,W,3) uint8, F = the shot's frame count."""
    report: dict
    """Settings, seed, working size, windows and part correspondence, for engine.json."""


@dataclass(frozen=True)
class RenderPlan:
    """``RenderSettings`` resolved against a shot and a model: everything a render will do."""

    settings: RenderSettings
    steps: int
    subject: float
    camera: float
    seed: int
    width: int
    height: int
    anchors: tuple[str, ...]
    starts: tuple[int, ...]
    """First frame of each window."""
    length: int
    """Frames a window generates (the last window may run past the shot and is trimmed)."""
    ptcm: bool
    capture: int
    """Steps sampled before the part correspondence is read (0 without PTCM)."""
    active: int
    """Steps with part attention on after the restart (0 without PTCM)."""
    network: bool = True
    """False: every window is the warp alone (``PipelineConfig.network``), no sampling step."""

    @property
    def steps_per_window(self) -> int:
        """Progress steps a window takes: its sampling steps, or one for a warp-only window."""
        return self.capture + self.steps if self.network else 1

    @property
    def total_steps(self) -> int:
        return self.steps_per_window * len(self.starts)

    def report(self, shift: float, num_frames: int, correspondences: list) -> dict:
        """The render's settings and choices, for engine.json."""
        return {
            "settings": {
                "steps": self.steps,
                "shift": shift,
                "subject_guidance": self.subject,
                "camera_guidance": self.camera,
                "camera_anchor": self.settings.camera_anchor,
                "seed": self.seed,
                "ptcm": self.ptcm,
                "upscale": self.settings.upscale,
                "overlap": self.settings.overlap,
                "blank_pose": self.settings.blank_pose,
                "network": self.network,
            },
            "seed": self.seed,
            "anchors": list(self.anchors),
            "working_size": [self.width, self.height],
            "windows": [[start, min(self.length, num_frames - start)] for start in self.starts],
            "ptcm": {
                "enabled": self.ptcm,
                "capture_step": self.capture if self.ptcm else None,
                "active_steps": self.active if self.ptcm else None,
                "part_correspondence": correspondences,
            },
        }


@dataclass(frozen=True, eq=False)
class RenderInputs:
    """What every window of one render shares, prepared once (``PoseAnythingPipeline.prepare``)."""

    shot: Shot
    plan: RenderPlan
    scale: np.ndarray
    """(2,) x and y factors from the shot's pixels to the working size's."""
    tracks: dict[str, SkeletonTrack]
    """Each anchor's skeleton in the shot's pixels (``engine.guidance.anchor_tracks``)."""
    rectangle: SkeletonTrack | None
    """The frame's rectangle moved by the camera, for the "warp" flow base (else None)."""
    mix: torch.Tensor
    """(A,) each anchor's weight in the guidance mix, in ``plan.anchors`` order."""
    text: torch.Tensor | None
    """(1,L,D) the prompt, encoded (None without the network)."""
    pose_frames: frozenset[int] | None
    """Shot frames that carry a pose (None: all of them; empty with ``blank_pose``)."""
    reference: np.ndarray
    """(h,w,3) uint8: the reference image at the working size, the first window's reference."""
    detail: DetailInputs | None
    """With ``warp_long_side``: the reference at the warp's size (else None)."""
    cut: SubjectLayers | None
    """With the "warp" flow base: the reference cut by the subject's mask at the warp's size
    (``warp.cut_subject``), shared by every window and anchor."""
    background: Mapping[int, np.ndarray] | None
    """With the "warp" flow base: the shot's background plates at its size, frame -> (H,W,3)
    uint8, read window by window (None: the shot has none)."""
    style: release_poses.ReleaseStyle | None
    """With ``skeleton_drawing`` "release": how skeleton images and part masks are drawn (and
    the given images of a shot without joints); None: ``contract.skeleton``'s drawing."""


@dataclass(frozen=True, eq=False)
class DetailInputs:
    """The reference at the size the warp runs at when it runs above the working size."""

    reference: np.ndarray
    """(H,W,3) uint8: the reference at the warp's size, frame 0 of the video."""
    scale: np.ndarray
    """(2,) x and y factors from the shot's pixels to the warp's."""


def detail_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """The shot's size, shrunk (aspect kept) so its long side is at most ``long_side``."""
    factor = min(1.0, long_side / max(width, height))
    return max(1, round(width * factor)), max(1, round(height * factor))


def compose_detail(warped: np.ndarray, region: np.ndarray, change: np.ndarray) -> np.ndarray:
    """The warp at full size plus the network's correction: ``warped`` (n,H,W,3) and its guess
    ``region`` (n,H,W) at the warp's size, ``change`` (n,h,w,3) what the network changed from
    its flow base, at the working size. Inside the region the change, upsampled (it is only
    low-frequency at that size), is added; outside it the warp's pixels stand."""
    height, width = warped.shape[1:3]
    correction = resize_frames(change, width, height)
    return np.clip(warped + region[..., None] * correction, 0.0, 255.0)


@dataclass(frozen=True, eq=False)
class WindowConditions:
    """One window's encoded conditions (``PoseAnythingPipeline.condition_window``)."""

    index: int
    frames: np.ndarray
    """(length,) the shot frame of each window frame (past the shot's end: its last frame)."""
    poses: list[int] | None
    """Window frames that carry a pose (None: all of them)."""
    pose_latents: torch.Tensor
    """(A,C,T,h,w) each anchor's skeleton video, encoded."""
    reference_latent: torch.Tensor
    """(1,C,1,h,w) the window's reference frame, encoded: the clean first latent frame."""
    base_latent: torch.Tensor
    """(1,C,T,h,w) the anchors' flow bases in the guidance mix: where the mixed prediction
    starts from."""
    base_offsets: torch.Tensor | None
    """(A,C,T,h,w) each anchor's flow base minus the reference (None: the base is the
    reference repeated), for a ``reference_delta`` model (``sampling.rebase_velocity``)."""
    base: np.ndarray
    """(length,h,w,3) float: the mixed flow base in pixels at the working size, for the detail
    restore."""
    region: np.ndarray | None
    """(length,H,W) where the warp is a guess (``warp_outside_region``), at the warp's size;
    None without a warp."""
    warped: np.ndarray | None
    """(length,H,W,3) float: the mixed flow base at the warp's size when it runs above the
    working size (``warp_long_side``), else None."""
    part_masks: FramePartMasks | None
    """PTCM part masks of every window frame on the token grid; None without PTCM."""


@dataclass(frozen=True, eq=False)
class SampledWindow:
    """One window sampled and decoded (``PoseAnythingPipeline.sample_window``)."""

    frames: np.ndarray
    """(n,h,w,3) float in [0, 255], cut at the shot's last frame."""
    latents: torch.Tensor | None
    """(1,C,T,h,w) the sampler's clean latents (None: a warp-only window)."""
    correspondence: torch.Tensor | None
    """The part matching PTCM read (``ptcm.resolve_parts``; None without PTCM)."""


class _ProgressClock:
    """Turns each window's step count into overall progress with an ETA for the callback."""

    def __init__(self, plan: RenderPlan, callback, decode) -> None:
        self.plan = plan
        self.callback = callback
        self.decode = decode
        self.began = time.perf_counter()

    def window(self, index: int):
        """The sampler's ``on_step(steps_done, x0)`` function of window ``index``."""

        def on_step(step: int, x0: torch.Tensor) -> None:
            self.step(index, step, lambda: to_uint8(self.decode(x0[:, :, -1:])[-1]))

        return on_step

    def step(self, index: int, step: int, preview: Callable[[], np.ndarray]) -> None:
        """Tell the callback that window ``index`` has done ``step`` of its steps."""
        if self.callback is None:
            return
        plan = self.plan
        overall = index * plan.steps_per_window + step
        elapsed = time.perf_counter() - self.began
        stage = "warp" if not plan.network else "sampling"
        self.callback(
            Progress(
                step=overall,
                total=plan.total_steps,
                eta_s=elapsed / overall * (plan.total_steps - overall),
                window=index + 1,
                windows=len(plan.starts),
                stage="ptcm" if plan.ptcm and step <= plan.capture else stage,
                preview=preview,
            )
        )


class RenderStream:
    """A render's frames as they are finished (``PoseAnythingPipeline.stream``): iterating it
    samples the windows one after the other and yields each window's ``FinishedFrames`` once
    its cross-fade with the next window is resolved, so a writer can take them while the next
    window samples and the shot's length costs no memory. ``report`` is complete after the
    last window."""

    def __init__(
        self,
        pipeline: PoseAnythingPipeline,
        inputs: RenderInputs,
        callback: Callable[[Progress], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.inputs = inputs
        self.callback = callback
        self.cancel = cancel
        self.correspondences: list = []
        """The part matching PTCM read in each window sampled so far."""

    def __iter__(self) -> Iterator[FinishedFrames]:
        pipeline, inputs = self.pipeline, self.inputs
        starts = inputs.plan.starts
        self.correspondences = []
        clock = _ProgressClock(inputs.plan, self.callback, pipeline.decode_latents)
        stitcher, reference_frame = WindowStitcher(), inputs.reference
        for index, start in enumerate(starts):
            # 3. Sample the window from its reference frame (or warp it, without the network).
            if inputs.plan.network:
                on_step = clock.window(index)
                window = pipeline.sample_window(
                    inputs, index, reference_frame, on_step, self.cancel
                )
            else:
                window = pipeline.warp_window(inputs, index, self.cancel)
                clock.step(index, 1, lambda last=window.frames[-1]: to_uint8(last))
            check_generated_frames(window.frames, start, inputs.reference)
            if window.correspondence is not None:
                self.correspondences.append(window.correspondence.cpu().tolist())
            # 4. Stitch it; the next window starts from the first frame the two share.
            next_start = starts[index + 1] if index + 1 < len(starts) else None
            final = stitcher.add(window.frames, start, next_start)
            if next_start is not None:
                reference_frame = np.rint(stitcher.pending[0]).astype(np.uint8)
            # 5. Hand out what no later window changes: uint8 frames at the shot's size.
            yield FinishedFrames(start, pipeline.finish_frames(inputs, final))

    @property
    def report(self) -> dict:
        """The render's settings, choices and part correspondence, for engine.json."""
        plan, shot = self.inputs.plan, self.inputs.shot
        return plan.report(self.pipeline.config.shift, shot.num_frames, self.correspondences)


def window_frames(inputs: RenderInputs, index: int) -> tuple[np.ndarray, list[int] | None]:
    """The shot frame of each frame of window ``index`` (past the shot's end, a codec needing
    1 + k*t frames, its last frame: the last pose held), and the window frames that carry a
    pose (None: all of them)."""
    plan = inputs.plan
    start = plan.starts[index]
    frames = np.minimum(np.arange(start, start + plan.length), inputs.shot.num_frames - 1)
    if inputs.pose_frames is None:
        return frames, None
    return frames, [i for i, frame in enumerate(frames.tolist()) if frame in inputs.pose_frames]


def _guess_region(bases: list[WarpedReference], anchors: tuple[str, ...]) -> np.ndarray:
    """(T,H,W) where the network paints: the guess region of the anchor that carries the
    subject's skeleton (the shot's own, else the camera-free one); all of it without one."""
    carrier = next((anchors.index(n) for n in ("full", "subject") if n in anchors), 0)
    return bases[carrier].region


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 255] as uint8; NaN (a diverging model, refused once the window is
    done) as black, without numpy's warning about the cast."""
    return np.rint(np.nan_to_num(frames, nan=0.0)).clip(0, 255).astype(np.uint8)


def to_unit_range(frames: np.ndarray, device) -> torch.Tensor:
    """(F,H,W,3) uint8 -> (1,3,F,H,W) float in [-1, 1], the codecs' input."""
    video = torch.from_numpy(np.array(frames, dtype=np.uint8)).to(device)
    return (video.permute(3, 0, 1, 2)[None].float() / 127.5) - 1.0


def to_pixels(video: torch.Tensor) -> np.ndarray:
    """(1,3,F,H,W) float in [-1, 1] -> (F,H,W,3) float32 in [0, 255]."""
    pixels = ((video[0].float().clamp(-1, 1) + 1.0) * 127.5).permute(1, 2, 3, 0)
    return pixels.cpu().numpy()


def fit_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop ``image`` to the aspect of ``width`` x ``height`` and resize it (Lanczos)."""
    from PIL import Image

    h, w = image.shape[:2]
    target = width / height
    if w / h > target:
        crop = round(h * target)
        image = image[:, (w - crop) // 2 : (w - crop) // 2 + crop]
    elif w / h < target:
        crop = round(w / target)
        image = image[(h - crop) // 2 : (h - crop) // 2 + crop]
    resized = Image.fromarray(np.ascontiguousarray(image[..., :3])).resize(
        (width, height), Image.Resampling.LANCZOS
    )
    return np.asarray(resized)


DEFAULT_COMPONENTS = {
    "transformer": "PoseAnythingTransformer",
    "codec": "TinyVideoCodec",
    "text_encoder": "HashTextEncoder",
}
COMPONENT_CLASSES = (
    "PoseAnythingTransformer",
    "TinyVideoCodec",
    "HashTextEncoder",
    "WanVAECodec",
    "UMT5TextEncoder",
)


def _load_component(class_name: str, folder: Path, name: str, dtype: torch.dtype):
    """Load component ``name`` of a model folder as ``class_name`` (one of COMPONENT_CLASSES)."""
    from .. import model

    kind = getattr(model, class_name)
    if class_name in ("WanVAECodec", "UMT5TextEncoder"):
        return kind.from_pretrained(folder, subfolder=name, torch_dtype=dtype)
    return kind.from_pretrained(folder / name, torch_dtype=dtype, low_cpu_mem_usage=False)


class PoseAnythingPipeline:
    """The model, codec and text encoder of one PoseAnything model, and how to run them on a shot.

    ``model(latents, pose_latents, timestep, text_embeds, ptcm)`` is the transformer
    (``engine.model.PoseAnythingTransformer``); ``codec`` turns (B,3,F,H,W) videos in [-1, 1]
    into (B,C,T,h,w) latents and back; ``text_encoder.encode(prompts)`` gives (B,L,D).

    ``render`` runs its steps in order, and each can be called on its own (the tests do):
    ``plan`` (sizes, windows, anchors, steps) -> ``prepare`` (``RenderInputs``: anchor tracks,
    guidance mix, text) -> per window ``sample_window`` (``condition_window``, the sampler,
    ``decode_window``; ``warp_window`` instead without the network), ``WindowStitcher.add`` and
    ``finish_frames`` (uint8 at the shot's
    size). ``stream`` hands the frames out window by window (``RenderStream``, what a video
    writer takes); ``render`` gathers them (``RenderResult``).
    """

    def __init__(
        self,
        model: PoseAnythingTransformer,
        codec: VideoCodec,
        text_encoder: TextEncoder,
        config: PipelineConfig = PipelineConfig(),
        model_id: str = "",
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.codec = codec.to(device).eval() if hasattr(codec, "to") else codec
        self.text_encoder = text_encoder
        self.config = config
        self.model_id = model_id
        self.device = torch.device(device)
        tile = codec.spatial_factor * max(model.config.patch_size[1:])
        if config.size_multiple % tile:
            raise ValueError(
                f"size_multiple {config.size_multiple} must be a multiple of the codec factor x "
                f"patch size ({tile}), so every working size maps to whole tokens"
            )

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, device: str | torch.device = "cpu"
    ) -> PoseAnythingPipeline:
        """Load a model folder (None: the bundled default model).

        Layout, as diffusers pipelines: ``pipeline.json`` (model id, ``PipelineConfig``, the
        class of each component, optional ``torch_dtype``) and one subfolder per component
        (``transformer/``, ``codec/``, ``text_encoder/``) with safetensors weights. The default
        model's components are the tiny codec and hash text encoder; the full model names
        ``WanVAECodec`` and ``UMT5TextEncoder`` (diffusers-format Wan2.2 subfolders).
        """
        folder = resolve_model_dir(path)
        meta = json.loads((folder / MODEL_INDEX).read_text(encoding="utf-8"))
        dtype = getattr(torch, meta.get("torch_dtype", "float32"))
        loaded = {}
        for name, default in DEFAULT_COMPONENTS.items():
            class_name = meta.get("components", {}).get(name, default)
            if class_name not in COMPONENT_CLASSES:
                raise CheckpointError(
                    f"{MODEL_INDEX}: component {name} is {class_name!r}; this engine knows "
                    f"{', '.join(sorted(COMPONENT_CLASSES))}"
                )
            loaded[name] = _load_component(class_name, folder, name, dtype)
        return cls(
            loaded["transformer"],
            loaded["codec"],
            loaded["text_encoder"].eval(),
            PipelineConfig.from_dict(meta.get("config", {}), f"{folder / MODEL_INDEX} config"),
            model_id=str(meta.get("model_id", folder.name)),
            device=device,
        )

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the pipeline as a model folder ``from_pretrained`` reads (safetensors only)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, component in (
            ("transformer", self.model),
            ("codec", self.codec),
            ("text_encoder", self.text_encoder),
        ):
            component.save_pretrained(folder / name)
        meta = {
            "model_id": self.model_id,
            "config": asdict(self.config),
            "components": {
                "transformer": type(self.model).__name__,
                "codec": type(self.codec).__name__,
                "text_encoder": type(self.text_encoder).__name__,
            },
        }
        (folder / MODEL_INDEX).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return folder

    def working_size(self, shot: Shot) -> tuple[int, int]:
        """The (width, height) the model renders ``shot`` at (``working_size_rule``)."""
        config = self.config
        if config.working_size_rule == "long_side":
            size = release_poses.long_side_size(
                shot.width, shot.height, multiple=config.size_multiple
            )
            return max(size[0], config.size_multiple), max(size[1], config.size_multiple)
        return working_size(shot.width, shot.height, config.pixel_area, config.size_multiple)

    def fit_reference(self, reference: np.ndarray, width: int, height: int) -> np.ndarray:
        """The reference at the working size, as the ``working_size_rule`` loads it."""
        if self.config.working_size_rule == "long_side":
            return resize_image(reference[..., :3], width, height, "release")
        return fit_image(reference, width, height)

    def __call__(
        self,
        shot: Shot,
        reference: np.ndarray,
        settings: RenderSettings | None = None,
        callback: Callable[[Progress], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Render ``shot`` from ``reference`` (H,W,3) uint8: (F,H,W,3) uint8 frames."""
        return self.render(shot, reference, settings, callback, cancel).frames

    def encode_videos(self, videos: list[np.ndarray]) -> torch.Tensor:
        """Same-size uint8 videos (F,H,W,3) -> latents (len(videos),C,T,h,w), one codec call."""
        batch = torch.cat([to_unit_range(video, self.device) for video in videos])
        return self.codec.encode(batch)

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (1,C,T,h,w) -> frames (F,H,W,3) float32 in [0, 255]."""
        return to_pixels(self.codec.decode(latents))

    def plan(self, shot: Shot, settings: RenderSettings | None = None) -> RenderPlan:
        """Resolve ``settings`` against the shot and the model: sizes, windows, anchors, steps."""
        settings = settings or RenderSettings()
        if shot.pose_source == "images" and self.config.skeleton_drawing != "release":
            raise ShotError(
                f"pose_source: {shot.name} has skeleton images but no joints (imported from the "
                "release's data with import-official); this model draws its skeletons from "
                "joints, so it cannot render the shot: render it with the full model (--full)"
            )
        guidance = shot.guidance
        subject = (
            guidance.subject if settings.subject_guidance is None else settings.subject_guidance
        )
        camera = guidance.camera if settings.camera_guidance is None else settings.camera_guidance
        network = self.config.network
        steps = settings.steps or int(shot.engine.get("steps") or self.config.steps)
        width, height = self.working_size(shot)
        temporal = self.codec.temporal_factor
        window = window_length(self.config.window_frames, temporal)
        starts = plan_windows(shot.num_frames, window, settings.overlap)
        parts = self.config.skeleton_drawing == "release" or shot.skeleton.num_parts > 0
        use_ptcm = network and settings.ptcm and bool(self.model.config.ptcm) and parts
        anchors = anchors_needed(subject, camera)
        if shot.pose_source == "images" and anchors != ("full",):
            raise ShotError(
                "guidance: a shot of given skeleton images has only its own poses, no subject or "
                "camera anchor to guide with; use subject and camera guidance 1"
            )
        capture, active = ptcm_steps(steps)
        return RenderPlan(
            settings=settings,
            steps=steps if network else 0,
            subject=subject,
            camera=camera,
            seed=shot.seed if settings.seed is None else settings.seed,
            width=width,
            height=height,
            anchors=anchors,
            starts=tuple(starts),
            length=window if len(starts) > 1 else window_length(shot.num_frames, temporal),
            ptcm=use_ptcm,
            capture=capture if use_ptcm else 0,
            active=active if use_ptcm else 0,
            network=network,
        )

    @torch.inference_mode()
    def render(
        self,
        shot: Shot,
        reference: np.ndarray,
        settings: RenderSettings | None = None,
        callback: Callable[[Progress], None] | None = None,
        cancel: CancelToken | None = None,
        pose_images: Mapping[int, np.ndarray] | None = None,
        subject_mask: np.ndarray | None = None,
        background: Mapping[int, np.ndarray] | None = None,
    ) -> RenderResult:
        """Render ``shot`` window by window (see the module docstring).

        Args:
            shot: the skeleton and camera tracks, prompt, seed, guidance and sparse poses.
            reference: (H,W,3) uint8, the subject in the shot's first pose, any size: it is
                centre-cropped to the shot's aspect and resized to the working size (and to
                the warp's size, ``warp_long_side``).
            settings: per-render choices; None fields fall back to the shot's, then the model's.
            callback: called after every sampling step with a ``Progress`` (ETA, preview).
            cancel: checked before every sampling step; a cancel raises ``Cancelled``.
            pose_images: the skeleton images of a shot without joints (``read_pose_images``).
            subject_mask: the reference's subject, (H,W) in 0..1 (``load_reference``): what
                the warp cuts out and the release's part masks are cut from (None: a band
                around the skeleton).
            background: the shot's background plates (``read_background``): what the warp
                lays the moved subject over (None: the reference's background moved by the
                camera). Only a "warp" flow base reads them.

        Returns:
            ``RenderResult``: (F,H,W,3) uint8 frames, F the shot's frame count, at the shot's
            size (the working size without ``settings.upscale``), and the report for
            engine.json.

        Raises:
            ShotError: no joint is in front of the camera, or the subject is too small to draw
                at the working size.
        """
        stream = self.stream(
            shot, reference, settings, callback, cancel, pose_images, subject_mask, background
        )
        frames = np.concatenate([finished.frames for finished in stream])
        return RenderResult(frames, stream.report)

    def stream(
        self,
        shot: Shot,
        reference: np.ndarray,
        settings: RenderSettings | None = None,
        callback: Callable[[Progress], None] | None = None,
        cancel: CancelToken | None = None,
        pose_images: Mapping[int, np.ndarray] | None = None,
        subject_mask: np.ndarray | None = None,
        background: Mapping[int, np.ndarray] | None = None,
    ) -> RenderStream:
        """Plan and prepare the render of ``shot`` now (bad input raises here, before any
        frame), and return its frames to iterate window by window (``RenderStream``); the
        arguments are ``render``'s."""
        # 1. Plan: working size, windows, guidance anchors and steps.
        plan = self.plan(shot, settings)
        # 2. Prepare what every window shares: anchor tracks, guidance mix, text, reference.
        inputs = self.prepare(shot, reference, plan, pose_images, subject_mask, background)
        return RenderStream(self, inputs, callback, cancel)

    @torch.inference_mode()
    def prepare(
        self,
        shot: Shot,
        reference: np.ndarray,
        plan: RenderPlan,
        pose_images: Mapping[int, np.ndarray] | None = None,
        subject_mask: np.ndarray | None = None,
        background: Mapping[int, np.ndarray] | None = None,
    ) -> RenderInputs:
        """Check that the subject can be drawn at the working size (or that a shot of skeleton
        images comes with them), then prepare what every window shares: each anchor's skeleton
        track, the guidance mix, the text, the reference at the working size, the drawing."""
        scale = np.array([plan.width / shot.width, plan.height / shot.height])
        if shot.pose_source == "images":
            if pose_images is None:
                raise ValueError("a shot of skeleton images renders with its pose_images")
        else:
            check_subject_size(shot.joints2d, shot.in_front, scale)
        style = None
        if self.config.skeleton_drawing == "release":
            style = release_poses.ReleaseStyle(
                (shot.width, shot.height),
                (plan.width, plan.height),
                self.config.min_bone_px,
                pose_images,
                subject_mask,
            )
        weights = anchor_weights(plan.subject, plan.camera)
        pose_frames = None if shot.pose_frames is None else frozenset(shot.pose_frames)
        detail = None
        warps = self.config.flow_base == "warp"
        if warps and self.config.warp_long_side and plan.settings.upscale:
            size = detail_size(shot.width, shot.height, self.config.warp_long_side)
            if size[0] * size[1] > plan.width * plan.height:
                detail = DetailInputs(
                    reference=fit_image(reference, *size),
                    scale=np.array([size[0] / shot.width, size[1] / shot.height]),
                )
        tracks = anchor_tracks(shot, plan.anchors, plan.settings.camera_anchor)
        cut = None
        if warps and shot.pose_source == "joints":
            # Every anchor's first frame is the shot's: one cut of the reference serves all.
            size = (plan.width, plan.height) if detail is None else detail.reference.shape[1::-1]
            mask = None if subject_mask is None else resize_image(subject_mask, *size)
            cut = cut_subject(
                self.fit_reference(reference, *size) if detail is None else detail.reference,
                mask,
                full_track(shot).select([0], np.array(size) / [shot.width, shot.height]),
            )
        return RenderInputs(
            shot=shot,
            plan=plan,
            scale=scale,
            tracks=tracks,
            rectangle=rectangle_track(shot) if self.config.flow_base == "warp" else None,
            mix=torch.tensor([weights[name] for name in plan.anchors], device=self.device),
            text=self.text_encoder.encode([shot.prompt]).to(self.device) if plan.network else None,
            pose_frames=frozenset() if plan.settings.blank_pose else pose_frames,
            reference=self.fit_reference(reference, plan.width, plan.height),
            detail=detail,
            cut=cut,
            background=background if warps else None,
            style=style,
        )

    @torch.inference_mode()
    def sample_window(
        self,
        inputs: RenderInputs,
        index: int,
        reference_frame: np.ndarray,
        on_step: StepFn | None = None,
        cancel: CancelToken | None = None,
    ) -> SampledWindow:
        """Sample window ``index`` from ``reference_frame`` ((h,w,3) uint8, its first frame)
        and decode it; the noise is seeded by the plan's seed plus ``index``."""
        window = self.condition_window(inputs, index, reference_frame)
        plan = inputs.plan
        latents, correspondence = sample_with_ptcm(
            self.model,
            self._flow_start(window.base_latent, plan.seed + index),
            window.reference_latent,
            window.pose_latents,
            names=plan.anchors,
            subject=plan.subject,
            camera=plan.camera,
            text_embeds=inputs.text,
            steps=plan.steps,
            shift=self.config.shift,
            part_masks=window.part_masks,
            base_offsets=window.base_offsets,
            on_step=on_step,
            cancel=cancel,
            sigmas=self.config.sigmas,
        )
        return SampledWindow(self.decode_window(inputs, window, latents), latents, correspondence)

    def warp_window(
        self, inputs: RenderInputs, index: int, cancel: CancelToken | None = None
    ) -> SampledWindow:
        """Window ``index`` without the network (``PipelineConfig.network`` off): the anchors'
        flow bases in the guidance mix, at the warp's size, (n,H,W,3) float cut at the shot's
        last frame; the first window's frame 0 is the reference exactly. No codec, no
        transformer, no seed."""
        if cancel is not None:
            cancel.check()
        plan = inputs.plan
        frames, poses = window_frames(inputs, index)
        bases = self.flow_bases(inputs, frames, poses)
        mixed = sum(w * b.frames for w, b in zip(inputs.mix.tolist(), bases, strict=True))
        mixed = np.clip(mixed, 0.0, 255.0)
        if index == 0:
            mixed[0] = inputs.reference if inputs.detail is None else inputs.detail.reference
        count = min(plan.length, inputs.shot.num_frames - plan.starts[index])
        return SampledWindow(mixed[:count], None, None)

    @torch.inference_mode()
    def condition_window(
        self, inputs: RenderInputs, index: int, reference_frame: np.ndarray
    ) -> WindowConditions:
        """Encode window ``index``'s conditions: each anchor's skeleton video, the reference
        frame, the flow base in the guidance mix and (with PTCM) the part masks."""
        plan = inputs.plan
        frames, poses = window_frames(inputs, index)
        pose_latents = self.encode_videos(self.pose_videos(inputs, frames, poses))
        # A later window starts from a frame of the last one, which is at the warp's size.
        reference_frame = resize_image(reference_frame, plan.width, plan.height)
        reference_latent = self.encode_videos([reference_frame[None]])
        bases = self.flow_bases(inputs, frames, poses)
        warped = None
        if bases is None:
            base_latents = reference_latent.expand_as(pose_latents)
            base = np.broadcast_to(reference_frame, (plan.length, *reference_frame.shape))
        else:
            mixed = sum(w * b.frames for w, b in zip(inputs.mix.tolist(), bases, strict=True))
            working = [resize_frames(b.frames, plan.width, plan.height) for b in bases]
            base_latents = self.encode_videos([np.rint(b).astype(np.uint8) for b in working])
            base = resize_frames(mixed, plan.width, plan.height)
            warped = mixed if inputs.detail is not None else None
        return WindowConditions(
            index=index,
            frames=frames,
            poses=poses,
            pose_latents=pose_latents,
            reference_latent=reference_latent,
            base_latent=(base_latents * inputs.mix.view(-1, 1, 1, 1, 1)).sum(0, keepdim=True),
            base_offsets=None if bases is None else base_latents - reference_latent,
            base=base,
            region=None if bases is None else _guess_region(bases, plan.anchors),
            warped=warped,
            part_masks=self.ptcm_masks(inputs, frames, poses, pose_latents) if plan.ptcm else None,
        )

    def decode_window(
        self, inputs: RenderInputs, window: WindowConditions, latents: torch.Tensor
    ) -> np.ndarray:
        """The window's frames from its sampled ``latents``, (n,h,w,3) float in [0, 255] cut at
        the shot's last frame: the codec's decode, with the flow base's detail restored
        (``reference_detail``) and the warp kept outside its guess region
        (``warp_outside_region``)."""
        generated = self.decode_latents(latents)
        if window.warped is not None:
            # Decoded against the base's own decode, the codec's loss cancels: only what the
            # network changed reaches the full-size warp.
            change = generated - self.decode_latents(window.base_latent)
            generated = compose_detail(window.warped, window.region, change)
            if window.index == 0:
                generated[0] = inputs.detail.reference  # frame 1 is the reference, exactly
        elif self.config.reference_detail is not None:
            generated = self._restore_detail(generated, latents, window.base, window.base_latent)
        if window.warped is None and window.region is not None and self.config.warp_outside_region:
            region = window.region[..., None]
            generated = region * generated + (1.0 - region) * window.base
        start = inputs.plan.starts[window.index]
        return generated[: min(inputs.plan.length, inputs.shot.num_frames - start)]

    def finish_frames(self, inputs: RenderInputs, frames: np.ndarray) -> np.ndarray:
        """Stitched float ``frames`` as uint8 frames at the shot's size (unless not
        ``upscale``)."""
        frames = to_uint8(frames)
        if inputs.plan.settings.upscale:
            frames = resize_frames(frames, inputs.shot.width, inputs.shot.height, "cubic")
        return frames

    def pose_videos(
        self, inputs: RenderInputs, frames: np.ndarray, poses: list[int] | None
    ) -> list[np.ndarray]:
        """Each anchor's skeleton drawn over the shot ``frames`` at the working size,
        (len(frames),h,w,3) uint8; with ``poses``, the other window frames are blank."""
        plan = inputs.plan
        if inputs.style is not None:
            return [inputs.style.video(inputs.tracks[name], frames, poses) for name in plan.anchors]
        videos = []
        for name in plan.anchors:
            track = inputs.tracks[name].select(frames, inputs.scale)
            videos.append(
                render_skeleton_frames(
                    track.joints2d,
                    track.in_front,
                    track.edges,
                    plan.width,
                    plan.height,
                    pose_frames=poses,
                )
            )
        return videos

    def flow_bases(
        self, inputs: RenderInputs, frames: np.ndarray, poses: list[int] | None
    ) -> list[WarpedReference] | None:
        """Each anchor's flow base over the shot ``frames`` (None: the window's reference).

        Every window warps the shot's own reference (its pose is frame 0's), not the frame the
        previous window generated: a long shot then does not blur or drift window by window."""
        if self.config.flow_base != "warp":
            return None
        plan = inputs.plan
        origin = np.concatenate([[0], frames])  # the shot's reference, then this window
        detail = inputs.detail
        reference, scale = (
            (inputs.reference, inputs.scale) if detail is None else (detail.reference, detail.scale)
        )

        def window(track: SkeletonTrack | None) -> SkeletonTrack | None:
            return None if track is None else track.select(origin, scale)

        plates = None
        if inputs.background is not None:
            height, width = reference.shape[:2]
            plates = [resize_image(inputs.background[int(f)], width, height) for f in origin]

        posed = None
        if poses is not None:
            posed = np.zeros(len(origin), dtype=bool)
            posed[[0, *(i + 1 for i in poses)]] = True
        camera_moves = plan.settings.camera_anchor == "rectangle"
        bases = [
            flow_base(
                reference,
                "blank" if plan.settings.blank_pose else name,
                window(inputs.tracks.get(name)) if name != "camera" else None,
                window(inputs.rectangle) if name != "camera" or camera_moves else None,
                len(origin),
                posed,
                layers=inputs.cut,
                plates=plates,
            )
            for name in plan.anchors
        ]
        return [WarpedReference(b.frames[1:], b.region[1:]) for b in bases]

    def ptcm_masks(
        self,
        inputs: RenderInputs,
        frames: np.ndarray,
        poses: list[int] | None,
        pose_latents: torch.Tensor,
    ) -> FramePartMasks:
        """PTCM masks of the shot's parts, per video frame, on the token grid of ``pose_latents``.

        Only frames that carry a pose get masks (and the window's first frame, the reference
        image, whose pose is the shot's): with sparse poses the model must not learn where the
        limbs are in the frames it was not shown. With the release's drawing
        (``inputs.style``) they are cut from the skeleton images of the track that carries the
        subject's skeleton.
        """
        shot, plan = inputs.shot, inputs.plan
        _, patch_h, patch_w = self.model.config.patch_size
        grid = (pose_latents.shape[-2] // patch_h, pose_latents.shape[-1] // patch_w)
        if inputs.style is not None:
            tracks = inputs.tracks
            carrier = tracks.get("full", tracks.get("subject")) or full_track(shot)
            return inputs.style.part_masks(carrier, frames, poses, grid).to(self.device)
        masks = part_masks(
            shot.joints2d[frames] * inputs.scale,
            shot.in_front[frames],
            shot.skeleton.edges,
            shot.skeleton.edge_part,
            plan.width,
            plan.height,
            grid,
        )  # (F, P, gh, gw)
        posed = None
        if poses is not None:
            posed = np.zeros(len(frames), dtype=bool)
            posed[[0, *poses]] = True
            posed = torch.from_numpy(posed)
        return FramePartMasks(torch.from_numpy(masks).to(self.device), masks.shape[1], posed)

    def _restore_detail(
        self, generated: np.ndarray, latents: torch.Tensor, base: np.ndarray, base_latent
    ) -> np.ndarray:
        """Add back the flow base's detail that the codec loses (its pixels minus their decode)
        where the latents stayed close to the base's (see ``PipelineConfig.reference_detail``);
        the first window's frame 0 becomes the reference exactly."""
        if self.codec.temporal_factor != 1:
            raise ValueError("reference_detail needs a codec that codes frames one by one")
        change = (latents[0] - base_latent[0]).float().pow(2).mean(0)  # (T,h,w)
        weight = torch.exp(-change / self.config.reference_detail)[:, None]
        weight = (
            torch.nn.functional.interpolate(
                weight, size=generated.shape[1:3], mode="bilinear", align_corners=False
            )[:, 0, :, :, None]
            .cpu()
            .numpy()
        )
        return np.clip(generated + weight * (base - self.decode_latents(base_latent)), 0.0, 255.0)

    def _flow_start(self, base_latent: torch.Tensor, seed: int) -> torch.Tensor:
        """The window's latents at sigma = 1: seeded noise, or the flow base plus noise."""
        noise = initial_noise(base_latent.shape, seed, self.device)
        if self.config.reference_source is None:
            return noise
        return base_latent + self.config.reference_source * noise
