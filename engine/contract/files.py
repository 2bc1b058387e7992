"""Outputs are written under a temporary name beside their place, then renamed into it.

A crash or a cancel then never leaves a half-written file where a finished one is expected,
and, without ``overwrite``, an earlier output is never replaced.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def temporary_sibling(path: Path, suffix: str = ".partial") -> Path:
    """A new empty file beside ``path``, with the permissions a plain ``open`` would give.

    ``mkstemp`` makes files readable by their owner only; renamed into place as they are,
    videos on a studio's shared drive would be hidden from everyone else.
    """
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    os.chmod(temp, 0o666 & ~_UMASK)
    return Path(temp)


def move_into_place(temp: Path, path: Path, overwrite: bool) -> None:
    """Rename a finished ``temp`` to ``path``; without ``overwrite`` an existing ``path`` is kept
    and FileExistsError raised (a hard link cannot replace, unlike a rename)."""
    if overwrite:
        os.replace(temp, path)
    else:
        os.link(temp, path)
        temp.unlink()


def write_bytes_atomic(path: Path, data: bytes, overwrite: bool = True) -> None:
    temp = temporary_sibling(path)
    try:
        temp.write_bytes(data)
        move_into_place(temp, path, overwrite)
    finally:
        temp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: dict, overwrite: bool = True) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=2).encode("utf-8"), overwrite)
