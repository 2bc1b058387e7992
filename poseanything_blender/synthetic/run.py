"""``python -m poseanything.poseanything_blender.synthetic.run COMMAND ...``: the synthetic data
commands in a child process, for the engine's ``poseanything eval``, which never imports bpy.

Besides ``make-dataset`` and ``make-eval-clips``, ``make-rig-clips --blend FILE --armature NAME``
builds held-out clips of a user's own rig (appended from a .blend) with the same random motion,
skinning, camera moves and rendering as the training and metarig clips.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

from ...engine.errors import EXIT_BAD_INPUT, BadInput
from .command import _add_clip_arguments, _checked_out_dir, add_synthetic_commands


def _blend_rig_factory(blend: Path, armature: str):
    """A rig factory that appends ``armature`` from ``blend`` into the clip's scratch scene."""
    import bpy

    def make_rig(collection, rng):
        with bpy.data.libraries.load(str(blend), link=False) as (source, target):
            if armature not in source.objects:
                raise BadInput(f"{blend} has no object named {armature!r}")
            target.objects = [armature]
        rig = target.objects[0]
        if rig.type != "ARMATURE":
            raise BadInput(f"{armature!r} in {blend} is a {rig.type.lower()}, not an armature")
        rig.parent = None
        rig.animation_data_clear()
        collection.objects.link(rig)
        bpy.context.view_layer.objects.active = rig
        return rig, f"blend:{blend.name}:{armature}"

    return make_rig


def make_rig_clips(args: argparse.Namespace) -> None:
    from .dataset import ClipSettings, ProgressBar, _build_all

    blend = args.blend.expanduser().absolute()
    if not blend.is_file():
        raise BadInput(f"--blend {blend} does not exist; give the .blend holding the armature")
    out = _checked_out_dir(args.out)
    factory = _blend_rig_factory(blend, args.armature)
    stem = "".join(c if c.isalnum() else "_" for c in args.armature)
    jobs = [
        (
            f"{stem}_{index:03d}",
            factory,
            (args.seed, zlib.crc32(f"{blend.name}:{args.armature}".encode()), index),
            {"source": "blend", "blend": str(blend), "armature": args.armature, "index": index},
        )
        for index in range(args.clips)
    ]
    settings = ClipSettings(args.size, args.frames, args.fps)
    paths = _build_all(out, jobs, settings, ProgressBar())
    print(f"{len(paths)} clips in {out}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="poseanything-synthetic")
    commands = parser.add_subparsers(dest="command", required=True)
    handlers = add_synthetic_commands(commands)
    rig_clips = commands.add_parser(
        "make-rig-clips", help="render held-out clips of an armature from a .blend file"
    )
    _add_clip_arguments(rig_clips, "how many clips (default 1)", 1)
    rig_clips.add_argument("--blend", type=Path, required=True, help=".blend with the armature")
    rig_clips.add_argument("--armature", required=True, help="the armature object's name")
    handlers["make-rig-clips"] = make_rig_clips
    args = parser.parse_args(argv)
    try:
        handlers[args.command](args)
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
