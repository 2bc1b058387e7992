"""Safetensors-only saving and loading for the engine's diffusers-style models.

diffusers' ``from_pretrained`` falls back to pickled ``.bin`` weights when no safetensors file
is found; pickles can run code, so the engine's models refuse that path (the project loads
weights from folders and caches users point it at).
"""

from __future__ import annotations

import os
from pathlib import Path

from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import logging

from ..checkpoints.weights import CheckpointError


class SafetensorsModel(ModelMixin):
    """``ModelMixin`` that saves and loads ``.safetensors`` weights only."""

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        if kwargs.get("safe_serialization") is False:
            raise ValueError(f"{type(self).__name__} saves safetensors weights only")
        kwargs["safe_serialization"] = True
        super().save_pretrained(save_directory, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        if kwargs.get("use_safetensors") is False:
            raise ValueError(
                f"{cls.__name__} loads safetensors weights only; convert the checkpoint to "
                ".safetensors instead of passing use_safetensors=False"
            )
        kwargs["use_safetensors"] = True
        wants_info = kwargs.pop("output_loading_info", False)
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # its missing-weights warning becomes the error below
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, output_loading_info=True, **kwargs
            )
        finally:
            logging.set_verbosity(verbosity)
        missing = info["missing_keys"] + [key for key, *_ in info["mismatched_keys"]]
        if missing:
            # diffusers would start these from random values: a video from noise, not an error.
            where = Path(pretrained_model_name_or_path, kwargs.get("subfolder") or "")
            raise CheckpointError(
                f"model: the weights in {where} do not fit {cls.__name__} ({len(missing)} "
                f"tensors missing or of another shape, e.g. {missing[0]}); copy the model "
                "folder again or point --model to a complete one"
            )
        return (model, info) if wants_info else model
