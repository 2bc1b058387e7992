"""``poseanything``: render a shot folder into a video from the command line or a subprocess.

``poseanything render SHOT_DIR --out FILE.mp4`` reads the shot, renders it with the default (or
``--model``) PoseAnything model and writes the mp4, optional PNG frames and ``engine.json``
(settings, seed, model, timings, part correspondence) beside the video.

With ``--progress json`` every line on stdout is one JSON object, for the Blender add-on, which
runs this as a subprocess: ``start``, ``progress`` (step, total, eta_s, preview), ``done`` or
``error`` / ``cancelled``. SIGTERM or SIGINT cancel between two sampling steps and leave no file.

Exit codes: 0 done; 1 crash (an ``error`` event, then the traceback on stderr); 2 bad input
(shot folder, options, output exists, model missing, folder not writable); 3 out of memory
(the message says what to lower); 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from ..contract.files import write_json_atomic
from ..errors import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_CRASH,
    EXIT_OK,
    EXIT_OUT_OF_MEMORY,
    BadInput,
)
from ..inference.settings import OptionError
from .batch import add_batch_command
from .import_official import add_import_official_command
from .models import add_models_command, load_render_pipeline
from .options import add_render_options, cancel_on_signals
from .train import add_eval_command, add_train_command

ENGINE_JSON = "engine.json"
PREVIEW_INTERVAL_S = 0.5
"""At most this often the live preview PNG is rewritten (decoding costs a little each time)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poseanything",
        description="PoseAnything: turn a shot folder (skeleton motion + camera) into a video.",
    )
    # Each command sets ``handler`` (args -> exit code); another module adds its own the same way.
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="render a shot folder into an mp4")
    render.add_argument("shot_dir", type=Path, help="shot folder written by the add-on")
    render.add_argument("--out", type=Path, required=True, help="output video (.mp4)")
    render.add_argument("--frames-dir", type=Path, help="also write PNG frames to this folder")
    render.add_argument("--progress", choices=("json", "bar", "none"), default="bar")
    add_render_options(render)
    render.set_defaults(handler=render_command)
    add_batch_command(commands)
    add_models_command(commands)
    add_train_command(commands)
    add_eval_command(commands)
    add_import_official_command(commands)
    return parser


class Reporter:
    """Progress on stdout: JSON lines for the add-on, or a one-line bar for a terminal."""

    def __init__(self, mode: str, preview_path: Path | None) -> None:
        self.mode = mode
        self.preview_path = preview_path
        self._last_preview = 0.0

    def event(self, name: str, **fields) -> None:
        if self.mode == "json":
            print(json.dumps({"event": name, **fields}), flush=True)
        elif self.mode == "bar" and name != "progress":
            if name in ("error", "cancelled"):
                print(f"\n{fields.get('message', name)}", file=sys.stderr, flush=True)
            elif name == "done":
                print(f"\nwrote {fields['video']} in {fields['seconds']:.1f} s", flush=True)

    def progress(self, progress) -> None:
        preview = None
        now = time.monotonic()
        due = progress.step == progress.total or now - self._last_preview > PREVIEW_INTERVAL_S
        if self.preview_path is not None and due:
            self._write_preview(progress.preview())
            self._last_preview = now
            preview = str(self.preview_path)
        if self.mode == "json":
            self.event(
                "progress",
                step=progress.step,
                total=progress.total,
                eta_s=round(progress.eta_s, 2),
                window=progress.window,
                windows=progress.windows,
                stage=progress.stage,
                preview=preview,
            )
        elif self.mode == "bar":
            width = 30
            filled = round(width * progress.step / progress.total)
            print(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {progress.step}/{progress.total} "
                f"window {progress.window}/{progress.windows} eta {progress.eta_s:5.1f}s",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def _write_preview(self, image) -> None:
        from ..contract.skeleton import write_png

        temp = self.preview_path.with_name(f".{self.preview_path.name}.partial")
        write_png(temp, image)
        os.replace(temp, self.preview_path)


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise OptionError("device: --device cuda was asked for but no CUDA GPU is available")
    return name


def render(args: argparse.Namespace, reporter: Reporter, cancel) -> dict:
    """Read, render and write; returns the engine.json contents. Raises on any failure."""
    from ..contract.shot import read_pose_images, read_reference, read_reference_mask, read_shot
    from ..contract.video import check_output_free, write_frames, write_video
    from ..inference.pipeline import RenderSettings

    started = time.perf_counter()
    check_output_free(args.out, args.overwrite)
    if args.frames_dir is not None:
        check_output_free(args.frames_dir, args.overwrite)
    if args.out.suffix.lower() != ".mp4":
        raise OptionError(f"--out: {args.out} must end in .mp4 (H.264 video)")
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OptionError(
            f"--out: cannot create {args.out.parent} ({error.strerror}); choose a writable folder"
        ) from error
    shot = read_shot(args.shot_dir)
    reference = read_reference(args.shot_dir)
    settings = RenderSettings(
        steps=args.steps,
        subject_guidance=args.guidance,
        camera_guidance=args.camera_guidance,
        camera_anchor=args.camera_anchor,
        seed=args.seed,
        ptcm=not args.no_ptcm,
        upscale=not args.native_size,
    )
    device = resolve_device(args.device)
    pipeline = load_render_pipeline(args, device)
    loaded = time.perf_counter()
    reporter.event(
        "start",
        shot=shot.name,
        frames=shot.num_frames,
        fps=shot.fps,
        model=pipeline.model_id,
        device=device,
    )
    result = pipeline.render(
        shot,
        reference,
        settings,
        callback=reporter.progress,
        cancel=cancel,
        pose_images=read_pose_images(args.shot_dir, shot) if shot.pose_source == "images" else None,
        subject_mask=read_reference_mask(args.shot_dir),
    )
    generated = time.perf_counter()
    if cancel is not None:
        cancel.check()  # a cancel that came after the last step still writes nothing
    write_video(args.out, result.frames, shot.fps, overwrite=args.overwrite)
    if args.frames_dir is not None:
        write_frames(args.frames_dir, result.frames, overwrite=args.overwrite)
    finished = time.perf_counter()
    report = {
        "video": args.out.name,
        "frames_dir": None if args.frames_dir is None else str(args.frames_dir),
        "shot": str(args.shot_dir.resolve()),
        "shot_name": shot.name,
        "num_frames": int(result.frames.shape[0]),
        "fps": shot.fps,
        "size": [int(result.frames.shape[2]), int(result.frames.shape[1])],
        "model": pipeline.model_id,
        "device": device,
        "backend": args.backend,
        "onnx_providers": getattr(pipeline.model, "providers", None),
        **result.report,
        "timings_s": {
            "load": round(loaded - started, 3),
            "generate": round(generated - loaded, 3),
            "write": round(finished - generated, 3),
            "total": round(finished - started, 3),
            "per_frame": round((generated - loaded) / max(1, shot.num_frames), 4),
        },
    }
    write_json_atomic(args.out.parent / ENGINE_JSON, report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``poseanything`` command; returns its exit code."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


def render_command(args: argparse.Namespace) -> int:
    """``poseanything render``: one shot folder to one video, reporting on stdout."""
    from ..inference.sampling import CancelToken

    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    args.out = args.out.expanduser().resolve()
    preview = args.out.with_name(f".{args.out.stem}.preview.png")
    reporter = Reporter(args.progress, preview)
    cancel = CancelToken()
    code = EXIT_OK
    with cancel_on_signals(cancel):
        code = _render_reporting(args, reporter, cancel, preview)
    return code


def _render_reporting(args, reporter, cancel, preview) -> int:
    from ..inference.sampling import Cancelled

    code = EXIT_OK
    try:
        report = render(args, reporter, cancel)
        reporter.event(
            "done",
            video=str(args.out),
            frames_dir=report["frames_dir"],
            engine_json=str(args.out.parent / ENGINE_JSON),
            seconds=report["timings_s"]["total"],
        )
    except Cancelled:
        reporter.event("cancelled", message="cancelled; no video was written")
        code = EXIT_CANCELLED
    except BadInput as error:
        reporter.event("error", kind="bad_input", message=str(error))
        code = EXIT_BAD_INPUT
    except PermissionError as error:
        reporter.event(
            "error",
            kind="bad_input",
            message=f"cannot write {error.filename}: permission denied; choose a writable folder",
        )
        code = EXIT_BAD_INPUT
    except MemoryError as error:  # torch.OutOfMemoryError derives from RuntimeError; see below
        reporter.event("error", kind="out_of_memory", message=out_of_memory_message(error))
        code = EXIT_OUT_OF_MEMORY
    except RuntimeError as error:
        if not is_out_of_memory(error):
            code = _crash(reporter, error)
        else:
            reporter.event("error", kind="out_of_memory", message=out_of_memory_message(error))
            code = EXIT_OUT_OF_MEMORY
    except Exception as error:  # a crash: report it on the protocol too, then the traceback
        code = _crash(reporter, error)
    finally:
        preview.unlink(missing_ok=True)
    return code


def _crash(reporter: Reporter, error: BaseException) -> int:
    traceback.print_exception(error, file=sys.stderr)
    reporter.event(
        "error", kind="crash", message=f"engine crashed: {type(error).__name__}: {error}"
    )
    return EXIT_CRASH


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def out_of_memory_message(error: BaseException) -> str:
    return (
        f"out of memory ({type(error).__name__}): lower the shot's resolution or frame count "
        "per render (--pixel-area, --window-frames), set camera guidance to 0 or 1 and subject "
        "guidance to 1 (fewer guidance passes), use --no-ptcm or --cpu-offload (full model), or "
        "close other programs; on a GPU, try --device cpu"
    )


if __name__ == "__main__":
    sys.exit(main())
