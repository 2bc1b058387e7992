"""``poseanything import-official DATA_DIR --out SHOTS_DIR``: the release's test inputs
(its ``data/test`` layout) as shot folders for the full model (``contract.official_layout``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import EXIT_BAD_INPUT, EXIT_OK


def add_import_official_command(commands) -> None:
    parser = commands.add_parser(
        "import-official",
        help="turn the released PoseAnything's test data into shot folders (full model)",
    )
    parser.add_argument(
        "data_dir",
        type=Path,
        help="a folder in the release's layout (metadata.csv, first_frame/, skeleton_image/, "
        "video/), e.g. data/test of github Ryan-w2024/PoseAnything",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the shot folders")
    parser.set_defaults(handler=import_official_command)


def import_official_command(args: argparse.Namespace) -> int:
    from ..contract.official_layout import import_release_layout
    from ..contract.shot import ShotError

    try:
        imported = import_release_layout(args.data_dir, args.out)
    except ShotError as error:
        print(error, file=sys.stderr)
        return EXIT_BAD_INPUT
    for shot in imported:
        note = f" ({shot.note})" if shot.note else ""
        print(f"{shot.folder}: {shot.pose_frames} of 81 frames posed{note}")
    print(
        f"{len(imported)} shots; render them as the release does with "
        "`poseanything render SHOT --full --out SHOT/video.mp4`"
    )
    return EXIT_OK
