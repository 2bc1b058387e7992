"""Text encoders: prompts -> (B, L, D) embeddings for the transformer's cross-attention.

Both implementations share one call, ``encode(prompts: list[str]) -> (B, L, D)``, and the
attribute ``dim`` (D). Positions past a prompt's end are zero, as Wan's pipelines pad umT5
output, so an empty prompt is an all-zero embedding (the unconditional input for guidance).

- ``HashTextEncoder`` (default model): words hashed into a fixed vocabulary (crc32, stable across
  runs and machines, no tokenizer file to download) and a tiny transformer over them.
- ``UMT5TextEncoder`` (full model): umT5-xxl from ``transformers``, imported only when loaded,
  because transformers is a large dependency only the GPU path needs. Prompts are cleaned as the
  release's Wan prompter cleans them (``clean_prompt``), so the same text gives the same tokens.
"""

from __future__ import annotations

import html
import re
import zlib
from pathlib import Path
from typing import Protocol

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from .serialization import SafetensorsModel

WORD = re.compile(r"\w+")


class TextEncoder(Protocol):
    """What the pipeline needs from a text encoder."""

    dim: int

    def encode(self, prompts: list[str]) -> torch.Tensor: ...


class HashTextEncoder(SafetensorsModel, ConfigMixin):
    """Hashed word embeddings + a small transformer encoder; output (B, max_tokens, dim)."""

    @register_to_config
    def __init__(
        self,
        vocab_size: int = 4096,
        dim: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        max_tokens: int = 32,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position = nn.Parameter(torch.randn(max_tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=4 * dim, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )

    @property
    def dim(self) -> int:
        return self.config.dim

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """(B, max_tokens) word ids, 0 = padding; words past ``max_tokens`` are dropped."""
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts, e.g. [prompt]")
        vocab, length = self.config.vocab_size, self.config.max_tokens
        ids = torch.zeros(len(prompts), length, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            words = WORD.findall(prompt.lower())[:length]
            hashed = [1 + zlib.crc32(word.encode("utf-8")) % (vocab - 1) for word in words]
            ids[row, : len(hashed)] = torch.tensor(hashed, dtype=torch.long)
        return ids

    def forward(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenize(prompts).to(self.device)
        padding = ids == 0
        x = self.embed(ids).to(self.dtype) + self.position.to(self.dtype)
        # A prompt without words would mask every key (NaN softmax): let it attend, zero it after.
        key_padding = padding & ~padding.all(-1, keepdim=True)
        x = self.encoder(x, src_key_padding_mask=key_padding)
        return x * (~padding)[..., None].to(x.dtype)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self(prompts)


def clean_prompt(text: str) -> str:
    """The release's prompt cleaning (DiffSynth ``HuggingfaceTokenizer(clean="whitespace")``):
    ftfy's mojibake and Unicode repair, HTML entities unescaped twice, whitespace runs made one
    space (the ``regex`` module's Unicode ``\\s``, as the release uses), ends stripped."""
    try:
        import ftfy
        import regex
    except ImportError as error:
        raise ImportError(
            "The full model's prompt cleaning needs the 'ftfy' and 'regex' packages: "
            "pip install ftfy regex (the default model does not)"
        ) from error
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip()


def _import_transformers():
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "The full model's text encoder (umT5) needs the 'transformers' and 'sentencepiece' "
            "packages: pip install transformers sentencepiece (the default model does not)"
        ) from error
    return transformers


class UMT5TextEncoder(nn.Module):
    """umT5 encoder of a diffusers-format Wan2.2 repository, output (B, max_length, 4096)."""

    def __init__(self, encoder: nn.Module, tokenizer, max_length: int = 512):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        subfolder: str = "text_encoder",
        tokenizer_subfolder: str = "tokenizer",
        torch_dtype: torch.dtype = torch.bfloat16,
        local_files_only: bool = True,
        max_length: int = 512,
    ) -> UMT5TextEncoder:
        transformers = _import_transformers()
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            path, subfolder=tokenizer_subfolder, local_files_only=local_files_only
        )
        encoder = transformers.UMT5EncoderModel.from_pretrained(
            path,
            subfolder=subfolder,
            torch_dtype=torch_dtype,
            use_safetensors=True,
            local_files_only=local_files_only,
        )
        return cls(encoder.eval(), tokenizer, max_length)

    @property
    def dim(self) -> int:
        return self.encoder.config.d_model

    def encode(self, prompts: list[str]) -> torch.Tensor:
        prompts = [clean_prompt(prompt) for prompt in prompts]
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        device = next(self.encoder.parameters()).device
        mask = tokens.attention_mask.to(device)
        hidden = self.encoder(tokens.input_ids.to(device), mask).last_hidden_state
        return hidden * mask[..., None].to(hidden.dtype)
