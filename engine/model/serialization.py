"""Safetensors-only saving and loading for the engine's diffusers-style models.

diffusers' ``from_pretrained`` falls back to pickled ``.bin`` weights when no safetensors file
is found; pickles can run code, so the engine's models refuse that path (the project loads
weights from folders and caches users point it at).
"""

from __future__ import annotations

import os

from diffusers.models.modeling_utils import ModelMixin


class SafetensorsModel(ModelMixin):
    """``ModelMixin`` whose ``from_pretrained`` only reads ``.safetensors`` weights."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        if kwargs.get("use_safetensors") is False:
            raise ValueError(
                f"{cls.__name__} loads safetensors weights only; convert the checkpoint to "
                ".safetensors instead of passing use_safetensors=False"
            )
        kwargs["use_safetensors"] = True
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
