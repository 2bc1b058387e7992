"""``poseanything eval``: the default model on held-out clips, against ground truth and baselines.

Each clip is a folder made by the add-on's synthetic renderer (``make-eval-clips``: Blender's
Rigify metarigs, never seen in training): a shot folder plus ``frames/`` (ground truth) and
``masks/`` (subject coverage). Every row of the table renders every clip with the same seed and
compares frames 1.. (frame 0 is the given reference) at the clip's own resolution, the size
people watch (numbers at the working size hide blur and smudges):

- full model (the shot as exported, guidance 1.0, PTCM on, as ``poseanything render`` does:
  for the default model the warp alone, ``PipelineConfig.network`` off);
- the full model with its network on (the warp plus the network's correction: what the
  network adds is the difference);
- the model at its working size upscaled (``warp_long_side`` off, network on: the default
  engine before the warp ran at the shot's size);
- baselines: the reference frame repeated; the reference moved along the skeleton and the
  camera at the shot's size with no network (``engine.warp``: what the network adds is the
  difference); the same model with the skeleton blanked (no pose);
- ablations: PTCM off; sparse poses (every 4th frame, first and last only); subject guidance
  1.2 / 1.5 / 2.0.

Columns: PSNR, SSIM, L1 (the paper's metrics), subject-region PSNR (inside the union of the
ground-truth and reference masks), the subject's sharpness against the truth and its flicker
(``metrics``). A contact sheet per clip (rows: ground truth, full model, full model with the
network on, working size upscaled, no pose, warp only, repeated reference; columns: four
frames at full size and a crop of the subject in the last) is written beside the report.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..contract.shot import ImageFiles, Shot, read_background, read_shot
from ..inference.guidance import full_track, rectangle_track
from ..inference.pipeline import PoseAnythingPipeline, RenderSettings, fit_image
from ..inference.reference import load_reference
from ..inference.resize import resize_image
from ..inference.warp import flow_base
from . import TrainingError, metrics
from .metrics import video_metrics

FULL, REPEAT, NO_POSE = "full model", "repeated reference", "no pose"
WORKING = "working size, upscaled"
WARP = "warp only (no network)"
NETWORK = "full model, network on"
SHEET_ROWS = (FULL, NETWORK, WORKING, NO_POSE, WARP, REPEAT)
SHEET_FRAMES = 4


@dataclass(frozen=True)
class Row:
    """One line of the table: how to render (settings, shot change), or a model-free baseline
    ("repeat" or "warp")."""

    name: str
    settings: RenderSettings = RenderSettings()
    pose_frames: Callable[[int], tuple[int, ...]] | None = None
    baseline: str | None = None
    config: dict | None = None
    """``PipelineConfig`` fields this row changes (the working-size row: no full-size warp)."""


def _every_fourth(frames: int) -> tuple[int, ...]:
    return tuple(range(0, frames, 4))


def _first_and_last(frames: int) -> tuple[int, ...]:
    return (0, frames - 1)


def table_rows(ablations: bool = True) -> list[Row]:
    """The rows ``eval`` runs: the full model and both baselines, then the ablations."""
    base = RenderSettings()
    rows = [
        Row(FULL, base),
        Row(NETWORK, base, config={"network": True}),
        Row(WORKING, base, config={"warp_long_side": None, "network": True}),
        Row(REPEAT, baseline="repeat"),
        Row(WARP, baseline="warp"),
        Row(NO_POSE, replace(base, blank_pose=True)),
    ]
    if ablations:
        rows += [
            Row("PTCM off", replace(base, ptcm=False)),
            Row("sparse poses: every 4th", base, _every_fourth),
            Row("sparse poses: first and last", base, _first_and_last),
        ]
        rows += [Row(f"guidance {g}", replace(base, subject_guidance=g)) for g in (1.2, 1.5, 2.0)]
    return rows


@dataclass(frozen=True)
class EvalClip:
    """A held-out clip, at its own size unless asked for another."""

    name: str
    shot: Shot
    reference: np.ndarray  # (H,W,3) uint8 at the shot's size
    mask: np.ndarray  # (H,W) float32: the subject in the reference (``load_reference``)
    frames: np.ndarray  # (F,h,w,3) uint8 ground truth
    subject: np.ndarray  # (F,h,w) bool: ground-truth mask OR reference mask
    background: ImageFiles | None  # the shot's background plates, if it has them


def _read_png(path: Path, mode: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert(mode))


def load_clip(folder: Path, width: int | None = None, height: int | None = None) -> EvalClip:
    """Read a clip folder, its frames and masks at ``width`` x ``height`` (None: its own)."""
    from PIL import Image

    shot = read_shot(folder)
    width, height = width or shot.width, height or shot.height
    count = shot.num_frames
    paths = [folder / "frames" / f"{i:04d}.png" for i in range(1, count + 1)]
    mask_paths = [folder / "masks" / f"{i:04d}.png" for i in range(1, count + 1)]
    missing = [str(p) for p in paths + mask_paths if not p.is_file()]
    if missing:
        raise TrainingError(
            f"{folder} is not an evaluation clip: {missing[0]} is missing; make clips with "
            "`poseanything-blender make-eval-clips --out DIR`"
        )
    frames = np.stack([fit_image(_read_png(p, "RGB"), width, height) for p in paths])
    masks = np.stack(
        [
            np.asarray(
                Image.fromarray(_read_png(p, "L")).resize((width, height), Image.Resampling.BOX)
            )
            >= 128
            for p in mask_paths
        ]
    )
    reference = load_reference(folder, shot)
    return EvalClip(
        folder.name,
        shot,
        reference.image,
        reference.mask,
        frames,
        masks | masks[:1],
        read_background(folder, shot),
    )


def render_row(pipeline: PoseAnythingPipeline, clip: EvalClip, row: Row) -> np.ndarray:
    """The (F,h,w,3) uint8 video of ``row`` for ``clip``."""
    if row.baseline == "repeat":
        return np.repeat(clip.frames[:1], len(clip.frames), axis=0)
    if row.baseline == "warp":
        height, width = clip.frames.shape[1:3]
        mask = resize_image(clip.mask, width, height)
        warped = warp_along_shot(clip.shot, clip.frames[0], mask, clip.background)
        return np.rint(warped).clip(0, 255).astype(np.uint8)
    shot = clip.shot
    if row.pose_frames is not None:
        shot = replace(shot, pose_frames=row.pose_frames(shot.num_frames))
    if row.config:
        pipeline = copy.copy(pipeline)
        pipeline.config = replace(pipeline.config, **row.config)
    return pipeline.render(
        shot, clip.reference, row.settings, subject_mask=clip.mask, background=clip.background
    ).frames


def warp_along_shot(
    shot: Shot,
    reference: np.ndarray,
    mask: np.ndarray | None = None,
    background: Mapping[int, np.ndarray] | None = None,
):
    """``reference`` (h,w,3), at any size of the shot's aspect, moved along the shot's
    skeleton and camera over all its frames: (F,h,w,3) float. ``mask``: its subject (h,w);
    ``background``: the shot's plates (``read_background``)."""
    height, width = reference.shape[:2]
    scale = np.array([width / shot.width, height / shot.height])
    tracks = {"full": full_track(shot), "camera": rectangle_track(shot)}
    skeleton, rectangle = (track.select(scale=scale) for track in tracks.values())
    plates = None
    if background is not None:
        plates = [resize_image(background[f], width, height) for f in range(shot.num_frames)]
    return flow_base(
        reference, "full", skeleton, rectangle, shot.num_frames, mask=mask, plates=plates
    ).frames


def contact_sheet(
    path: Path, videos: dict[str, np.ndarray], ground_truth: np.ndarray, subject: np.ndarray
) -> None:
    """Rows: ground truth, then ``videos`` in order, labelled on the left; columns:
    ``SHEET_FRAMES`` frames at full size, then the last one's subject box enlarged to the
    frame's height (nearest neighbour: the pixels as they are)."""
    from PIL import Image, ImageDraw

    count, height, width = ground_truth.shape[:3]
    picks = np.unique(np.linspace(0, count - 1, SHEET_FRAMES).round().astype(int))
    rows_box, cols_box = metrics.subject_box(subject[picks[-1:]])
    crop_h, crop_w = rows_box.stop - rows_box.start, cols_box.stop - cols_box.start
    zoom = max(1, height // crop_h)
    label = 150
    sheet_width = label + len(picks) * width + crop_w * zoom
    rows = [("ground truth", ground_truth), *videos.items()]
    sheet = Image.new("RGB", (sheet_width, len(rows) * height), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (name, video) in enumerate(rows):
        sheet.paste(
            Image.fromarray(np.concatenate(list(video[picks]), axis=1)), (label, index * height)
        )
        crop = Image.fromarray(np.ascontiguousarray(video[picks[-1], rows_box, cols_box]))
        crop = crop.resize((crop_w * zoom, crop_h * zoom), Image.Resampling.NEAREST)
        sheet.paste(crop, (label + len(picks) * width, index * height))
        draw.text((4, index * height + height // 2 - 6), name, fill="black")
    sheet.save(path)


def format_table(results: dict[str, list[dict[str, float]]]) -> str:
    """Markdown table of the metrics averaged over clips, one line per row."""
    lines = [
        "| row | PSNR (dB) | SSIM | L1 | subject PSNR (dB) | sharpness | flicker |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, per_clip in results.items():
        mean = {key: float(np.mean([m[key] for m in per_clip])) for key in per_clip[0]}
        lines.append(
            f"| {name} | {mean['psnr']:.2f} | {mean['ssim']:.4f} | {mean['l1']:.4f} | "
            f"{mean['subject_psnr']:.2f} | {mean['sharpness']:.2f} | {mean['flicker']:+.2f} |"
        )
    return "\n".join(lines)


def network_note(config) -> str:
    """How the model's own rows ran: its network on with its steps, or off (the warp alone)."""
    if config.network:
        return f"{config.steps} steps"
    return f"network off as `render` runs it (the network rows: {config.steps} steps)"


def summary_line(results: dict[str, list[dict[str, float]]]) -> str:
    def mean_psnr(name: str) -> float:
        return float(np.mean([m["psnr"] for m in results[name]]))

    return (
        f"full PSNR {mean_psnr(FULL):.2f}, repeat-reference PSNR {mean_psnr(REPEAT):.2f}, "
        f"no-pose PSNR {mean_psnr(NO_POSE):.2f}"
    )


def evaluate(
    pipeline: PoseAnythingPipeline,
    clip_dirs: Sequence[Path],
    out: Path,
    rows: Sequence[Row] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, list[dict[str, float]]]:
    """Render every row for every clip, write the report ``out`` (markdown), a JSON of the
    per-clip numbers and contact sheets beside it; return {row: [metrics per clip]}."""
    rows = list(rows) if rows is not None else table_rows()
    out = Path(out)
    sheets = out.with_name(out.stem + "_sheets")
    sheets.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, float]]] = {row.name: [] for row in rows}
    per_clip: dict[str, dict[str, dict[str, float]]] = {}
    began = time.perf_counter()
    sizes: set[str] = set()
    for number, folder in enumerate(clip_dirs, 1):
        clip = load_clip(Path(folder))
        sizes.add(f"{clip.shot.width}x{clip.shot.height}")
        videos = {}
        for row in rows:
            video = render_row(pipeline, clip, row)
            metrics = video_metrics(video[1:], clip.frames[1:], clip.subject[1:])
            results[row.name].append(metrics)
            per_clip.setdefault(clip.name, {})[row.name] = metrics
            if row.name in SHEET_ROWS:
                videos[row.name] = video
        ordered = {name: videos[name] for name in SHEET_ROWS if name in videos}
        contact_sheet(sheets / f"{clip.name}.png", ordered, clip.frames, clip.subject)
        full = per_clip[clip.name].get(FULL, {})
        log(
            f"[{number}/{len(clip_dirs)}] {clip.name}: full PSNR {full.get('psnr', 0):.2f} "
            f"({time.perf_counter() - began:.0f} s)"
        )
    seconds = time.perf_counter() - began
    report = [
        f"# Evaluation of {pipeline.model_id}",
        "",
        f"{len(clip_dirs)} held-out clips ({', '.join(Path(c).name for c in clip_dirs)}), "
        "frames 1.. against ground truth at each clip's own resolution "
        f"({', '.join(sorted(sizes))}), seed from each shot, "
        f"{network_note(pipeline.config)}; {seconds:.0f} s.",
        "",
        format_table(results),
        "",
        f"Contact sheets (rows: ground truth, {'; '.join(SHEET_ROWS)}): `{sheets.name}/`.",
        "",
        summary_line(results),
        "",
    ]
    out.write_text("\n".join(report), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(per_clip, indent=2), encoding="utf-8")
    return results
