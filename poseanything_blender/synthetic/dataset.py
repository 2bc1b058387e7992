"""Pose-video pairs on disk: one folder per clip, built, rendered and exported in a scratch scene.

    OUT/clip_000000/   a shot folder (shot.json, poses.npz, reference.png, poses/) written by the
                       add-on's own exporter; the reference is the clip's first rendered frame
                    frames/0001.png ...  the ground-truth video
                    masks/0001.png ...   the subject's coverage per frame (greyscale)
                    clip.json            what was generated: topology, camera move, seeds

Each clip lives in its own scratch scene that is deleted with everything made in it, so a
long run neither leaks memory nor touches the open file's scenes. A clip is staged in a hidden
folder and renamed into place when complete, so an interrupted run resumes by skipping the
clips that exist. Clip ``i`` draws everything from a generator seeded by ``(seed, i)``: the
same clip comes out whatever order or how many runs build it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import bpy
import numpy as np

from ...engine.contract.shot import BACKGROUND_DIR
from ...engine.errors import BadInput
from ..addons import ensure_rigify
from ..reference import subject_objects
from ..shot_export import ExportSettings, export_shot
from . import METARIGS
from .animation import (
    animate_bones,
    animate_camera,
    animate_root,
    lowest_point,
    posed_points,
    subject_bounds,
)
from .dressing import dress_set, light_scene, skin_armature
from .render import render_clip, render_clip_background
from .rigs import TOPOLOGY_KINDS, random_rig

CLIP_JSON = "clip.json"
FRAMES_DIR = "frames"
MASKS_DIR = "masks"
ROOT_MOTION_CHANCE = 0.5

Progress = Callable[[int, int], None]
"""Called with (clips done, clips in total): once before the first clip is built (counting
clips already on disk) and after each clip."""


@dataclass(frozen=True)
class ClipSettings:
    """Size of every clip: square frames of ``size`` pixels, ``frames`` frames at ``fps``."""

    size: int = 128
    frames: int = 16
    fps: int = 24

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"size {self.size} is too small; use at least 16 pixels")
        if self.frames < 2:
            raise ValueError(f"frames {self.frames} is too few; a clip needs at least 2")
        if self.fps < 1:
            raise ValueError(f"fps {self.fps} must be at least 1")


class ProgressBar:
    """``clip i/N`` with a bar, seconds per clip and ETA on stderr, rewritten in place.

    The rate counts only clips built in this run, so a resumed run's ETA is not fooled by the
    clips it skipped.
    """

    def __init__(self, label: str = "clips", stream=None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.start_time: float | None = None
        self.start_done = 0
        self.last_width = 0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.start_time is None:
            self.start_time, self.start_done = now, done
        built = done - self.start_done
        rate = (now - self.start_time) / built if built else None
        eta = "?" if rate is None else _duration(rate * (total - done))
        speed = "" if rate is None else f" {rate:.1f} s/clip"
        filled = round(30 * done / max(total, 1))
        bar = "#" * filled + "." * (30 - filled)
        line = f"{self.label} {done}/{total} [{bar}]{speed} ETA {eta}"
        self.stream.write(f"\r{line.ljust(self.last_width)}")  # blank a longer last line
        self.last_width = len(line)
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _all_ids() -> Iterator[bpy.types.ID]:
    for attribute in dir(bpy.data):
        collection = getattr(bpy.data, attribute)
        if isinstance(collection, bpy.types.bpy_prop_collection) and attribute != "window_managers":
            yield from (item for item in collection if isinstance(item, bpy.types.ID))


@contextmanager
def scratch_scene(name: str) -> Iterator[bpy.types.Scene]:
    """A new scene shown in the window while a clip is built; afterwards the window shows the
    previous scene again and every data-block made meanwhile is deleted.

    The window must show it because operators (Edit Mode, Rigify's metarig operators) act on
    the window's view layer.
    """
    window = bpy.context.window
    if window is None:
        raise RuntimeError(
            "building clips needs a window (run bpy as a Python module or Blender with its UI); "
            "blender --background has none"
        )
    existing = {datablock.as_pointer() for datablock in _all_ids()}
    previous = window.scene
    scene = bpy.data.scenes.new(name)
    window.scene = scene
    try:
        yield scene
    finally:
        if bpy.context.object is not None and bpy.context.object.mode != "OBJECT":
            bpy.ops.object.mode_set(mode="OBJECT")
        window.scene = previous
        made = [d for d in _all_ids() if d.as_pointer() not in existing]
        bpy.data.batch_remove(made)


def _configure(scene: bpy.types.Scene, settings: ClipSettings) -> None:
    """The scratch scene's own output size and timing: the exporter reads them for the shot."""
    render = scene.render
    render.resolution_x = render.resolution_y = settings.size
    render.resolution_percentage = 100
    render.fps, render.fps_base = settings.fps, 1.0
    scene.frame_start, scene.frame_end = 1, settings.frames


RigFactory = Callable[[bpy.types.Collection, np.random.Generator], tuple[bpy.types.Object, str]]


def _film(
    scene: bpy.types.Scene,
    make_rig: RigFactory,
    rng: np.random.Generator,
    settings: ClipSettings,
    staging: Path,
    shot_dir: Path,
    background: bool = False,
) -> dict:
    """Build, animate, dress and render one clip in ``scene`` into ``staging``; export its
    shot into ``shot_dir`` (with ``background``: and its background plates, the set without
    the subject, as a user's shot has them). Returns what was drawn, for clip.json."""
    collection = scene.collection
    frames = np.arange(1, settings.frames + 1, dtype=np.float64)
    armature_obj, kind = make_rig(collection, rng)
    body = skin_armature(armature_obj, collection, rng)
    animate_bones(armature_obj, rng, frames, settings.fps)
    points = posed_points(armature_obj, scene, 1)  # root motion starts from here
    root_motion = bool(rng.random() < ROOT_MOTION_CHANCE)
    if root_motion:
        animate_root(armature_obj, rng, frames, settings.fps, float(np.ptp(points, 0).max()))
    camera, camera_motion = animate_camera(collection, rng, frames, points)
    scene.camera = camera
    scene.frame_set(1)
    camera_start = np.array(camera.matrix_world.translation)
    center, radius = subject_bounds(points)
    ground = lowest_point(body, scene, frames)
    set_objects = dress_set(collection, rng, center, radius, camera_start, ground)
    light_scene(scene, rng)
    rendered, masks = render_clip(
        scene,
        camera,
        settings.frames,
        staging / FRAMES_DIR,
        staging / MASKS_DIR,
        set_objects,
        settings.size,
        settings.fps,
    )
    plates = None
    if background:
        plates = render_clip_background(
            scene,
            camera,
            settings.frames,
            staging / BACKGROUND_DIR,
            subject_objects(scene, armature_obj),
            settings.size,
            settings.fps,
        )
    export_shot(
        ExportSettings(
            scene=scene.name,
            armature=armature_obj.name,
            out=shot_dir,
            camera=camera.name,
            frames=(1, settings.frames),
            reference_image=rendered[0],
            reference_mask=masks[0],
            seed=int(rng.integers(2**31)),
            background_images=None if plates is None else tuple(plates),
        )
    )
    return {
        "kind": kind,
        "camera_motion": camera_motion,
        "root_motion": root_motion,
        "bones": len(armature_obj.data.bones),
    }


def _build_clip(
    out_dir: Path,
    name: str,
    make_rig: RigFactory,
    seed_words: Sequence[int],
    settings: ClipSettings,
    record: dict,
    background: bool = False,
) -> Path:
    """Build one clip into ``out_dir/name`` atomically: staged in a hidden folder, renamed
    when complete. Leftover staging from an interrupted run is cleared first."""
    for stale in out_dir.glob(f".{name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir))
    try:
        rng = np.random.default_rng(list(seed_words))
        with scratch_scene(f"poseanything_{name}") as scene:
            _configure(scene, settings)
            clip = staging / name  # the shot folder takes its name from here
            drawn = _film(scene, make_rig, rng, settings, staging, clip, background)
        os.replace(staging / FRAMES_DIR, clip / FRAMES_DIR)
        os.replace(staging / MASKS_DIR, clip / MASKS_DIR)
        meta = {**record, **drawn, "seed_words": list(seed_words), **asdict(settings)}
        (clip / CLIP_JSON).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        os.replace(clip, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir / name


def _check_same_recipe(clip: Path, seed_words: Sequence[int], settings: ClipSettings) -> None:
    """A clip kept on resume must be the clip this run would make, or the dataset would mix
    sizes or seeds without anyone noticing."""
    try:
        meta = json.loads((clip / CLIP_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: not JSON
        raise BadInput(
            f"{clip} has no readable {CLIP_JSON} ({error}); delete that folder to rebuild it"
        ) from error
    wanted = {"seed_words": list(seed_words), **asdict(settings)}
    found = {key: meta.get(key) for key in wanted}
    if found != wanted:
        raise BadInput(
            f"{clip} was made with {found}, this run makes {wanted}; use the same seed, size, "
            "frames and fps to resume, or a new folder"
        )


def _build_all(
    out_dir: str | Path,
    jobs: list[tuple[str, RigFactory, tuple[int, ...], dict]],
    settings: ClipSettings,
    progress: Progress | None,
    background: bool = False,
) -> list[Path]:
    """Build the clips of ``jobs`` not on disk yet (``background``: with background plates)."""
    out_dir = Path(out_dir).expanduser().absolute()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"cannot create the dataset folder {out_dir} ({error.strerror}); choose another"
        ) from error
    paths = [out_dir / name for name, *_ in jobs]
    for (_, _, seed_words, _), path in zip(jobs, paths, strict=True):
        if path.is_dir():
            _check_same_recipe(path, seed_words, settings)
    done = sum(path.is_dir() for path in paths)
    if progress is not None:
        progress(done, len(jobs))
    for (name, make_rig, seed_words, record), path in zip(jobs, paths, strict=True):
        if path.is_dir():
            continue
        _build_clip(out_dir, name, make_rig, seed_words, settings, record, background)
        done += 1
        if progress is not None:
            progress(done, len(jobs))
    return paths


def make_dataset(
    out_dir: str | Path,
    clips: int,
    seed: int,
    size: int = 128,
    frames: int = 16,
    fps: int = 24,
    progress: Progress | None = None,
) -> list[Path]:
    """Training clips ``clip_000000`` ... of random procedural creatures (never the metarigs,
    which are the evaluation set) in ``out_dir``; clips already there are kept and skipped.
    Body plans take turns, so every topology is equally common. Returns every clip's path."""
    if clips < 1:
        raise ValueError(f"clips is {clips}; ask for at least one clip")
    settings = ClipSettings(size, frames, fps)
    jobs = [
        (
            f"clip_{index:06d}",
            partial(random_rig, kind=TOPOLOGY_KINDS[index % len(TOPOLOGY_KINDS)]),
            (seed, index),
            {"source": "synthetic", "index": index},
        )
        for index in range(clips)
    ]
    return _build_all(out_dir, jobs, settings, progress)


def _metarig_factory(rig: str) -> RigFactory:
    operator = getattr(bpy.ops.object, f"armature_{rig}_metarig_add")

    def make_rig(collection, rng):
        operator()
        return bpy.context.view_layer.objects.active, f"metarig:{rig}"

    return make_rig


def make_eval_clips(
    out_dir: str | Path,
    rigs: Sequence[str] = METARIGS,
    clips_per_rig: int = 1,
    seed: int = 0,
    size: int = 128,
    frames: int = 16,
    fps: int = 24,
    progress: Progress | None = None,
) -> list[Path]:
    """Held-out clips ``<rig>_000`` ... of Blender's Rigify metarigs, with the training clips'
    skinning, motion, camera moves and rendering. Rigify is enabled if it is not."""
    unknown = [rig for rig in rigs if rig not in METARIGS]
    if unknown:
        raise ValueError(
            f"no metarig named {', '.join(map(repr, unknown))}; choose from {', '.join(METARIGS)}"
        )
    if clips_per_rig < 1:
        raise ValueError(f"clips_per_rig is {clips_per_rig}; ask for at least one clip")
    ensure_rigify()
    settings = ClipSettings(size, frames, fps)
    jobs = [
        (
            f"{rig}_{index:03d}",
            _metarig_factory(rig),
            # crc32 of the name, not the rig's place in the list, so a rig's clips do not
            # change when other rigs are asked for.
            (seed, zlib.crc32(rig.encode()), index),
            {"source": "metarig", "rig": rig, "index": index, "background": True},
        )
        for rig in rigs
        for index in range(clips_per_rig)
    ]
    # Background plates, as the shots users export have them: eval measures what they get.
    return _build_all(out_dir, jobs, settings, progress, background=True)
