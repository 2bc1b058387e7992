"""Model choice on the command line: ``render --full/--backend``, and ``poseanything models``.

``poseanything models`` lists every file the full model needs, present (with its size) or
missing, without network; ``--download`` (network) shows the total size first, then fetches
exactly the missing files into the Hugging Face cache. ``render --full`` loads the official
model from local files only, unless ``--online`` allows fetching what is missing (the add-on sets
it from Blender's "Allow Online Access").
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from ..checkpoints.hub import (
    POSEANYTHING_REPO,
    WAN_REPO,
    WEIGHTS_LICENCE,
    FullModelSources,
    download,
    format_size,
    hub_cache_dir,
    inventory,
)
from ..errors import EXIT_BAD_INPUT, BadInput
from ..render import BACKENDS


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--poseanything-weights",
        default=POSEANYTHING_REPO,
        help="repository id or folder of the PoseAnything DiT shards (default: %(default)s)",
    )
    parser.add_argument(
        "--wan-weights",
        default=WAN_REPO,
        help="repository id or diffusers folder of Wan2.2-TI2V-5B (default: %(default)s)",
    )


def add_model_options(render: argparse.ArgumentParser) -> None:
    """The ``render`` options that choose and size the model and its backend."""
    render.add_argument(
        "--full", action="store_true", help="the official PoseAnything (Wan2.2-TI2V-5B, GPU)"
    )
    _add_source_options(render)
    render.add_argument(
        "--online", action="store_true", help="allow downloading missing weights (--full)"
    )
    render.add_argument(
        "--allow-cpu", action="store_true", help="run the full model on a CPU anyway (slow)"
    )
    render.add_argument(
        "--cpu-offload",
        action="store_true",
        help="keep the VAE in host memory between uses (less GPU memory, --full)",
    )
    render.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="run the default model's denoiser and codec with ONNX Runtime (exported once per "
        "size, cached)",
    )
    render.add_argument(
        "--window-frames",
        type=int,
        help="frames generated at once (default: the model's; fewer frames, less memory)",
    )
    render.add_argument(
        "--pixel-area",
        type=int,
        help="working size in pixels, e.g. 399360 for 832x480 (default: the model's)",
    )


def sources_from_args(args: argparse.Namespace) -> FullModelSources:
    return FullModelSources(args.poseanything_weights, args.wan_weights)


def print_download(event: str, fields: dict) -> None:
    """A download's ``plan`` (every file, the sizes) and each fetched ``file``, on stderr."""
    if event == "plan":
        for item in fields["items"]:
            state = "here" if item["present"] else "to fetch"
            print(f"  {format_size(item['size']):>10}  {state:<8} {item['file']}", file=sys.stderr)
        print(
            f"full model: {fields['files']} files, {format_size(fields['total_bytes'])} in all, "
            f"{format_size(fields['download_bytes'])} to download",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(
            f"[{fields['index']}/{fields['count']}] {fields['file']} "
            f"({format_size(fields['bytes_done'])} of {format_size(fields['bytes_total'])})",
            file=sys.stderr,
            flush=True,
        )


def add_models_command(commands) -> None:
    models = commands.add_parser(
        "models", help="list the full model's weights: present, missing, sizes; download them"
    )
    _add_source_options(models)
    models.add_argument(
        "--download", action="store_true", help="fetch the missing files (network needed)"
    )
    models.add_argument(
        "--plan",
        action="store_true",
        help="list every file with its size from the hub and the total to fetch, fetch nothing",
    )
    models.add_argument("--json", action="store_true", help="one JSON object on stdout")
    models.set_defaults(handler=models_command)


def models_command(args: argparse.Namespace) -> int:
    """``poseanything models``: what the full model needs and what is here; exit 0 if complete."""
    from ..checkpoints.hub import WeightsMissingError

    sources = sources_from_args(args)
    try:
        if args.download or args.plan:
            report = print_download
            if args.json:
                report = lambda event, fields: _json_line(event, **fields)  # noqa: E731
            try:
                download(sources, report, confirm=None if args.download else lambda *sizes: False)
            except BadInput:
                raise
            except Exception as error:  # network, disk full, refused: all end the download
                traceback.print_exception(error, file=sys.stderr)
                raise WeightsMissingError(
                    f"the download failed ({type(error).__name__}: {error}); the files fetched "
                    "so far stay in the cache, so running it again fetches only the rest"
                ) from error
        found = inventory(sources)
    except BadInput as error:
        print(str(error), file=sys.stderr)
        if args.json:
            _json_line("error", kind="bad_input", message=str(error))
        return EXIT_BAD_INPUT
    rows = [
        {
            "component": status.component,
            "source": status.source,
            "file": status.filename,
            "present": status.present,
            "size": status.size,
            "path": None if status.path is None else str(status.path),
        }
        for status in found.files
    ]
    present_bytes = sum(row["size"] or 0 for row in rows)
    if args.json:
        _json_line(
            "models",
            cache=str(hub_cache_dir()),
            files=rows,
            unknown=found.notes,
            complete=found.complete,
            present_bytes=present_bytes,
        )
    else:
        print(f"cache: {hub_cache_dir()}")
        for row in rows:
            state = format_size(row["size"]) if row["present"] else "MISSING"
            print(f"  {state:>10}  {row['component']:<12} {row['source']}: {row['file']}")
        for note in found.notes:
            print(f"  {'MISSING':>10}  {note}")
        print(f"present: {format_size(present_bytes)}; licence: {WEIGHTS_LICENCE}")
        if not found.complete:
            print("incomplete: run `poseanything models --download` (network) to fetch the rest")
    return 0 if found.complete else 1


def _json_line(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)
