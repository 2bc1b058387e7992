"""Render a shot folder from Python: the one path ``poseanything render``, ``poseanything batch``
and the add-on's engine process (``python -m poseanything.engine.cli render``) all take.

    from poseanything.engine.render import ModelChoice, RenderSettings, render_shot_folder

    render_shot_folder("SHOT", "take.mp4", RenderSettings(steps=4), ModelChoice())

The two frozen settings objects say how to render (``RenderSettings``) and with what
(``ModelChoice``); they are copied once from the command line or the add-on and passed down.
Importing this module does not import torch (the command lines list their options without it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoints.hub import DEFAULT_SOURCES, FullModelSources
from .contract.files import clean_partials, temporary_sibling, write_json_atomic
from .inference.settings import OptionError, RenderSettings

if TYPE_CHECKING:
    from .inference.cancel import CancelToken
    from .inference.pipeline import PipelineConfig, PoseAnythingPipeline, Progress

__all__ = [
    "ENGINE_JSON",
    "ModelChoice",
    "OptionError",
    "RenderSettings",
    "load_pipeline",
    "render_shot_folder",
]

ENGINE_JSON = "engine.json"
"""Written beside the video: settings, seed, model, device, timings, part correspondence."""
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("torch", "onnx")

EventFn = Callable[[str, dict], None]
"""``(event, fields)``: ``start`` once the model is loaded, and a download's ``plan``/``file``."""


@dataclass(frozen=True)
class ModelChoice:
    """Which model renders, and where and how it runs."""

    folder: Path | None = None
    """A model folder (``save_pretrained``); None: ``$POSEANYTHING_MODEL``, else the bundled one."""
    full: bool = False
    """The official PoseAnything (Wan2.2-TI2V-5B, a CUDA GPU) from ``sources``, not a folder."""
    sources: FullModelSources = DEFAULT_SOURCES
    online: bool = False
    """Let the full model fetch its missing files (the add-on sets it from Blender's "Allow
    Online Access"); otherwise nothing touches the network."""
    allow_cpu: bool = False
    """Run the full model on a CPU anyway (tests, tiny checkpoints; hours for a real one)."""
    cpu_offload: bool = False
    """Keep the full model's VAE in host memory between uses (less GPU memory)."""
    backend: str = "torch"
    """"onnx": the default model's denoiser and codec through ONNX Runtime."""
    window_frames: int | None = None
    """Frames generated at once (None: the model's; fewer frames, less memory)."""
    pixel_area: int | None = None
    """Working size in pixels (None: the model's)."""
    device: str = "auto"
    threads: int | None = None
    """CPU threads for torch (None: torch's choice; 1 is fastest on a busy machine)."""

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise OptionError(f"device is {self.device!r}; use one of {', '.join(DEVICES)}")
        if self.backend not in BACKENDS:
            raise OptionError(f"backend is {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.full and self.backend == "onnx":
            raise OptionError(
                "--backend onnx runs the default model; the full model runs with torch on a GPU"
            )
        if self.window_frames is not None and self.window_frames < 1:
            raise OptionError(f"--window-frames is {self.window_frames}; use at least 1")
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"--threads is {self.threads}; use at least 1")


def resolve_device(name: str) -> str:
    """``auto`` as the device it means here; a CUDA request without a GPU is an ``OptionError``."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise OptionError("device: --device cuda was asked for but no CUDA GPU is available")
    return name


def load_pipeline(model: ModelChoice, on_download: EventFn | None = None) -> PoseAnythingPipeline:
    """The pipeline ``model`` names, on its device: a model folder, or the full model (fetched
    first when ``model.online`` allows and files are missing, reporting to ``on_download``)."""
    import torch

    from .inference.pipeline import PoseAnythingPipeline

    if model.threads is not None:
        torch.set_num_threads(model.threads)
    device = resolve_device(model.device)
    if model.full:
        from .checkpoints.full_model import check_full_model_device, load_full_pipeline
        from .checkpoints.hub import download, inventory, require_complete
        from .inference.pipeline import FULL_MODEL_CONFIG

        check_full_model_device(device, model.allow_cpu)  # before fetching gigabytes for nothing
        if model.online and not inventory(model.sources).complete:
            download(model.sources, report=on_download)
        require_complete(model.sources)
        config = _sized(FULL_MODEL_CONFIG, model)
        return load_full_pipeline(model.sources, device, model.allow_cpu, model.cpu_offload, config)
    pipeline = PoseAnythingPipeline.from_pretrained(model.folder, device=device)
    pipeline.config = _sized(pipeline.config, model)
    if model.backend == "onnx":
        from .checkpoints.onnx import use_onnx_runtime

        use_onnx_runtime(pipeline)
    return pipeline


def _sized(config: PipelineConfig, model: ModelChoice) -> PipelineConfig:
    """``config`` with the model choice's ``window_frames`` / ``pixel_area`` overrides."""
    changes = {}
    if model.window_frames is not None:
        changes["window_frames"] = model.window_frames
    if model.pixel_area is not None:
        if model.pixel_area < config.size_multiple**2:
            raise OptionError(
                f"--pixel-area is {model.pixel_area}; use at least {config.size_multiple**2} "
                f"(one {config.size_multiple}x{config.size_multiple} tile)"
            )
        changes["pixel_area"] = model.pixel_area
        changes["working_size_rule"] = "pixel_area"  # a budget asked for beats a long side
    return dataclasses.replace(config, **changes)


def preview_path(out: Path) -> Path:
    """Where a render's live preview of ``out`` goes (removed when the render ends)."""
    return out.with_name(f".{out.stem}.preview.png")


def _check_folder_writable(folder: Path, option: str) -> None:
    """``folder`` exists (made if needed) and takes a new file: an ``OptionError`` otherwise
    (a path under a regular file, a read-only file system, no permission)."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OptionError(
            f"{option}: {blocker} is a file, so nothing can be written under it; choose a folder"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary_sibling(folder / ".poseanything-write-check").unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OptionError(
            f"{option}: cannot write in {folder} ({reason}); choose a writable folder"
        ) from error


def check_outputs(out: Path, frames_dir: Path | None, overwrite: bool) -> None:
    """Every output place is usable before any work: free (or ``overwrite``), an .mp4, and its
    folder (where engine.json and the preview go too) and the frames' folder take files."""
    from .contract.video import check_output_free

    if out.suffix.lower() != ".mp4":
        raise OptionError(f"--out: {out} must end in .mp4 (H.264 video)")
    check_output_free(out, overwrite)
    if frames_dir is not None:
        check_output_free(frames_dir, overwrite)
    for path, option in ((out, "--out"), (out.parent / ENGINE_JSON, "--out")):
        if path.is_dir():
            raise OptionError(f"{option}: {path} is a folder; choose another output name")
    _check_folder_writable(out.parent, "--out")
    if frames_dir is not None:
        if frames_dir.exists() and not frames_dir.is_dir():
            raise OptionError(f"--frames-dir: {frames_dir} is a file; choose a folder name")
        _check_folder_writable(frames_dir.parent, "--frames-dir")


def clean_leftovers(out: Path, frames_dir: Path | None) -> None:
    """Remove what a killed earlier render of these outputs left: partial files of the video,
    engine.json and the frames (``contract.files.clean_partials``) and a stale preview."""
    for path in (out, out.parent / ENGINE_JSON, preview_path(out), frames_dir):
        if path is not None:
            clean_partials(path)
    preview_path(out).unlink(missing_ok=True)


def render_shot_folder(
    shot_dir: str | Path,
    out: str | Path,
    settings: RenderSettings,
    model: ModelChoice,
    *,
    frames_dir: str | Path | None = None,
    overwrite: bool = False,
    on_event: EventFn | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
) -> dict:
    """Render the shot folder ``shot_dir`` into the video ``out`` (and PNG frames into
    ``frames_dir``), with ``engine.json`` beside the video; returns what engine.json holds.

    Outputs are checked before the model loads and written under temporary names, so a bad
    input, a cancel (``cancel``, between two sampling steps: ``Cancelled`` is raised) or a crash
    leaves no file, and without ``overwrite`` an existing output is never replaced. Bad input
    raises a ``BadInput`` (``ShotError``, ``ModelNotFoundError``, ``OutputExistsError``,
    ``OptionError`` ...); anything else is a bug or an accident.
    """
    from .contract.shot import read_background, read_pose_images, read_shot
    from .contract.video import FramesWriter, VideoWriter
    from .inference.memory import check_video_fits
    from .inference.reference import load_reference

    shot_dir, out = Path(shot_dir), Path(out)
    frames_dir = None if frames_dir is None else Path(frames_dir)
    started = time.perf_counter()
    check_outputs(out, frames_dir, overwrite)
    clean_leftovers(out, frames_dir)
    shot = read_shot(shot_dir)
    reference = load_reference(shot_dir, shot)
    pipeline = load_pipeline(model, on_download=on_event)
    if settings.upscale:
        check_video_fits(shot.width, shot.height, pipeline.config.window_frames)
    loaded = time.perf_counter()
    device = pipeline.device.type
    if on_event is not None:
        on_event(
            "start",
            {
                "shot": shot.name,
                "frames": shot.num_frames,
                "fps": shot.fps,
                "model": pipeline.model_id,
                "device": device,
            },
        )
        for note in reference.notes:
            on_event("note", {"message": note})
    stream = pipeline.stream(
        shot,
        reference.image,
        settings,
        callback=on_progress,
        cancel=cancel,
        pose_images=read_pose_images(shot_dir, shot) if shot.pose_source == "images" else None,
        subject_mask=reference.mask,
        background=read_background(shot_dir, shot),
    )
    # Each window's frames go to the writers once its cross-fade with the next is resolved:
    # a long shot is never held whole in memory. An error or a cancel leaves no file.
    with contextlib.ExitStack() as outputs:
        video = outputs.enter_context(VideoWriter(out, shot.fps, overwrite=overwrite))
        pngs = None
        if frames_dir is not None:
            pngs = outputs.enter_context(FramesWriter(frames_dir, overwrite=overwrite))
        writing = 0.0
        for chunk in stream:
            handed = time.perf_counter()
            video.append(chunk.frames)
            if pngs is not None:
                pngs.append(chunk.frames)
            height, width = chunk.frames.shape[1:3]
            writing += time.perf_counter() - handed
        generated = time.perf_counter()
        if cancel is not None:
            cancel.check()  # a cancel that came after the last step still writes nothing
    finished = time.perf_counter()
    generating = generated - loaded - writing
    report = {
        "video": out.name,
        "frames_dir": None if frames_dir is None else str(frames_dir),
        "shot": str(shot_dir.resolve()),
        "shot_name": shot.name,
        "num_frames": video.count,
        "fps": shot.fps,
        "size": [int(width), int(height)],
        "model": pipeline.model_id,
        "device": device,
        "backend": model.backend,
        "reference_mask": reference.mask_source,
        "reference_notes": list(reference.notes),
        "onnx_providers": getattr(pipeline.model, "providers", None),
        **stream.report,
        "timings_s": {
            "load": round(loaded - started, 3),
            "generate": round(generating, 3),
            "write": round(writing + finished - generated, 3),
            "total": round(finished - started, 3),
            "per_frame": round(generating / max(1, shot.num_frames), 4),
        },
    }
    write_json_atomic(out.parent / ENGINE_JSON, report)
    return report
