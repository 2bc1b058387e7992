"""The shot folder: the contract between the add-on and the engine.

A shot folder holds everything the engine needs and nothing Blender-specific, so it renders
anywhere (this machine, another Python with a GPU, a cluster worker) and other pose- or
camera-conditioned models can reuse it (K and OpenCV world-to-camera per frame, as CameraCtrl
and MotionCtrl take them). numpy and the standard library only: Blender's Python writes it.

    SHOT/shot.json      schema version, names, timing, size, prompt, seed, guidance, sparse
                        pose frames, the skeleton graph, engine settings
    SHOT/poses.npz      joints3d, joints2d, depth, visible, K, w2c, cam_type, edges, edge_part
    SHOT/reference.png  first frame of the subject
    SHOT/reference_mask.png  the subject's coverage in reference.png, greyscale 0..255, at the
                        shot's size (schema 2; absent when nothing knows it, e.g. a user's
                        image without alpha: the engine then estimates it, as for schema 1)
    SHOT/poses/0001.png skeleton images, 1-based shot-local frame numbers
    SHOT/background/0001.png  the set without the subject, seen by each frame's camera, at the
                        shot's size, one per frame (schema 3; absent when the reference is not
                        a render of the scene: the engine then moves the reference's own
                        background with the camera)

``pose_source`` (shot.json, default "joints"): "images" marks a shot whose skeleton images ARE
the condition, with no joints behind them (the release's own test inputs, ``poseanything
import-official``); its skeleton graph is empty and only a model that reads skeleton images
as given (the full model) renders it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInput
from .skeleton import MAX_PARTS, render_skeleton_frames, skeleton_frames, write_png

SCHEMA_VERSION = 3
READABLE_SCHEMA_VERSIONS = (1, 2, 3)
"""Schema 1 shots have no reference mask, schema 1 and 2 no background plates; everything else
is the same."""
SHOT_JSON = "shot.json"
POSES_NPZ = "poses.npz"
REFERENCE_PNG = "reference.png"
REFERENCE_MASK_PNG = "reference_mask.png"
POSES_DIR = "poses"
BACKGROUND_DIR = "background"
POSE_SOURCES = ("joints", "images")
CONTRACT_FILES = (
    SHOT_JSON,
    POSES_NPZ,
    REFERENCE_PNG,
    REFERENCE_MASK_PNG,
    POSES_DIR,
    BACKGROUND_DIR,
)
CAMERA_TYPES = ("perspective", "orthographic")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GUIDANCE_RANGE = (0.0, 10.0)
"""Subject and camera guidance lie in this range: 0 switches that motion off (camera 0: a
locked-off camera), 1 is the shot as exported, above 1 exaggerates. Far outside, the guidance
mix extrapolates where the model was never trained (-5 or 1e30 gave a black video)."""
SEED_RANGE = (0, 2**64 - 1)
"""What the noise generator takes (``torch.Generator.manual_seed``)."""


class ShotError(BadInput):
    """A shot folder that cannot be used; the message names the file or field and the fix."""


@dataclass(frozen=True)
class SkeletonGraph:
    """Any skeleton as a graph: bone i is the edge ``edges[i]`` between two joints."""

    joint_names: tuple[str, ...]
    bone_names: tuple[str, ...]
    edges: np.ndarray
    edge_part: np.ndarray

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_parts(self) -> int:
        return int(self.edge_part.max()) + 1 if len(self.edge_part) else 0


@dataclass(frozen=True)
class CameraPath:
    """Per-frame intrinsics and OpenCV world-to-camera matrices (x right, y down, z forward).

    For an orthographic camera, K maps camera-space x and y straight to pixels (no divide by z).
    ``width`` and ``height`` are the final render size in pixels.
    """

    K: np.ndarray
    w2c: np.ndarray
    cam_type: str
    width: int
    height: int


@dataclass(frozen=True)
class Guidance:
    """Strengths of the decoupled CFG: subject motion and the scene camera's motion."""

    subject: float = 1.0
    camera: float = 1.0


@dataclass(frozen=True)
class Shot:
    """One shot: a skeleton moving over ``frame_start..frame_end`` seen through a camera path."""

    name: str
    fps: float
    frame_start: int
    frame_end: int
    skeleton: SkeletonGraph
    camera_path: CameraPath
    joints3d: np.ndarray
    joints2d: np.ndarray
    depth: np.ndarray
    visible: np.ndarray
    prompt: str = ""
    seed: int = 0
    guidance: Guidance = Guidance()
    pose_frames: tuple[int, ...] | None = None
    """Shot-local 0-based frames that carry a skeleton (sparse poses); None means all."""
    armature: str = ""
    camera: str = ""
    source_blend: str = ""
    engine: dict = field(default_factory=dict)
    pose_source: str = "joints"
    """"joints": skeleton images are drawn from the joints; "images": the poses/ images are
    given and there are no joints (see the module docstring)."""

    @property
    def num_frames(self) -> int:
        return self.frame_end - self.frame_start + 1

    @property
    def width(self) -> int:
        return self.camera_path.width

    @property
    def height(self) -> int:
        return self.camera_path.height

    @property
    def in_front(self) -> np.ndarray:
        """Joints in front of the camera: the ones whose projection can be drawn."""
        return self.depth > 0

    def skeleton_frames(self, part_colors: bool = False) -> Iterator[np.ndarray]:
        """The shot's skeleton images at its own size, one (H, W, 3) uint8 frame at a time."""
        return skeleton_frames(
            self.joints2d,
            self.in_front,
            self.skeleton.edges,
            self.width,
            self.height,
            pose_frames=self.pose_frames,
            edge_part=self.skeleton.edge_part,
            part_colors=part_colors,
        )

    def skeleton_images(self, part_colors: bool = False) -> np.ndarray:
        """All the shot's skeleton images, (F, H, W, 3) uint8 (a preview; export streams them)."""
        return render_skeleton_frames(
            self.joints2d,
            self.in_front,
            self.skeleton.edges,
            self.width,
            self.height,
            pose_frames=self.pose_frames,
            edge_part=self.skeleton.edge_part,
            part_colors=part_colors,
        )


def _shot_json(shot: Shot) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": shot.name,
        "fps": shot.fps,
        "frame_start": shot.frame_start,
        "frame_end": shot.frame_end,
        "width": shot.width,
        "height": shot.height,
        "prompt": shot.prompt,
        "seed": shot.seed,
        "guidance": asdict(shot.guidance),
        "pose_frames": None if shot.pose_frames is None else list(shot.pose_frames),
        "skeleton": {
            "joint_names": list(shot.skeleton.joint_names),
            "bone_names": list(shot.skeleton.bone_names),
            "edges": shot.skeleton.edges.tolist(),
            "edge_part": shot.skeleton.edge_part.tolist(),
        },
        "armature": shot.armature,
        "camera": shot.camera,
        "cam_type": shot.camera_path.cam_type,
        "source_blend": shot.source_blend,
        "engine": shot.engine,
        "pose_source": shot.pose_source,
    }


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header, without decoding it (no PIL in Blender)."""
    with open(path, "rb") as f:
        header = f.read(24)
    if header[: len(PNG_SIGNATURE)] != PNG_SIGNATURE or len(header) < 24:
        raise ShotError(f"reference: {path} is not a PNG image; save it as PNG first")
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def _check_reference_mask(shot: Shot, mask: np.ndarray) -> None:
    _require(
        mask.dtype == np.uint8 and mask.shape == (shot.height, shot.width),
        "reference_mask",
        f"{mask.dtype} {mask.shape}, expected uint8 ({shot.height}, {shot.width}): the "
        "subject's coverage at the shot's size",
    )


def _write_contents(
    shot: Shot,
    folder: Path,
    reference: np.ndarray | str | Path,
    skeleton_images: bool,
    reference_mask: np.ndarray | None,
    pose_images: Mapping[int, str | Path] | None,
    background: Sequence[str | Path] | None,
) -> None:
    (folder / SHOT_JSON).write_text(json.dumps(_shot_json(shot), indent=2), encoding="utf-8")
    np.savez_compressed(
        folder / POSES_NPZ,
        joints3d=shot.joints3d,
        joints2d=shot.joints2d,
        depth=shot.depth,
        visible=shot.visible,
        K=shot.camera_path.K,
        w2c=shot.camera_path.w2c,
        cam_type=np.array(shot.camera_path.cam_type),
        edges=shot.skeleton.edges,
        edge_part=shot.skeleton.edge_part,
    )
    if isinstance(reference, np.ndarray):
        write_png(folder / REFERENCE_PNG, reference)
    else:
        source = Path(reference)
        _png_size(source)
        shutil.copyfile(source, folder / REFERENCE_PNG)
    if reference_mask is not None:
        write_png(folder / REFERENCE_MASK_PNG, reference_mask)
    poses = folder / POSES_DIR
    poses.mkdir()
    if pose_images is not None:
        for frame, source in sorted(pose_images.items()):
            _png_size(Path(source))
            shutil.copyfile(source, poses / pose_image_name(frame))
    elif skeleton_images:
        # Each image goes to disk as it is drawn: a long shot's images are never all in memory.
        for i, image in enumerate(shot.skeleton_frames()):
            write_png(poses / pose_image_name(i), image)
    if background is not None:
        plates = folder / BACKGROUND_DIR
        plates.mkdir()
        for i, source in enumerate(background):
            _copy_png(Path(source), plates / pose_image_name(i), (shot.width, shot.height))


def _copy_png(source: Path, target: Path, size: tuple[int, int]) -> None:
    """Copy a background plate, which must be a PNG of the shot's ``size`` (width, height)."""
    found = _png_size(source)
    _require(
        found == size,
        BACKGROUND_DIR,
        f"{source.name} is {found[0]}x{found[1]}, not the shot's {size[0]}x{size[1]}",
    )
    shutil.copyfile(source, target)


def pose_image_name(frame: int) -> str:
    """The file of shot-local frame ``frame`` (0-based) in poses/ and background/: 1-based,
    four digits."""
    return f"{frame + 1:04d}.png"


def write_shot(
    shot: Shot,
    folder: str | Path,
    reference: np.ndarray | str | Path,
    skeleton_images: bool = True,
    reference_mask: np.ndarray | None = None,
    pose_images: Mapping[int, str | Path] | None = None,
    background: Sequence[str | Path] | None = None,
) -> Path:
    """Write a shot folder atomically and return its path.

    ``reference_mask``: the subject's coverage in the reference, (H,W) uint8 at the shot's size
    (None: unknown; the engine estimates it). Everything is written into a temporary sibling
    folder first. A new folder is renamed into place; in an existing shot folder, each contract
    file is swapped in by rename (an earlier mask or plates this export lacks go) and anything
    else there (videos, earlier takes) is kept. A non-empty folder that is not a shot folder is
    refused rather than mixed with. ``pose_images`` (frame -> PNG file, for a shot whose
    ``pose_source`` is "images"): the skeleton images to copy into poses/ as given.
    ``background``: the set without the subject through each frame's camera, one PNG of the
    shot's size per frame, copied into background/ (None: the shot has none).
    """
    validate_shot(shot)
    if (pose_images is not None) != (shot.pose_source == "images"):
        raise ShotError(
            "pose_source: a shot of skeleton images is written with its images (pose_images), "
            "a shot of joints without"
        )
    if pose_images is not None and set(pose_images) != set(shot.pose_frames or ()):
        raise ShotError("pose_frames: pose_images must hold exactly the shot's pose frames")
    if reference_mask is not None:
        _check_reference_mask(shot, reference_mask)
    if background is not None and len(background) != shot.num_frames:
        raise ShotError(
            f"background: {len(background)} plates for {shot.num_frames} frames; give one per "
            "frame, or none"
        )
    folder = Path(folder).absolute()
    if folder.exists() and not folder.is_dir():
        raise ShotError(f"output: {folder} is a file; choose a folder for the shot")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / SHOT_JSON).is_file():
        raise ShotError(
            f"output: {folder} is not empty and holds no shot; choose a new or empty folder"
        )
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=parent))
    except OSError as error:
        raise ShotError(
            f"output: cannot write in {parent} ({error.strerror}); choose a writable folder"
        ) from error
    try:
        _write_contents(
            shot, staging, reference, skeleton_images, reference_mask, pose_images, background
        )
        if not folder.exists():
            os.replace(staging, folder)
            return folder
        if not any(folder.iterdir()):
            folder.rmdir()
            os.replace(staging, folder)
            return folder
        for name in CONTRACT_FILES:
            target = folder / name
            if not (staging / name).exists():
                # An optional file this export does not have (the mask, the plates): an
                # earlier export's would describe another reference, so it goes.
                if target.exists():
                    os.replace(target, staging / name)
                continue
            if (staging / name).is_dir() and target.is_dir():
                old = staging / f"{name}.old"
                os.replace(target, old)
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _require(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise ShotError(f"{field_name}: {message}")


def guidance_problem(value: object) -> str | None:
    """What is wrong with a guidance strength (not a number, not finite, out of
    ``GUIDANCE_RANGE``), as the end of a message; None when it is fine."""
    low, high = GUIDANCE_RANGE
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number; use a number from {low:g} to {high:g}"
    if not (math.isfinite(value) and low <= value <= high):
        return f"{value} is outside {low:g}..{high:g}; use a number in that range (1: as exported)"
    return None


def seed_problem(value: object) -> str | None:
    """What is wrong with a noise seed, as the end of a message; None when it is fine."""
    low, high = SEED_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"{value!r} is not a whole number from {low} to {high}; use one in that range"
    return None


def validate_shot(shot: Shot) -> None:
    """Check shapes, ranges and finiteness; raise ShotError naming the first bad field."""
    frames = shot.num_frames
    for name in ("subject", "camera"):
        problem = guidance_problem(getattr(shot.guidance, name))
        _require(problem is None, f"guidance.{name}", str(problem))
    _require(seed_problem(shot.seed) is None, "seed", str(seed_problem(shot.seed)))
    steps = shot.engine.get("steps")
    _require(
        steps is None or (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0),
        "engine.steps",
        f"{steps!r} is not a whole number of sampling steps; use 1 or more (0: the model's)",
    )
    _require(
        frames > 0,
        "frame_end",
        f"empty frame range {shot.frame_start}..{shot.frame_end}; frame_end must be >= start",
    )
    _require(math.isfinite(shot.fps) and shot.fps > 0, "fps", f"must be positive, got {shot.fps}")
    skeleton = shot.skeleton
    joints, bones = skeleton.num_joints, len(skeleton.bone_names)
    _require(
        shot.pose_source in POSE_SOURCES,
        "pose_source",
        f"{shot.pose_source!r} is not one of {', '.join(POSE_SOURCES)}",
    )
    if shot.pose_source == "images":
        _require(
            shot.pose_frames is not None,
            "pose_frames",
            "a shot of skeleton images lists the frames its images are for",
        )
    else:
        _require(bones > 0, "skeleton.edges", "the skeleton has no bones")
    _require(
        skeleton.edges.shape == (bones, 2),
        "skeleton.edges",
        f"shape {skeleton.edges.shape}, expected ({bones}, 2), one edge per bone",
    )
    _require(
        bool((skeleton.edges >= 0).all() and (skeleton.edges < joints).all()),
        "skeleton.edges",
        f"joint index outside 0..{joints - 1}",
    )
    _require(
        skeleton.edge_part.shape == (bones,),
        "skeleton.edge_part",
        f"shape {skeleton.edge_part.shape}, expected ({bones},)",
    )
    _require(
        bool((skeleton.edge_part >= 0).all() and (skeleton.edge_part < MAX_PARTS).all()),
        "skeleton.edge_part",
        f"part labels must be in 0..{MAX_PARTS - 1}",
    )
    camera = shot.camera_path
    _require(
        camera.cam_type in CAMERA_TYPES,
        "cam_type",
        f"{camera.cam_type!r} is not one of {', '.join(CAMERA_TYPES)}",
    )
    _require(
        camera.width >= 16 and camera.height >= 16,
        "width/height",
        f"{camera.width}x{camera.height} is too small; use at least 16x16 pixels",
    )
    expected = {
        "joints3d": (shot.joints3d, (frames, joints, 3)),
        "joints2d": (shot.joints2d, (frames, joints, 2)),
        "depth": (shot.depth, (frames, joints)),
        "visible": (shot.visible, (frames, joints)),
        "K": (camera.K, (frames, 3, 3)),
        "w2c": (camera.w2c, (frames, 4, 4)),
    }
    for name, (array, shape) in expected.items():
        _require(
            array.shape == shape,
            name,
            f"shape {array.shape}, expected {shape} ({frames} frames x {joints} joints)",
        )
        if array.dtype != bool:
            _require(
                bool(np.isfinite(array).all()),
                name,
                "contains NaN or infinite values; re-export the shot",
            )
    if shot.pose_frames is not None:
        _require(len(shot.pose_frames) > 0, "pose_frames", "empty; list at least one frame or null")
        _require(
            all(0 <= f < frames for f in shot.pose_frames),
            "pose_frames",
            f"frames must be shot-local indices in 0..{frames - 1}",
        )


_MISSING = object()
JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}


class _Fields:
    """shot.json's fields read by type: a value of the wrong type (``true`` for an fps, ``832.7``
    for a width, a string for a guidance) is a ``ShotError`` naming the field, never coerced.
    ``prefix`` names the object the fields are in (``"guidance."``)."""

    def __init__(self, data: object, prefix: str = "") -> None:
        if not isinstance(data, dict):
            where = f"{SHOT_JSON}: {prefix.rstrip('.')}" if prefix else SHOT_JSON
            kind = JSON_TYPES.get(type(data), "a number")
            raise ShotError(f"{where} is {kind}, expected an object of fields; re-export the shot")
        self.data = data
        self.prefix = prefix

    def _get(self, name: str, default: object) -> object:
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            raise ShotError(f"{SHOT_JSON}: missing field {self.prefix}{name}; re-export the shot")
        return default

    def _wrong(self, name: str, value: object, kind: str) -> ShotError:
        return ShotError(
            f"{SHOT_JSON}: {self.prefix}{name} is {json.dumps(value)}, expected {kind}; "
            "fix the field or re-export the shot"
        )

    def integer(self, name: str, default: object = _MISSING) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(name, value, "a whole number")
        return value

    def number(self, name: str, default: object = _MISSING) -> float:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(name, value, "a number")
        return float(value)

    def text(self, name: str, default: object = _MISSING) -> str:
        value = self._get(name, default)
        if not isinstance(value, str):
            raise self._wrong(name, value, "a string")
        return value

    def texts(self, name: str) -> list[str]:
        value = self._get(name, _MISSING)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._wrong(name, value, "a list of strings")
        return value

    def integers_or_none(self, name: str) -> list[int] | None:
        value = self._get(name, None)
        if value is not None and (
            not isinstance(value, list)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise self._wrong(name, value, "a list of whole numbers or null")
        return value

    def fields(self, name: str, default: object = _MISSING) -> _Fields:
        """The object in field ``name``, read the same way."""
        return _Fields(self._get(name, default), f"{self.prefix}{name}.")


def read_shot(folder: str | Path) -> Shot:
    """Read and validate a shot folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ShotError(f"shot folder: {folder} does not exist")
    for name in (SHOT_JSON, POSES_NPZ, REFERENCE_PNG):
        _require((folder / name).is_file(), name, f"missing from {folder}; re-export the shot")
    try:
        meta = json.loads((folder / SHOT_JSON).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ShotError(f"{SHOT_JSON}: not valid JSON ({error})") from error
    fields = _Fields(meta)  # a list or a string is not a shot
    version = meta.get("schema_version")
    readable = ", ".join(map(str, READABLE_SCHEMA_VERSIONS))
    _require(
        version in READABLE_SCHEMA_VERSIONS,
        "schema_version",
        f"{version!r} is not supported (this engine reads versions {readable}); "
        "re-export the shot with a matching add-on",
    )
    try:
        with np.load(folder / POSES_NPZ, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        # A truncated or damaged archive: numpy surfaces whatever zipfile or zlib raised.
        raise ShotError(
            f"{POSES_NPZ}: unreadable ({type(error).__name__}: {error}); re-export the shot"
        ) from error
    needed = ("joints3d", "joints2d", "depth", "visible", "K", "w2c", "edges", "edge_part")
    for key in needed:
        _require(key in arrays, f"{POSES_NPZ}:{key}", "missing array; re-export the shot")
    skeleton_fields = fields.fields("skeleton")
    skeleton = SkeletonGraph(
        joint_names=tuple(skeleton_fields.texts("joint_names")),
        bone_names=tuple(skeleton_fields.texts("bone_names")),
        edges=arrays["edges"].astype(np.int32),
        edge_part=arrays["edge_part"].astype(np.int8),
    )
    guidance = fields.fields("guidance", {})
    for name in sorted(set(guidance.data) - {"subject", "camera"}):
        raise ShotError(f"{SHOT_JSON}: guidance.{name} is not a field; use subject and camera")
    pose_frames = fields.integers_or_none("pose_frames")
    shot = Shot(
        name=fields.text("name"),
        fps=fields.number("fps"),
        frame_start=fields.integer("frame_start"),
        frame_end=fields.integer("frame_end"),
        skeleton=skeleton,
        camera_path=CameraPath(
            K=arrays["K"].astype(np.float64),
            w2c=arrays["w2c"].astype(np.float64),
            cam_type=fields.text("cam_type", str(arrays.get("cam_type", "perspective"))),
            width=fields.integer("width"),
            height=fields.integer("height"),
        ),
        joints3d=arrays["joints3d"].astype(np.float64),
        joints2d=arrays["joints2d"].astype(np.float64),
        depth=arrays["depth"].astype(np.float64),
        visible=arrays["visible"].astype(bool),
        prompt=fields.text("prompt", ""),
        seed=fields.integer("seed", 0),
        guidance=Guidance(guidance.number("subject", 1.0), guidance.number("camera", 1.0)),
        pose_frames=None if pose_frames is None else tuple(pose_frames),
        armature=fields.text("armature", ""),
        camera=fields.text("camera", ""),
        source_blend=fields.text("source_blend", ""),
        engine=dict(fields.fields("engine", {}).data),
        pose_source=fields.text("pose_source", "joints"),
    )
    _require(
        len(skeleton.edges) == len(skeleton.bone_names),
        "skeleton.bone_names",
        f"{len(skeleton.bone_names)} names for {len(skeleton.edges)} bones",
    )
    validate_shot(shot)
    return shot


def read_image(path: Path, mode: str, fix: str = "re-export the shot") -> np.ndarray:
    """A PNG as a uint8 array in PIL ``mode``, or a ``ShotError`` ending in ``fix``. Engine side."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
    except OSError as error:
        raise ShotError(f"{path.name}: unreadable ({error}); {fix}") from error


def read_reference(folder: str | Path) -> np.ndarray:
    """The reference frame as (H, W, 3) uint8. Needs PIL, so it is for the engine side only."""
    return read_image(Path(folder) / REFERENCE_PNG, "RGB")


def read_reference_mask(folder: str | Path) -> np.ndarray | None:
    """The subject's coverage in the reference, (H, W) float32 in 0..1, or None when the shot
    has none (schema 1, or a reference image nothing knew the subject of). Engine side (PIL)."""
    path = Path(folder) / REFERENCE_MASK_PNG
    if not path.is_file():
        return None
    return read_image(path, "L").astype(np.float32) / 255.0


class ImageFiles(Mapping):
    """A shot's images, frame -> (H, W, 3) uint8 as stored, each read when asked for: a long
    shot's images are never all in memory. ``fix``: what to do when one is unreadable. Engine
    side (PIL)."""

    def __init__(self, paths: Mapping[int, Path], fix: str) -> None:
        self.paths = dict(paths)
        self.fix = fix

    def __getitem__(self, frame: int) -> np.ndarray:
        return read_image(self.paths[frame], "RGB", fix=self.fix)

    def __iter__(self) -> Iterator[int]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def _image_files(folder: Path, frames, fix: str) -> ImageFiles:
    """The images of ``frames`` in ``folder`` (``ImageFiles``); a missing one is a ShotError."""
    paths = {}
    for frame in frames:
        path = folder / pose_image_name(frame)
        _require(path.is_file(), folder.name, f"{path.name} is missing; {fix}")
        paths[frame] = path
    return ImageFiles(paths, fix)


def read_pose_images(folder: str | Path, shot: Shot) -> ImageFiles:
    """An "images" shot's skeleton images (``ImageFiles``); a missing one is a ShotError."""
    return _image_files(Path(folder) / POSES_DIR, shot.pose_frames or (), "import the shot again")


def read_background(folder: str | Path, shot: Shot) -> ImageFiles | None:
    """The shot's background plates, one per frame (``ImageFiles``), or None when it has none;
    a missing one is a ShotError."""
    plates = Path(folder) / BACKGROUND_DIR
    if not plates.is_dir():
        return None
    return _image_files(plates, range(shot.num_frames), "re-export the shot")
