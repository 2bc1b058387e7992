"""The ``train`` and ``eval`` commands of ``poseanything``, kept apart from ``engine.train``
and ``engine.evaluate`` so that listing the CLI's commands does not import torch."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, fields
from pathlib import Path

from ..errors import EXIT_BAD_INPUT, EXIT_OK, BadInput
from ..training import TrainingError


def add_train_command(commands) -> None:
    """``poseanything train DATA --out DIR [--minutes M] [--resume]`` on the CLI's subparsers."""
    parser = commands.add_parser("train", help="train the default model on synthetic clips")
    parser.add_argument("data", type=Path, help="clip folders from `make-dataset`")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, model)")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-time budget of this run")
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    parser.add_argument("--max-steps", type=int, help="stop at this many transformer steps")
    parser.add_argument("--cache", type=Path, help="preprocessed clips (default: OUT/cache)")
    parser.add_argument("--init-codec", type=Path, help="take the trained codec of another run")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="training setting, e.g. --set batch=8 (JSON values; see TrainConfig); a resumed "
        "run takes only decoder_steps, sample_steps and reference_detail",
    )
    parser.set_defaults(handler=train_command)


def parse_overrides(items: list[str]) -> dict:
    """``FIELD=VALUE`` items (JSON values, or plain strings) as a dict of ``TrainConfig`` fields."""
    from ..training.train import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    overrides = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in known:
            raise TrainingError(f"--set {item}: unknown setting {name!r}; known: {sorted(known)}")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value  # a bare word: --set flow_base=warp
    return overrides


def train_command(args) -> int:
    import torch

    from ..render import resolve_device
    from ..training.train import ProgressBar, TrainConfig, train

    try:
        overrides = parse_overrides(args.set)
        config = TrainConfig.from_dict({**asdict(TrainConfig()), **overrides})
        torch.set_num_threads(args.threads)
        folder = train(
            args.data.expanduser(),
            args.out.expanduser(),
            args.minutes,
            args.resume,
            config,
            resolve_device(args.device),
            args.init_codec,
            args.max_steps,
            ProgressBar(),
            args.cache,
            overrides if args.resume else None,
        )
    except BadInput as error:
        print(f"poseanything train: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if folder is None:
        print("time ran out in the codec stage; run again with --resume", file=sys.stderr)
    else:
        print(f"model written to {folder}")
    return EXIT_OK


def add_eval_command(commands) -> None:
    """``poseanything eval [--rigs NAMES | --blend FILE --armature NAME] [--clips N]
    [--clips-dir DIR] --out REPORT.md``."""
    parser = commands.add_parser(
        "eval", help="evaluate a model on held-out metarig clips against baselines"
    )
    parser.add_argument("--out", type=Path, required=True, help="report (.md) to write")
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled one)")
    parser.add_argument(
        "--clips-dir",
        type=Path,
        help="evaluation clips already made (by `make-eval-clips`); default: build them",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--rigs", help="comma-separated metarigs to build clips of (default all)")
    source.add_argument("--blend", type=Path, help="build clips of an armature in this .blend")
    parser.add_argument("--armature", help="with --blend: the armature object's name")
    parser.add_argument("--clips", type=int, default=1, help="clips per rig (default 1)")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the built clips")
    parser.add_argument("--frames", type=int, default=24, help="frames per built clip (default 24)")
    parser.add_argument(
        "--size", type=int, default=384, help="pixels of the built clips (default 384)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="only the full model and the two baselines"
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.set_defaults(handler=eval_command)


def build_eval_clips(args, folder: Path) -> list[Path]:
    """Render held-out clips in a child process (the bpy side; the engine never imports bpy)."""
    import subprocess

    if args.blend is not None:
        if not args.armature:
            raise TrainingError("--blend needs --armature NAME (the armature object in the file)")
        rig = ["make-rig-clips", "--blend", str(args.blend), "--armature", args.armature]
        names = None
    else:
        rig = ["make-eval-clips"] + (["--rigs", args.rigs] if args.rigs else [])
        names = args.rigs.split(",") if args.rigs else None
    command = [
        sys.executable,
        "-m",
        "poseanything.poseanything_blender.synthetic.run",
        *rig,
        "--out",
        str(folder),
        "--clips",
        str(args.clips),
        "--seed",
        str(args.seed),
        "--frames",
        str(args.frames),
        "--size",
        str(args.size),
    ]
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise TrainingError(f"building the evaluation clips failed (exit {result.returncode})")
    # The folder may hold clips of earlier runs: take the ones this command asked for.
    return [
        path
        for path in sorted(folder.iterdir())
        if (path / "clip.json").is_file()
        and (names is None or path.name.rsplit("_", 1)[0] in names)
        and int(path.name.rsplit("_", 1)[1]) < args.clips
    ]


def eval_command(args) -> int:
    import torch

    from ..render import ModelChoice, load_pipeline
    from ..training.evaluate import evaluate, format_table, summary_line, table_rows

    torch.set_num_threads(args.threads)
    out = args.out.expanduser().absolute()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.clips_dir is not None:
            folder = args.clips_dir.expanduser()
            found = sorted(folder.iterdir()) if folder.is_dir() else []
            clips = [p for p in found if (p / "clip.json").is_file()]
            if not clips:
                raise TrainingError(f"--clips-dir {args.clips_dir}: no clip folders (clip.json)")
        else:
            clips = build_eval_clips(args, out.with_name(out.stem + "_clips"))
        pipeline = load_pipeline(ModelChoice(folder=args.model, device=args.device))
        results = evaluate(pipeline, clips, out, table_rows(ablations=not args.quick))
    except BadInput as error:
        print(f"poseanything eval: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_table(results))
    print(summary_line(results))
    return EXIT_OK
