"""Outputs are written under a temporary name beside their place, then renamed into it.

A crash or a cancel then never leaves a half-written file where a finished one is expected,
and, without ``overwrite``, an earlier output is never replaced.

A temporary name says whose it is: ``.NAME.RANDOM.PID.partial[.EXT]`` beside ``NAME``, PID
the writing process. A process killed outright (SIGKILL, a power cut) cannot tidy
up, so the next write to ``NAME`` (and every render, at its start) removes the partial files of
``NAME`` whose process is gone (``clean_partials``); files of any other name, or of a process
still running, are never touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)

PARTIAL_MARK = "partial"
_PARTIAL_NAME = re.compile(
    rf"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.(?P<pid>[0-9]+)\.{PARTIAL_MARK}(\.[A-Za-z0-9]+)?$"
)


def partial_prefix(path: Path) -> str:
    """How the temporary names of ``path`` begin (``tempfile`` adds a random part)."""
    return f".{path.name}."


def partial_suffix(extension: str = "") -> str:
    """How this process's temporary names end: its pid, the mark, then ``extension`` (".mp4":
    ffmpeg picks the format from the name)."""
    return f".{os.getpid()}.{PARTIAL_MARK}{extension}"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs: a dead one's temporary files (and takes) are litter."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def clean_partials(path: Path) -> list[Path]:
    """Remove the partial files and folders of ``path`` that a dead process left (see the module
    docstring); returns what was removed. A folder that cannot be listed is left alone."""
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = _PARTIAL_NAME.match(entry.name)
        if match is None or match["name"] != path.name or process_alive(int(match["pid"])):
            continue
        leftover = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        except FileNotFoundError:  # another run cleaned it first
            continue
        removed.append(leftover)
    return removed


def temporary_sibling(path: Path, extension: str = "") -> Path:
    """A new empty file beside ``path``, with the permissions a plain ``open`` would give;
    partial files an earlier, killed writer of ``path`` left are removed first.

    ``mkstemp`` makes files readable by their owner only; renamed into place as they are,
    videos on a studio's shared drive would be hidden from everyone else.
    """
    clean_partials(path)
    handle, temp = tempfile.mkstemp(
        prefix=partial_prefix(path), suffix=partial_suffix(extension), dir=path.parent
    )
    os.close(handle)
    os.chmod(temp, 0o666 & ~_UMASK)
    return Path(temp)


def temporary_sibling_folder(path: Path) -> Path:
    """A new empty folder beside ``path`` (as ``temporary_sibling``, for a folder of frames)."""
    clean_partials(path)
    temp = tempfile.mkdtemp(prefix=partial_prefix(path), suffix=partial_suffix(), dir=path.parent)
    os.chmod(temp, 0o777 & ~_UMASK)
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
