"""Where the engine finds a model: the bundled default, a folder, or ``$POSEANYTHING_MODEL``.

The default model ships inside the extension (``engine/checkpoints/default-model/``) so
Generate works offline on a fresh machine. When it is missing (a source checkout before the
weights are committed, or a trimmed install) the error says how to get one instead of a bare
file-not-found.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BadInput

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default-model"
MODEL_ENV_VAR = "POSEANYTHING_MODEL"
MODEL_INDEX = "pipeline.json"
"""Marks a model folder; written by ``PoseAnythingPipeline.save_pretrained``."""


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
    return folder
