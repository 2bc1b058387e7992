"""Where the engine finds a model: the bundled default, a folder, or ``$POSEANYTHING_MODEL``.

The default model ships inside the extension (``engine/checkpoints/default-model/``) so
Generate works offline on a fresh machine. When it is missing (a source checkout before the
weights are committed, or a trimmed install) the error says how to get one instead of a bare
file-not-found.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from ..errors import BadInput

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default-model"
MODEL_ENV_VAR = "POSEANYTHING_MODEL"
MODEL_INDEX = "pipeline.json"
"""Marks a model folder; written by ``PoseAnythingPipeline.save_pretrained``."""
MAX_HEADER_BYTES = 100_000_000
"""safetensors' own limit on a header's length."""


class ModelNotFoundError(BadInput, FileNotFoundError):
    """No model at the requested place; the message says how to get one."""


class CheckpointError(BadInput):
    """A weights file does not fit the model or is damaged; the message lists what and where."""


USER_MODEL_EXAMPLE = "~/poseanything-models/my-model"
"""The folder the advice trains into: the user's own, never the installed package's bundled
model folder (training there would overwrite the model every install shares)."""


def how_to_get_a_model() -> str:
    return (
        "Reinstall the extension that bundles the default model, point to a model folder with "
        f"--model PATH, the {MODEL_ENV_VAR} environment variable or the add-on's model "
        "preference, or train one into a folder of your own: `poseanything train DATA --out "
        f"{USER_MODEL_EXAMPLE}` (make DATA with `poseanything-blender make-dataset --out DATA`), "
        f"then --model {USER_MODEL_EXAMPLE}."
    )


def resolve_model_dir(path: str | Path | None = None) -> Path:
    """The model folder to load: ``path``, else ``$POSEANYTHING_MODEL``, else the bundled one."""
    chosen = path or os.environ.get(MODEL_ENV_VAR) or DEFAULT_MODEL_DIR
    folder = Path(chosen).expanduser()
    if not (folder / MODEL_INDEX).is_file() or not any(folder.rglob("*.safetensors")):
        where = "the bundled default model" if folder == DEFAULT_MODEL_DIR else "a model"
        raise ModelNotFoundError(
            f"model: {where} was not found at {folder} (no {MODEL_INDEX} and safetensors "
            "weights there). " + how_to_get_a_model()
        )
    for weights in sorted(folder.rglob("*.safetensors")):
        if weights.is_file():  # anything else is the loader's I/O error (a retry may fix it)
            check_safetensors(weights)
    return folder


def check_safetensors(path: Path) -> None:
    """Read a safetensors file's header (without torch, so Blender's side can ask too): a
    truncated file, a bad header or tensors reaching past the end are a ``CheckpointError``
    here, not three chained tracebacks from deep inside the loader."""

    def damaged(why: str) -> CheckpointError:
        return CheckpointError(
            f"model: {path} is damaged ({why}); copy the model folder again or point --model "
            "to a complete one"
        )

    size = path.stat().st_size
    with path.open("rb") as file:
        start = file.read(8)
        if len(start) < 8:
            raise damaged(f"{size} bytes, shorter than a header")
        (length,) = struct.unpack("<Q", start)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise damaged(f"its header claims {length} bytes, the file has {size}")
        try:
            header = json.loads(file.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise damaged(f"its header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise damaged("its header is not an object")
    ends = [
        entry.get("data_offsets", [0, 0])[1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict)
    ]
    data = size - 8 - length
    if any(not isinstance(end, int) or end > data for end in ends):
        raise damaged(f"its tensors reach past the {data} bytes of data it holds")
