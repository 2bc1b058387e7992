"""Where the full model's files are: the Hugging Face cache or a folder, offline first.

The full model is two repositories:

- ``Ryan241005/PoseAnything``: the PoseAnything DiT (Wan2.2-TI2V-5B fine-tuned with the skeleton
  channels and PTCM), two safetensors shards (and their index, if the repository has one: the
  release loads the shards without it, and so do we), DiffSynth key names;
- ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``: the Wan2.2 VAE, the umT5 text encoder and its tokenizer, in
  diffusers layout (``vae/``, ``text_encoder/``, ``tokenizer/``), safetensors weights.

Either can instead be a local folder with the same layout (a ``--local-dir`` download, or a copy).
Nothing is fetched unless the caller allows network (the add-on passes Blender's "Allow Online
Access"); then ``download`` fetches exactly the files listed here, after reporting the total size.
The cache is ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``, read at
call time (huggingface_hub reads it once at import, which a test or a caller may precede).
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .weights import CheckpointError, ModelNotFoundError

POSEANYTHING_REPO = "Ryan241005/PoseAnything"
WAN_REPO = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
DIT_SHARD_PREFIX = "diffusion_pytorch_model-"
DIT_SHARDS = (
    "diffusion_pytorch_model-00001-of-00002.safetensors",
    "diffusion_pytorch_model-00002-of-00002.safetensors",
)
WEIGHTS_LICENCE = (
    "PoseAnything weights: see the Ryan241005/PoseAnything model card; Wan2.2-TI2V-5B (VAE, "
    "umT5): Apache-2.0"
)


class WeightsMissingError(ModelNotFoundError):
    """Files of the full model are not on this machine; the message lists them and what to do."""


@dataclass(frozen=True)
class Component:
    """One part of the full model: the files it needs inside one repository or folder.

    ``files`` must all be there; ``optional`` files are listed when present; of ``one_of`` at
    least the first present is used (a tokenizer ships ``tokenizer.json`` or ``spiece.model``);
    ``index`` (optional) is a sharded-weights index whose ``weight_map`` names further files;
    ``single`` is the unsharded alternative to it.
    """

    name: str
    role: str
    """"poseanything" or "wan": which source (repository or folder) holds it."""
    files: tuple[str, ...]
    optional: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()
    index: str | None = None
    single: str | None = None
    download_patterns: tuple[str, ...] = ()


COMPONENTS: tuple[Component, ...] = (
    Component(
        "transformer",
        "poseanything",
        files=DIT_SHARDS,
        optional=(DIT_INDEX,),
        download_patterns=(DIT_INDEX, *DIT_SHARDS),  # the index only if the repository has it
    ),
    Component(
        "vae",
        "wan",
        files=("vae/config.json", "vae/diffusion_pytorch_model.safetensors"),
        download_patterns=("vae/config.json", "vae/diffusion_pytorch_model.safetensors"),
    ),
    Component(
        "text_encoder",
        "wan",
        files=("text_encoder/config.json",),
        index="text_encoder/model.safetensors.index.json",
        single="text_encoder/model.safetensors",
        download_patterns=("text_encoder/config.json", "text_encoder/*.safetensors*"),
    ),
    Component(
        "tokenizer",
        "wan",
        files=("tokenizer/tokenizer_config.json",),
        one_of=("tokenizer/tokenizer.json", "tokenizer/spiece.model"),
        download_patterns=("tokenizer/*",),
    ),
)


@dataclass(frozen=True)
class FullModelSources:
    """Repository ids or local folders of the two halves of the full model."""

    poseanything: str = POSEANYTHING_REPO
    wan: str = WAN_REPO

    def of(self, role: str) -> str:
        return self.poseanything if role == "poseanything" else self.wan


DEFAULT_SOURCES = FullModelSources()


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home).expanduser() / "hub"


def is_folder_source(source: str) -> bool:
    """A source is a local folder when it exists as one; otherwise it is a repository id."""
    return Path(source).expanduser().is_dir()


def _locate(source: str, filename: str) -> Path | None:
    """The local path of ``filename`` in a folder or the cache, None when it is not there."""
    if is_folder_source(source):
        path = Path(source).expanduser() / filename
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(source, filename, cache_dir=hub_cache_dir())
    return Path(found) if isinstance(found, str) else None


@dataclass
class FileStatus:
    component: str
    source: str
    filename: str
    path: Path | None
    """Local path when present."""

    @property
    def present(self) -> bool:
        return self.path is not None

    @property
    def size(self) -> int | None:
        return self.path.stat().st_size if self.path is not None else None


@dataclass
class Inventory:
    """Every file the full model needs, present or missing."""

    files: list[FileStatus] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Files that cannot be named yet (shards of an index that is itself missing)."""

    @property
    def missing(self) -> list[FileStatus]:
        return [status for status in self.files if not status.present]

    @property
    def complete(self) -> bool:
        return not self.missing and not self.notes

    def folder(self, role: str, sources: FullModelSources) -> Path:
        """The local folder holding a source's files (the snapshot folder of a cached repo)."""
        source = sources.of(role)
        if is_folder_source(source):
            return Path(source).expanduser()
        for status in self.files:
            if status.source == source and status.path is not None:
                depth = len(Path(status.filename).parts)
                return status.path.parents[depth - 1]
        raise WeightsMissingError(f"no file of {source} is on this machine")


def _index_files(index_path: Path, folder_of_index: str) -> list[str]:
    """Shard file names listed in a safetensors index, relative to the repository root."""
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{index_path} is not a safetensors index (a JSON object with a 'weight_map'): "
            f"{error}; delete it and download it again"
        ) from error
    prefix = f"{folder_of_index}/" if folder_of_index else ""
    return sorted({prefix + name for name in weight_map.values()})


def inventory(sources: FullModelSources = DEFAULT_SOURCES) -> Inventory:
    """Which of the full model's files are on this machine (no network)."""
    result = Inventory()
    for component in COMPONENTS:
        source = sources.of(component.role)

        def add(filename: str, name: str = component.name, source: str = source) -> Path | None:
            status = FileStatus(name, source, filename, _locate(source, filename))
            result.files.append(status)
            return status.path

        for filename in component.files:
            add(filename)
        for filename in component.optional:
            if _locate(source, filename):
                add(filename)
        if component.one_of:
            found = next((f for f in component.one_of if _locate(source, f)), component.one_of[0])
            add(found)
        if component.index:
            single = component.single and _locate(source, component.single)
            if single:
                add(component.single)
                continue
            index_path = add(component.index)
            if index_path is None:
                result.notes.append(
                    f"{component.name}: the shards listed in {component.index} ({source})"
                )
                continue
            for shard in _index_files(index_path, str(Path(component.index).parent)):
                add(shard)
    return result


def format_size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def how_to_get_weights(sources: FullModelSources) -> str:
    return (
        "Download them with `poseanything models --download` (needs network; in Blender, allow "
        "online access and press Download in the add-on's preferences), or point to folders "
        f"holding them with --poseanything-weights / --wan-weights. Sources: {sources.poseanything}"
        f" and {sources.wan} (cache: {hub_cache_dir()}, set HF_HOME to move it)."
    )


def require_complete(sources: FullModelSources) -> Inventory:
    """The inventory, or a ``WeightsMissingError`` naming the missing files and what to do."""
    found = inventory(sources)
    if found.complete:
        return found
    lines = [f"  {status.source}: {status.filename}" for status in found.missing]
    lines += [f"  {note}" for note in found.notes]
    raise WeightsMissingError(
        "the full model's weights are incomplete; missing:\n"
        + "\n".join(lines)
        + "\n"
        + how_to_get_weights(sources)
    )


@dataclass(frozen=True)
class PlannedFile:
    repo: str
    filename: str
    size: int
    present: bool


def plan_download(
    repo: str, remote_sizes: dict[str, int], patterns: tuple[str, ...], present: set[str]
) -> list[PlannedFile]:
    """The files of ``repo`` (name -> size, as the hub lists them) that the patterns select."""
    chosen = [
        name
        for name in sorted(remote_sizes)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    ]
    return [PlannedFile(repo, name, remote_sizes[name], name in present) for name in chosen]


ProgressFn = Callable[[str, dict], None]


def download(
    sources: FullModelSources = DEFAULT_SOURCES,
    report: ProgressFn | None = None,
    confirm: Callable[[int, int], bool] | None = None,
) -> Inventory:
    """Fetch the missing files of the full model into the cache (network needed).

    ``report(event, fields)`` gets ``plan`` (every file with its size and whether it is here, the
    total and the bytes to fetch) before anything is downloaded, then ``file`` after each file;
    ``confirm(to_fetch, total)`` may stop after the plan (to show the size and ask first).
    Folder sources are never written to: their missing files are reported as missing.
    """
    from huggingface_hub import HfApi, hf_hub_download

    report = report or (lambda event, fields: None)
    cache = hub_cache_dir()
    planned: list[PlannedFile] = []
    for role in ("poseanything", "wan"):
        source = sources.of(role)
        if is_folder_source(source):
            continue
        try:
            info = HfApi().model_info(source, files_metadata=True)
        except Exception as error:  # offline mode, no network, unknown repo, refused token
            raise WeightsMissingError(
                f"cannot list {source} on the Hugging Face hub ({type(error).__name__}: {error}); "
                "check the network (and that HF_HUB_OFFLINE is not set), or download the files "
                "elsewhere and point to their folder with --poseanything-weights / --wan-weights"
            ) from error
        remote = {sibling.rfilename: int(sibling.size or 0) for sibling in info.siblings}
        patterns = tuple(
            pattern
            for component in COMPONENTS
            if component.role == role
            for pattern in component.download_patterns
        )
        present = {name for name in remote if _locate(source, name) is not None}
        planned += plan_download(source, remote, patterns, present)
    total = sum(item.size for item in planned)
    to_fetch = [item for item in planned if not item.present]
    fetch_bytes = sum(item.size for item in to_fetch)
    items = [
        {"file": f"{item.repo}/{item.filename}", "size": item.size, "present": item.present}
        for item in planned
    ]
    report(
        "plan",
        {
            "files": len(planned),
            "total_bytes": total,
            "download_bytes": fetch_bytes,
            "items": items,
        },
    )
    if confirm is not None and not confirm(fetch_bytes, total):
        return inventory(sources)
    done = 0
    for number, item in enumerate(to_fetch, start=1):
        hf_hub_download(item.repo, item.filename, cache_dir=cache)
        done += item.size
        report(
            "file",
            {
                "file": f"{item.repo}/{item.filename}",
                "index": number,
                "count": len(to_fetch),
                "bytes_done": done,
                "bytes_total": fetch_bytes,
            },
        )
    return inventory(sources)
