"""``poseanything-blender``: the bpy side from a shell, with bpy as a Python module.

    poseanything-blender export FILE.blend --armature NAME --out SHOT_DIR [options]
    poseanything-blender demo [--out DIR]

Bad input exits with code 2 and a message that says what to fix. bpy is imported only after
the arguments check out, so mistakes are reported at once rather than after bpy's start-up.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_BAD_INPUT = 2
DEFORM_ONLY = {"auto": None, "yes": True, "no": False}


class BadInput(Exception):
    """A command-line mistake; printed as one line and exit code 2."""


def _frame_range(text: str) -> tuple[int, int]:
    start, separator, end = text.partition(":")
    try:
        if not separator:
            raise ValueError
        return int(start), int(end)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a frame range; write START:END in whole frames, e.g. 1:49"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poseanything-blender",
        description="PoseAnything's Blender side, with bpy as a Python module.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser(
        "export", help="write an armature's motion through a camera as a shot folder"
    )
    export.add_argument("blend", type=Path, metavar="FILE.blend", help="the .blend to read")
    export.add_argument("--armature", required=True, help="name of the armature object")
    export.add_argument("--camera", help="name of the camera object (default: the scene camera)")
    export.add_argument(
        "--frames", type=_frame_range, metavar="A:B", help="frames A to B (default: the scene's)"
    )
    export.add_argument("--scene", help="name of the scene (default: the file's active scene)")
    export.add_argument(
        "--reference",
        type=Path,
        metavar="IMAGE",
        help="the subject's first frame (default: a Workbench render of the first frame)",
    )
    export.add_argument(
        "--deform-only",
        choices=tuple(DEFORM_ONLY),
        default="auto",
        help="only deforming bones (auto: yes for generated Rigify rigs)",
    )
    export.add_argument(
        "--bone-collection",
        action="append",
        default=[],
        metavar="NAME",
        help="only bones in this bone collection (repeat for several)",
    )
    export.add_argument("--include-hidden", action="store_true", help="also hidden bones")
    export.add_argument("--prompt", default="", help="what the video shows")
    export.add_argument("--seed", type=int, default=0, help="noise seed for the video")
    export.add_argument("--out", required=True, type=Path, metavar="SHOT_DIR")

    demo = commands.add_parser("demo", help="build the demo scene, save it and export its shot")
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("out", "demo"),
        metavar="DIR",
        help="folder for demo.blend and the shot (default: out/demo)",
    )
    return parser


def _open_blend(path: Path) -> None:
    if not path.is_file():
        raise BadInput(f"no such file: {path}; give the path of a .blend file")
    import bpy

    try:
        bpy.ops.wm.open_mainfile(filepath=str(path.absolute()), load_ui=False)
    except RuntimeError as error:
        raise BadInput(f"cannot open {path} as a .blend file ({error})") from error


def _export(args: argparse.Namespace) -> None:
    _open_blend(args.blend)

    import bpy

    from .armature import SkeletonOptions
    from .shot_export import ExportError, ExportSettings, export_shot

    settings = ExportSettings(
        scene=args.scene if args.scene is not None else bpy.context.scene.name,
        armature=args.armature,
        out=args.out,
        camera=args.camera,
        frames=args.frames,
        skeleton=SkeletonOptions(
            deform_only=DEFORM_ONLY[args.deform_only],
            bone_collections=tuple(args.bone_collection),
            include_hidden=args.include_hidden,
        ),
        reference_image=args.reference,
        prompt=args.prompt,
        seed=args.seed,
    )
    try:
        result = export_shot(settings)
    except ExportError as error:
        raise BadInput(str(error)) from error
    for note in result.notes:
        print(f"note: {note}")
    print(f"shot: {result.path}")


def _demo(args: argparse.Namespace) -> None:
    import bpy

    from .demo_scene import build_demo_scene
    from .shot_export import ExportError, ExportSettings, export_shot

    out = args.out.expanduser().absolute()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(f"cannot create {out} ({error.strerror}); pick another --out") from error
    bpy.ops.wm.read_homefile(use_empty=True, app_template="")
    demo = build_demo_scene(bpy.context.scene)
    blend = out / "demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    try:
        result = export_shot(
            ExportSettings(scene=demo.scene.name, armature=demo.armature.name, out=out / "shot")
        )
    except ExportError as error:
        raise BadInput(str(error)) from error
    print(f"demo scene: {blend}")
    print(f"shot: {result.path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"export": _export, "demo": _demo}[args.command]
    try:
        command(args)
    except BadInput as error:
        print(f"poseanything-blender: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
