"""What ``render`` and ``batch`` share: the render options, and Ctrl-C / SIGTERM as a cancel."""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

from .models import add_model_options


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
        choices=("rectangle", "static"),
        default="rectangle",
        help="camera-only CFG anchor: moving view rectangle, or static first-frame skeleton",
    )
    parser.add_argument("--seed", type=int, help="noise seed (default: the shot's)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
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
