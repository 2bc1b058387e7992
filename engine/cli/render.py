"""``poseanything``: render a shot folder into a video from the command line or a subprocess.

``poseanything render SHOT_DIR --out FILE.mp4`` reads the shot, renders it with the default (or
``--model``) PoseAnything model and writes the mp4, optional PNG frames and ``engine.json``
(settings, seed, model, timings, part correspondence) beside the video, through
``engine.render.render_shot_folder``.

With ``--progress json`` every line on stdout is one JSON object, for the Blender add-on, which
runs this as a subprocess: ``start``, ``progress`` (step, total, eta_s, preview), ``done`` or
``error`` / ``cancelled``. SIGTERM or SIGINT cancel between two sampling steps and leave no file.

Exit codes (``engine.errors``): 0 done; 1 crash (an ``error`` event, then the traceback on
stderr); 2 bad input (shot folder, options, output exists, model missing, folder not writable);
3 out of memory (the message says what to lower); 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_CRASH,
    EXIT_OK,
    EXIT_OUT_OF_MEMORY,
    BadInput,
)
from ..render import ENGINE_JSON
from .batch import add_batch_command
from .import_official import add_import_official_command
from .models import add_models_command, print_download
from .options import add_render_options, cancel_on_signals, model_from_args, settings_from_args
from .output import ProgressOutput, print_line
from .train import add_eval_command, add_train_command

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

    def __init__(
        self, mode: str, preview_path: Path | None, on_reader_gone: Callable[[], None]
    ) -> None:
        self.mode = mode
        self.preview_path = preview_path
        self.output = ProgressOutput(on_reader_gone)
        self._last_preview = 0.0
        self._bar_drawn = False

    def event(self, name: str, **fields) -> None:
        """One protocol event; without JSON, an error or cancel is still one line on stderr
        (``--progress none`` silences progress, never the reason a render stopped)."""
        if self.mode == "json":
            self.output.print(json.dumps({"event": name, **fields}))
            return
        end_bar = "\n" if self._bar_drawn else ""
        if name in ("error", "cancelled"):
            self.output.print(f"{end_bar}{fields.get('message', name)}", sys.stderr)
        elif self.mode == "bar" and name == "done":
            self.output.print(f"{end_bar}wrote {fields['video']} in {fields['seconds']:.1f} s")

    def engine_event(self, name: str, fields: dict) -> None:
        """``render_shot_folder``'s events: ``start`` on the protocol, downloads on stderr."""
        if name == "start":
            self.event(name, **fields)
        elif name == "note":
            self.output.print(fields["message"], sys.stderr)
        else:
            print_download(name, fields)

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
            self._bar_drawn = True
            filled = round(width * progress.step / progress.total)
            self.output.print(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {progress.step}/{progress.total} "
                f"window {progress.window}/{progress.windows} eta {progress.eta_s:5.1f}s",
                sys.stderr,
                end="",
            )

    def _write_preview(self, image) -> None:
        from ..contract.files import write_bytes_atomic
        from ..contract.skeleton import encode_png

        write_bytes_atomic(self.preview_path, encode_png(image))


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``poseanything`` command; returns its exit code."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


def render_command(args: argparse.Namespace) -> int:
    """``poseanything render``: one shot folder to one video, reporting on stdout."""
    from ..inference.cancel import CancelToken
    from ..render import preview_path, render_shot_folder

    out = args.out.expanduser().resolve()
    preview = preview_path(out)
    cancel = CancelToken()
    reporter = Reporter(args.progress, preview, on_reader_gone=cancel.cancel)
    with cancel_on_signals(cancel):
        try:
            report = render_shot_folder(
                args.shot_dir,
                out,
                settings_from_args(args),
                model_from_args(args),
                frames_dir=args.frames_dir,
                overwrite=args.overwrite,
                on_event=reporter.engine_event,
                on_progress=reporter.progress,
                cancel=cancel,
            )
        except Exception as error:
            return report_failure(reporter, error)
        finally:
            if preview.is_file():  # False too when --out is under a file
                preview.unlink()
    reporter.event(
        "done",
        video=str(out),
        frames_dir=report["frames_dir"],
        engine_json=str(out.parent / ENGINE_JSON),
        seconds=report["timings_s"]["total"],
    )
    return EXIT_OK


def report_failure(reporter: Reporter, error: Exception) -> int:
    """Report why a render stopped (cancel, bad input, out of memory, crash); returns the exit
    code that says so. Only a crash prints its traceback: it is our bug, not the user's input."""
    from ..inference.cancel import Cancelled

    if isinstance(error, Cancelled):
        if reporter.output.reader_gone:
            message = (
                "cancelled: the program reading the progress closed it (broken pipe); "
                "no video was written"
            )
            print_line(f"poseanything: {message}", sys.stderr)
        reporter.event("cancelled", message="cancelled; no video was written")
        return EXIT_CANCELLED
    if isinstance(error, BadInput):
        reporter.event("error", kind="bad_input", message=str(error))
        return EXIT_BAD_INPUT
    if isinstance(error, PermissionError):
        message = f"cannot write {error.filename}: permission denied; choose a writable folder"
        reporter.event("error", kind="bad_input", message=message)
        return EXIT_BAD_INPUT
    # torch.OutOfMemoryError derives from RuntimeError, and some backends say it in words only.
    if isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and is_out_of_memory(error)
    ):
        reporter.event("error", kind="out_of_memory", message=out_of_memory_message(error))
        return EXIT_OUT_OF_MEMORY
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
