"""``poseanything-blender``: the bpy side from a shell, with bpy as a Python module.

    poseanything-blender export FILE.blend --armature NAME --out SHOT_DIR [options]
    poseanything-blender generate FILE.blend [--all-shots] [options] [--save OUT.blend]
    poseanything-blender demo [--out DIR]
    poseanything-blender make-dataset --out DIR --clips N [--seed S] [--size 128] [--frames 16]
    poseanything-blender make-eval-clips --out DIR [--rigs human,wolf] [--clips N] [--seed S]

and, inside Blender, ``blender -b FILE.blend --command poseanything generate [--all-shots]``
(registered with ``bpy.utils.register_cli_command``; the same ``generate`` options).

Without options, generate does what the panel's defaults do: the active armature or the
scene's only one, the scene camera, the scene's frame range. Videos and shot folders go to the
scene's output folder (beside the .blend by default); the .blend with the new strips is written
only where ``--save`` says, never over the input unless ``--save`` names it.

Bad input (any ``engine.errors.BadInput``) exits with code 2 and a message that says what to
fix; a shot that failed to render exits with 1; anything else is a bug and shows its traceback.
bpy is imported only after the arguments check out.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from ..engine.errors import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, BadInput
from .synthetic.command import add_synthetic_commands

DEFORM_ONLY = {"auto": None, "yes": True, "no": False}
DEMO_SCENE = "Walk"
SEED_MAX = 2**31 - 1
"""The largest seed a scene's Seed setting holds (a 32-bit signed integer)."""
VALUE_OPTIONS_WITH_NEGATIVES = ("--frames",)
"""Options whose value may start with '-' (``--frames -5:3``), which argparse reads as an option."""
NEGATIVE = re.compile(r"^-\d")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line that names --help, not the whole usage before it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed <= SEED_MAX:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a seed; give a whole number from 0 to {SEED_MAX}"
        )
    return seed


def _steps(text: str) -> int:
    try:
        steps = int(text)
    except ValueError:
        steps = 0
    if steps < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a step count; give a whole number of at least 1 "
            "(leave --steps out for the model's default)"
        )
    return steps


def _guidance(text: str) -> float:
    """A guidance strength in the engine's ``GUIDANCE_RANGE``, checked before bpy loads."""
    from ..engine.contract.shot import guidance_problem

    try:
        value: float | str = float(text)
    except ValueError:
        value = text
    problem = guidance_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return float(value)


def _joined_negative_values(argv: Sequence[str]) -> list[str]:
    """``--frames -5:3`` as ``--frames=-5:3``: argparse takes a value that starts with '-' for
    an option and says "expected one argument"."""
    joined: list[str] = []
    for argument in argv:
        if joined and joined[-1] in VALUE_OPTIONS_WITH_NEGATIVES and NEGATIVE.match(argument):
            joined[-1] = f"{joined[-1]}={argument}"
        else:
            joined.append(argument)
    return joined


def add_generate_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``generate``, shared by the bpy-module command and Blender's --command."""
    parser.add_argument(
        "--all-shots",
        action="store_true",
        help="every shot: the timeline markers bound to cameras, else each scene",
    )
    parser.add_argument("--scene", help="name of the scene (default: the file's active scene)")
    parser.add_argument("--armature", help="armature object (default: the active or only one)")
    parser.add_argument("--camera", help="camera object (default: the scene camera)")
    parser.add_argument(
        "--frames", type=_frame_range, metavar="A:B", help="frames A to B (default: the scene's)"
    )
    parser.add_argument("--prompt", help="what the video shows (default: the scene's setting)")
    parser.add_argument(
        "--seed", type=_seed, help=f"noise seed, 0 to {SEED_MAX} (default: the scene's setting)"
    )
    parser.add_argument(
        "--steps", type=_steps, help="sampling steps, at least 1 (default: the model's)"
    )
    parser.add_argument("--guidance", type=_guidance, help="subject guidance, 0 to 10")
    parser.add_argument(
        "--camera-guidance", type=_guidance, help="camera guidance, 0 to 10 (0: locked-off)"
    )
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled one)")
    parser.add_argument("--python", help="Python with torch to run the engine (default: this)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--ray",
        metavar="auto|local|ADDRESS",
        help="with --all-shots: render the shots as tasks on this Ray cluster",
    )
    parser.add_argument("--include-hidden", action="store_true", help="also hidden bones")
    parser.add_argument(
        "--output-folder",
        metavar="FOLDER",
        help="where shots and videos go; //FOLDER is relative to the .blend (default: the file's)",
    )
    parser.add_argument(
        "--save", type=Path, metavar="OUT.blend", help="save the .blend with the new strips here"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
        "--no-background",
        action="store_true",
        help="do not render the set without the subject at every frame (a faster export; the "
        "engine moves the first frame's background with the camera)",
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
    export.add_argument(
        "--seed", type=_seed, default=0, help=f"noise seed for the video, 0 to {SEED_MAX}"
    )
    export.add_argument("--out", required=True, type=Path, metavar="SHOT_DIR")

    generate = commands.add_parser(
        "generate", help="render a .blend's shot (or all shots) into videos and strips"
    )
    generate.add_argument("blend", type=Path, metavar="FILE.blend", help="the .blend to read")
    add_generate_options(generate)

    demo = commands.add_parser(
        "demo", help="build the demo scene, generate its video and save it with the strip"
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("out", "demo"),
        metavar="DIR",
        help="folder for demo.blend, the shot and the video (default: out/demo)",
    )
    demo.add_argument("--model", type=Path, help="model folder (default: the bundled one)")
    demo.add_argument(
        "--steps", type=_steps, help="sampling steps, at least 1 (default: the model's)"
    )

    for name, run in (("export", _export), ("generate", _generate), ("demo", _demo)):
        commands.choices[name].set_defaults(run=run)
    for name, run in add_synthetic_commands(commands).items():
        commands.choices[name].set_defaults(run=run)
    return parser


def _open_blend(path: Path) -> None:
    if not path.is_file():
        raise BadInput(f"no such file: {path}; give the path of a .blend file")
    import bpy

    try:
        bpy.ops.wm.open_mainfile(filepath=str(path.absolute()), load_ui=False)
    except RuntimeError as error:
        raise BadInput(f"cannot open {path} as a .blend file ({error})") from error


def _export(args: argparse.Namespace) -> int:
    _open_blend(args.blend)

    import bpy

    from .armature import SkeletonOptions
    from .shot_export import ExportSettings, export_shot

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
        render_background=not args.no_background,
        prompt=args.prompt,
        seed=args.seed,
    )
    result = export_shot(settings)
    for note in result.notes:
        print(f"note: {note}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"shot: {result.path}")
    return 0


def _object(scene, name: str, kind: str):
    obj = scene.objects.get(name)
    if obj is None or obj.type != kind:
        found = sorted(o.name for o in scene.objects if o.type == kind)
        raise BadInput(
            f"no {kind.lower()} named {name!r} in scene {scene.name!r}; its "
            f"{kind.lower()}s are: {', '.join(map(repr, found)) or 'none'}"
        )
    return obj


def _apply_options(scene, args: argparse.Namespace) -> None:
    """Command-line choices become the scene's PoseAnything settings (saved only with --save)."""
    settings = scene.poseanything
    if args.armature is not None:
        settings.armature = _object(scene, args.armature, "ARMATURE")
    if args.camera is not None:
        settings.camera = _object(scene, args.camera, "CAMERA")
    if args.frames is not None:
        settings.use_frame_range = True
        settings.frame_start, settings.frame_end = args.frames
    for option, name in (
        ("prompt", "prompt"),
        ("seed", "seed"),
        ("steps", "steps"),
        ("guidance", "subject_guidance"),
        ("camera_guidance", "camera_guidance"),
    ):
        if getattr(args, option) is not None:
            setattr(settings, name, getattr(args, option))
    if args.include_hidden:
        settings.include_hidden = True
    if args.output_folder is not None:
        settings.output_folder = _output_folder_setting(args.output_folder)


def _output_folder_setting(text: str) -> str:
    """``//...`` stays relative to the .blend (and to its copies); anything else is absolute."""
    if text.startswith("//"):
        return text
    return str(Path(text).expanduser().absolute())


def _register_extension() -> None:
    """With bpy as a module nothing registers the extension; its settings need it."""
    import bpy

    if not hasattr(bpy.types.Scene, "poseanything"):
        from .. import register

        register()


def _scene(name: str | None):
    import bpy

    if name is None:
        return bpy.context.scene
    scene = bpy.data.scenes.get(name)
    if scene is None:
        names = ", ".join(repr(s.name) for s in bpy.data.scenes)
        raise BadInput(f"no scene named {name!r}; the file's scenes are: {names}")
    return scene


def _engine_options(
    scene, model: Path | None, *, python: str | None, device: str | None, ray: str | None
):
    """The preferences' engine options with the command line's choices (None: not given)."""
    from .generate import addon_preferences, engine_options

    defaults = engine_options(scene, addon_preferences())
    return dataclasses.replace(
        defaults,
        python=python or defaults.python,
        model=str(model.expanduser().absolute()) if model else defaults.model,
        device=device or defaults.device,
        ray=ray or defaults.ray,
        full=defaults.full and model is None,
    )


def generate_in_loaded_file(args: argparse.Namespace) -> int:
    """Generate in the file Blender has open; the shared body of both generate commands."""
    _register_extension()
    scene = _scene(args.scene)
    if args.ray is not None and not args.all_shots:
        raise BadInput("--ray renders the shots of --all-shots; add --all-shots or leave --ray out")
    if args.save is not None:
        check_save_path(args.save)
    _apply_options(scene, args)
    engine = _engine_options(
        scene, args.model, python=args.python, device=args.device, ray=args.ray
    )
    return _generate_and_report(scene, engine, args.all_shots, args.save)


def check_save_path(save: Path) -> None:
    """Refuse a ``--save`` that cannot be written before anything is exported or rendered: a
    refusal at the end would lose the .blend with the new strips."""
    from .shot_export import check_writable_folder

    if save.suffix != ".blend":
        raise BadInput(f"--save {save}: give a file name ending in .blend")
    save = save.expanduser().absolute()
    if save.is_dir():
        raise BadInput(f"--save {save} is a folder; give a file name ending in .blend")
    if save.parent.exists() and not save.parent.is_dir():
        raise BadInput(f"--save {save}: {save.parent} is a file, not a folder; save elsewhere")
    if not save.parent.is_dir():
        raise BadInput(
            f"--save {save}: the folder {save.parent} does not exist; create it or save elsewhere"
        )
    check_writable_folder(save.parent, "give --save a file in a folder you can write to")


def save_blend(save: Path, fallback_folder: Path) -> Path:
    """Save a copy of the open file (with the new strips) at ``save``; when that fails at the
    end after all, beside the shots under a new name, so the strips are not lost. Returns where
    it went; raises ``BadInput`` only when neither place takes it."""
    import bpy

    save = save.expanduser().absolute()
    try:
        bpy.ops.wm.save_as_mainfile(filepath=str(save), copy=True)
        return save
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1]
    fallback = _free_name(Path(fallback_folder), save.stem)
    try:
        bpy.ops.wm.save_as_mainfile(filepath=str(fallback), copy=True)
    except RuntimeError as error:
        raise BadInput(
            f"cannot save {save} ({reason}) nor {fallback}; the videos are in {fallback_folder}"
        ) from error
    print(f"warning: cannot save {save} ({reason}); saved it as {fallback} instead")
    return fallback


def _free_name(folder: Path, stem: str) -> Path:
    """``folder/stem.blend``, or the first ``stem_N.blend`` not taken: nothing is written over."""
    candidate, number = folder / f"{stem}.blend", 1
    while candidate.exists():
        number += 1
        candidate = folder / f"{stem}_{number}.blend"
    return candidate


def _generate_and_report(scene, engine, all_shots: bool, save: Path | None) -> int:
    """``generate.start_generate``, then its progress and results as lines; the .blend with
    the new strips saved to ``save``."""

    from .generate import start_generate
    from .job import cancel_job, wait

    job = start_generate(scene, all_shots=all_shots, engine=engine)
    for warning in job.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in job.notes:
        print(f"note: {note}")
    print(f"generating {len(job.tasks)} shot(s) into {job.folder}", flush=True)
    printed, interrupted = [""], []

    def on_tick(scene) -> None:
        if interrupted and not job.cancelled:
            cancel_job(scene)
        status = scene.poseanything.job_status
        if status and status != printed[-1]:
            printed.append(status)
            print(f"  {status}", flush=True)

    # Ctrl-C cancels between two ticks, never in the middle of starting a take's engine
    with _on_stop(lambda _signum, _frame: interrupted.append(True)):
        wait(scene, on_tick=on_tick)
    if job.cancelled:
        print("poseanything-blender: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    for result in job.export_failures + job.results:
        if result.status == "done":
            print(f"video: {result.output}  (strip {job.strips[result.shot]!r})")
        else:
            print(f"failed: {result.shot}: {result.error}", file=sys.stderr)
    if save is not None:
        print(f"blend: {save_blend(save, job.folder)}")
    if job.ok:
        return 0
    return EXIT_BAD_INPUT if job.refused else EXIT_FAILED


def _generate(args: argparse.Namespace) -> int:
    _open_blend(args.blend)
    return generate_in_loaded_file(args)


def _demo(args: argparse.Namespace) -> int:
    import bpy

    from ..engine.checkpoints.weights import ModelNotFoundError, resolve_model_dir
    from .demo_scene import build_demo_scene

    out = args.out.expanduser().absolute()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(f"cannot create {out} ({error.strerror}); pick another --out") from error
    bpy.ops.wm.read_homefile(use_empty=True, app_template="")
    _register_extension()
    demo = build_demo_scene(bpy.context.scene)
    demo.scene.name = DEMO_SCENE
    settings = demo.scene.poseanything
    settings.armature = demo.armature
    settings.output_folder = "//"  # the shots stay beside the .blend, and with its copies
    if args.steps is not None:
        settings.steps = args.steps
    blend = out / "demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))  # saved first: "//" needs a place
    try:
        resolve_model_dir(args.model)
    except ModelNotFoundError as error:
        _export_demo_shot(demo, blend)
        print(f"no video: {error}")
        return 0
    engine = _engine_options(demo.scene, args.model, python=None, device=None, ray=None)
    code = _generate_and_report(demo.scene, engine, all_shots=False, save=blend)
    print(f"demo scene: {blend}")
    return code


def _export_demo_shot(demo, blend: Path) -> None:
    """Without a model the demo still writes its shot and .blend, so the user sees what would
    render and can generate once a model is there."""
    import bpy

    from .shot_export import export_shot
    from .tasks import scene_task

    task, _folder, _warning = scene_task(demo.scene, bpy.context.view_layer)
    print(f"shot: {export_shot(task.export).path}")
    bpy.ops.wm.save_mainfile(filepath=str(blend))
    print(f"demo scene: {blend}")


def blender_command(argv: list[str]) -> int:
    """``blender -b FILE.blend --command poseanything generate [...]``: the file is open."""
    parser = OneLineParser(
        prog="blender -b FILE.blend --command poseanything",
        description="PoseAnything inside Blender: generate the open file's shot(s).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_generate_options(commands.add_parser("generate", help="render the shot(s) of the file"))
    try:
        args = parser.parse_args(_joined_negative_values(argv))
    except SystemExit as exit_:  # argparse exits on --help and on errors; Blender wants a code
        return int(exit_.code or 0)
    try:
        return generate_in_loaded_file(args)
    except BadInput as error:
        print(f"poseanything: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _cancel_at_once(_signum, _frame) -> None:
    os.write(sys.stderr.fileno(), b"poseanything-blender: cancelled\n")
    os._exit(EXIT_CANCELLED)


@contextmanager
def _on_stop(handler) -> Iterator[None]:
    """``handler`` for Ctrl-C and for ``kill`` (SIGTERM) alike, the previous ones put back: a
    terminated run cleans up as a cancelled one does."""
    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def main(argv: Sequence[str] | None = None) -> int:
    """Ctrl-C or kill (SIGTERM) at any moment (bpy loading, the export, the render) ends with
    exit 130 and one line; whatever was staged is removed on the way out, and a running take
    is discarded."""
    try:
        args = build_parser().parse_args(
            _joined_negative_values(sys.argv[1:] if argv is None else argv)
        )
        with _on_stop(_cancel_at_once):  # bpy's start-up swallows a KeyboardInterrupt
            import bpy  # noqa: F401
        with _on_stop(signal.default_int_handler):
            return args.run(args) or 0
    except BadInput as error:
        print(f"poseanything-blender: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("poseanything-blender: cancelled", file=sys.stderr)
        return EXIT_CANCELLED


def run() -> None:
    """The command's entry point: ``main()``, then exit as this Blender's bpy safely can
    (imported after ``main``, which imports bpy only once its Ctrl-C handler is in place)."""
    code = main()
    if "bpy" not in sys.modules:  # refused before bpy was loaded: nothing of it to shut down
        sys.exit(code)
    from .blender_versions import exit_process

    exit_process(code)


if __name__ == "__main__":
    run()
