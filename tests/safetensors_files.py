"""Safetensors files written by hand, for tests that run where there is no torch."""

from __future__ import annotations

import json
import struct


def safetensors_bytes(tensors: dict[str, list[float]]) -> bytes:
    """A whole, valid safetensors file of float32 tensors (written by hand: no torch here)."""
    header, data, offset = {}, b"", 0
    for name, values in tensors.items():
        chunk = struct.pack(f"<{len(values)}f", *values)
        header[name] = {
            "dtype": "F32",
            "shape": [len(values)],
            "data_offsets": [offset, offset + len(chunk)],
        }
        data, offset = data + chunk, offset + len(chunk)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data
