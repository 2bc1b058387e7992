"""Planning a batch (driver side): where each shot's video goes, the resume key, what is left.

A finished shot has a marker, ``batch-done.json``, beside its video, written atomically after the
video and ``engine.json``. It holds a key: a hash of the shot folder's contract files, the render
settings and model choice (all but how and where it runs: device, threads, online) and the
model's files. A re-run skips a shot whose marker holds the same key; an interrupted shot has no
marker and renders again; a changed shot or setting renders again, replacing the old video only
with ``overwrite`` (the user's take is never lost silently).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput
from ..render import ModelChoice, RenderSettings

VIDEO_NAME = "video.mp4"
DONE_MARKER = "batch-done.json"
KEY_VERSION = 2
"""Bump when the meaning of a rendered video changes for the same inputs (forces re-renders).
2: the key is made of the settings objects' fields, not of the command line's option names."""
UNKEYED_MODEL_FIELDS = frozenset({"device", "threads", "online"})
"""``ModelChoice`` fields that change how or where a shot renders, not its pixels."""
STATUSES = ("done", "skipped", "failed", "cancelled")


class BatchError(BadInput):
    """The batch as a whole cannot run (bad options, Ray missing, clashing outputs)."""


@dataclass(frozen=True)
class BatchSettings:
    """Everything that decides where and how the shots render; copied once from the CLI or UI."""

    render: RenderSettings = RenderSettings()
    model: ModelChoice = ModelChoice()
    """Render settings and model choice of every shot; part of the resume key."""
    overwrite: bool = False
    """Replace a video a different render (or no batch) left; never needed to resume."""
    out_dir: Path | None = None
    """Videos go to ``out_dir/<shot folder name>/video.mp4`` instead of into the shot folders."""
    retries: int = 2
    ray: str | None = None
    """None: in this process, one shot after another. "auto" (the running cluster), "local" (a
    throwaway cluster of this machine alone, node address 127.0.0.1) or a cluster address
    (``ray://head:10001``)."""
    gpus_per_shot: float = 0.0
    cpus_per_shot: float = 1.0
    shared_fs: bool = True
    """False: shot files go to Ray workers, and videos come back, through the object store."""

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise BatchError(f"--retries is {self.retries}; use 0 or more")


@dataclass(frozen=True)
class RenderTask:
    """One shot to render: what a worker needs, all of it paths and plain values."""

    shot_dir: str
    video: str
    key: str
    settings: BatchSettings
    shot_files: dict[str, bytes] | None = None
    """The contract files' bytes, when workers cannot see ``shot_dir`` (no shared storage)."""


@dataclass
class ShotResult:
    shot: str
    status: str
    """One of ``STATUSES``."""
    seconds: float = 0.0
    output: str = ""
    attempts: int = 0
    error: str = ""


def video_path(shot_dir: Path, out_dir: Path | None) -> Path:
    """Where a shot's video goes: into the shot folder, or ``out_dir/<shot folder name>/``."""
    folder = shot_dir if out_dir is None else out_dir / shot_dir.name
    return folder / VIDEO_NAME


def read_contract(shot_dir: Path) -> dict[str, bytes]:
    """The files that define a shot, by path inside the folder (not videos or anything else kept
    there); missing ones are left out, for the renderer to name."""
    from ..contract.shot import (
        BACKGROUND_DIR,
        POSES_DIR,
        POSES_NPZ,
        REFERENCE_MASK_PNG,
        REFERENCE_PNG,
        SHOT_JSON,
    )

    images = [
        path
        for folder in (POSES_DIR, BACKGROUND_DIR)
        if (shot_dir / folder).is_dir()
        for path in sorted((shot_dir / folder).glob("*.png"))
    ]
    files = (SHOT_JSON, POSES_NPZ, REFERENCE_PNG, REFERENCE_MASK_PNG)
    paths = [shot_dir / name for name in files] + images
    return {
        path.relative_to(shot_dir).as_posix(): path.read_bytes() for path in paths if path.is_file()
    }


def keyed_settings(settings: BatchSettings) -> dict:
    """The settings that decide a video's pixels, as plain values: what the key hashes."""
    model = dataclasses.asdict(settings.model)
    return {
        "key_version": KEY_VERSION,
        "render": dataclasses.asdict(settings.render),
        "model": {name: value for name, value in model.items() if name not in UNKEYED_MODEL_FIELDS},
    }


def shot_key(contract: dict[str, bytes], settings: BatchSettings, model_dir: Path | None) -> str:
    """Hash of the shot's contract files, the keyed settings and the model files.

    The model enters by file name, size and modification time (hashing multi-GB weights for every
    shot would cost more than it saves); a touched model file re-renders, never wrongly skips.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(keyed_settings(settings), sort_keys=True, default=str).encode())
    for name, data in sorted(contract.items()):
        digest.update(f"{name}\0{len(data)}\0".encode() + data)
    for path in sorted(model_dir.rglob("*")) if model_dir is not None else []:
        if path.is_file():
            stat = path.stat()
            name = path.relative_to(model_dir)
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def read_done_key(video: Path) -> str | None:
    """The key in the done marker beside ``video``, if the video and a readable marker exist."""
    marker = video.with_name(DONE_MARKER)
    if not (video.is_file() and marker.is_file()):
        return None
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError):
        return None


def plan_batch(
    shot_dirs: Sequence[str | Path], settings: BatchSettings
) -> tuple[list[RenderTask], list[ShotResult]]:
    """Jobs to render, and the shots already settled: skipped (their marker holds the same key)
    or failed (a video from another render is there and ``overwrite`` is off)."""
    from ..checkpoints.weights import resolve_model_dir
    from ..contract.video import OutputExistsError, check_output_free

    # The full model lives in the Hugging Face cache; its sources are in the keyed settings.
    model_dir = None if settings.model.full else resolve_model_dir(settings.model.folder)
    folders = [Path(folder).expanduser().resolve() for folder in shot_dirs]
    if not folders:
        raise BatchError("no shot folders given; pass one or more SHOT_DIR")
    out_dir = None if settings.out_dir is None else Path(settings.out_dir).expanduser().resolve()
    videos = [video_path(folder, out_dir) for folder in folders]
    clashes = sorted({str(v) for v in videos if videos.count(v) > 1})
    if clashes:
        raise BatchError(
            f"two shots would write the same video ({', '.join(clashes)}): shot folders given "
            "twice, or with the same name under --out-dir; rename one or drop --out-dir"
        )
    tasks, finished = [], []
    for folder, video in zip(folders, videos, strict=True):
        contract = read_contract(folder)
        key = shot_key(contract, settings, model_dir)
        if read_done_key(video) == key:
            finished.append(ShotResult(str(folder), "skipped", output=str(video)))
            continue
        try:
            check_output_free(video, settings.overwrite)
        except OutputExistsError as error:
            finished.append(ShotResult(str(folder), "failed", error=str(error)))
            continue
        tasks.append(
            RenderTask(
                str(folder), str(video), key, settings, None if settings.shared_fs else contract
            )
        )
    return tasks, finished
