"""What ``render`` and ``batch`` share: the render options, read into the settings objects
``engine.render`` takes, and Ctrl-C / SIGTERM as a cancel."""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

from ..inference.settings import CAMERA_ANCHORS
from ..render import DEVICES, ModelChoice, RenderSettings
from .models import add_model_options, sources_from_args


def add_render_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how to render (not which shot, or where to): ``render`` and ``batch``
    share them, so a batch takes every render option."""
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    parser.add_argument(
        "--guidance", type=float, help="subject motion guidance (default: the shot's)"
    )
    parser.add_argument(
        "--camera-guidance",
        type=float,
        help="camera motion guidance, 0 = locked-off camera (default: the shot's)",
    )
    parser.add_argument(
        "--camera-anchor",
        choices=CAMERA_ANCHORS,
        default="rectangle",
        help="camera-only CFG anchor: moving view rectangle, or static first-frame skeleton",
    )
    parser.add_argument("--seed", type=int, help="noise seed (default: the shot's)")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--no-ptcm", action="store_true", help="switch part attention off")
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled one)")
    parser.add_argument(
        "--native-size",
        action="store_true",
        help="keep the model's working size instead of upscaling to the shot's size",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice; 1 is fastest on a busy machine)",
    )
    add_model_options(parser)


def settings_from_args(args: argparse.Namespace) -> RenderSettings:
    """The render options as the ``RenderSettings`` they stand for."""
    return RenderSettings(
        steps=args.steps,
        subject_guidance=args.guidance,
        camera_guidance=args.camera_guidance,
        camera_anchor=args.camera_anchor,
        seed=args.seed,
        ptcm=not args.no_ptcm,
        upscale=not args.native_size,
    )


def model_from_args(args: argparse.Namespace) -> ModelChoice:
    """The model options as the ``ModelChoice`` they stand for."""
    return ModelChoice(
        folder=args.model,
        full=args.full,
        sources=sources_from_args(args),
        online=args.online,
        allow_cpu=args.allow_cpu,
        cpu_offload=args.cpu_offload,
        backend=args.backend,
        window_frames=args.window_frames,
        pixel_area=args.pixel_area,
        device=args.device,
        threads=args.threads,
    )


@contextlib.contextmanager
def cancel_on_signals(cancel) -> Iterator[None]:
    """SIGINT and SIGTERM set ``cancel`` (a ``CancelToken``) while inside; the previous
    handlers come back afterwards."""
    previous = {
        signum: signal.signal(signum, lambda signum, frame: cancel.cancel())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
