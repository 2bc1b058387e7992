"""``poseanything-blender make-dataset`` and ``make-eval-clips``: the synthetic data commands.

Kept apart from ``dataset`` so the command line can list and check its arguments before bpy
is imported (bpy takes seconds to start, a typo should not).

    poseanything-blender make-dataset --out DIR --clips N [--seed S] [--size 128] [--frames 16]
    poseanything-blender make-eval-clips --out DIR [--rigs human,wolf] [--clips N] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ...engine.errors import BadInput
from . import METARIGS


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small; use at least {minimum}")
        return value

    return parse


def _rig_names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in METARIGS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown metarig {', '.join(unknown) or '(none given)'}; "
            f"choose from {','.join(METARIGS)}"
        )
    return names


def _add_clip_arguments(
    parser: argparse.ArgumentParser, clips_help: str, clips_default: int | None
) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="clip folders")
    parser.add_argument(
        "--clips",
        type=_at_least(1),
        metavar="N",
        required=clips_default is None,
        default=clips_default,
        help=clips_help,
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed, same clips (default 0)")
    parser.add_argument("--size", type=_at_least(16), default=128, help="frame size in pixels")
    parser.add_argument("--frames", type=_at_least(2), default=16, help="frames per clip")
    parser.add_argument("--fps", type=_at_least(1), default=24, help="frames per second")


def _checked_out_dir(out: Path) -> Path:
    out = out.expanduser().absolute()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(
            f"cannot create the folder {out} ({error.strerror}); choose a writable folder"
        ) from error
    return out


def add_synthetic_commands(
    commands: argparse._SubParsersAction,
) -> dict[str, Callable[[argparse.Namespace], None]]:
    """Register both commands on the CLI's subparsers; return their handlers by name.

    Handlers raise ``BadInput`` for mistakes the arguments alone cannot show (an output folder
    that cannot be made, a resumed folder made with other settings), which the CLI turns into
    exit code 2.
    """
    make = commands.add_parser(
        "make-dataset",
        help="render synthetic training clips of random rigs (never Blender's metarigs)",
    )
    _add_clip_arguments(make, "how many clips", None)
    evaluate = commands.add_parser(
        "make-eval-clips", help="render held-out evaluation clips of Blender's Rigify metarigs"
    )
    _add_clip_arguments(evaluate, "clips per metarig (default 1)", 1)
    evaluate.add_argument(
        "--rigs",
        type=_rig_names,
        default=METARIGS,
        metavar="NAMES",
        help=f"comma-separated metarigs (default: {','.join(METARIGS)})",
    )

    def run_make_dataset(args: argparse.Namespace) -> None:
        out = _checked_out_dir(args.out)
        from .dataset import ProgressBar, make_dataset

        paths = make_dataset(
            out, args.clips, args.seed, args.size, args.frames, args.fps, progress=ProgressBar()
        )
        print(f"{len(paths)} clips in {out}", file=sys.stderr)

    def run_make_eval_clips(args: argparse.Namespace) -> None:
        out = _checked_out_dir(args.out)
        from .dataset import ProgressBar, make_eval_clips

        paths = make_eval_clips(
            out,
            args.rigs,
            args.clips,
            args.seed,
            args.size,
            args.frames,
            args.fps,
            progress=ProgressBar(),
        )
        print(f"{len(paths)} clips in {out}", file=sys.stderr)

    return {"make-dataset": run_make_dataset, "make-eval-clips": run_make_eval_clips}
