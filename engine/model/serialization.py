"""Safetensors-only saving and loading for the engine's diffusers-style models.

diffusers' ``from_pretrained`` falls back to pickled ``.bin`` weights when no safetensors file
is found; pickles can run code, so the engine's models refuse that path (the project loads
weights from folders and caches users point it at).
"""

from __future__ import annotations

import os

from diffusers.models.modeling_utils import ModelMixin


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
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
