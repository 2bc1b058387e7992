"""The release's own test inputs (its ``data/test`` layout) as shot folders.

The released PoseAnything tests on folders laid out as

    DATA_DIR/metadata.csv                  file_name, condition_images, text, condition_index
    DATA_DIR/first_frame/NAME.png          the reference (first frame)
    DATA_DIR/skeleton_image/NAME/NNN.png   skeleton images, NNN = the video frame
    DATA_DIR/video/NAME_id.png             the subject on white (the masked first frame)

and renders each row as its ``test_ddp.py`` does: 81 frames, the poses whose index is below 81,
seed 123, 50 steps, cfg 1.0, 24 fps. ``import_release_layout`` turns each sample into a shot
folder that renders the same way on the full model (a GPU user compares our output with the
paper's on the paper's inputs): the skeleton images as given (``pose_source`` "images": there
are no joints, so the default model, which draws its poses from joints, refuses the shot), the
subject mask from the ``_id`` image by the release's threshold (grey <= 245 is subject; without
one there is no mask and, as in the release, the part masks are not cut to a subject), and the
seed, steps and guidance of the test script. A skeleton folder without a metadata row (the
release ships ``chat`` and ``talk`` so) is imported with every image as a pose and no prompt.
Engine side: reads PNGs with Pillow.
"""

from __future__ import annotations

import ast
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .shot import CameraPath, Guidance, Shot, ShotError, SkeletonGraph, read_image, write_shot

RELEASE_FRAMES = 81
RELEASE_FPS = 24.0
RELEASE_SEED = 123
RELEASE_STEPS = 50
SUBJECT_GREY_MAX = 245
"""The release's subject threshold on the ``_id`` image (``cv2.THRESH_BINARY_INV`` at 245)."""
METADATA = "metadata.csv"
FIRST_FRAME_DIR = "first_frame"
SKELETON_DIR = "skeleton_image"
COPY_AGAIN = "copy the release's data folder completely (git lfs pull)"
SUBJECT_DIR = "video"


@dataclass(frozen=True)
class ReleaseSample:
    """One test input of the release's layout."""

    name: str
    prompt: str
    pose_frames: tuple[int, ...]
    """Video frames with a skeleton image, below ``RELEASE_FRAMES``, ascending."""
    first_frame: Path
    skeletons: dict[int, Path]
    subject: Path | None
    in_metadata: bool


def _skeleton_files(folder: Path) -> dict[int, Path]:
    return {int(path.stem): path for path in folder.glob("*.png") if path.stem.isdigit()}


def _subject_image(data_dir: Path, name: str) -> Path | None:
    """``video/NAME_id.png``, the only subject image the release's test script reads."""
    path = data_dir / SUBJECT_DIR / f"{name}_id.png"
    return path if path.is_file() else None


def _metadata_rows(data_dir: Path) -> list[dict]:
    path = data_dir / METADATA
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for number, row in enumerate(rows, start=2):
        if not {"file_name", "condition_index"} <= row.keys():
            raise ShotError(
                f"{path}: needs the columns file_name and condition_index (and text); line "
                f"{number} has {sorted(row)}"
            )
    return rows


def _condition_index(path: Path, row: dict) -> list[int]:
    try:
        index = ast.literal_eval(row["condition_index"])
        return [int(i) for i in index]
    except (ValueError, SyntaxError, TypeError) as error:
        raise ShotError(
            f"{path}: condition_index of {row['file_name']} is not a list of frame numbers "
            f"({error})"
        ) from None


def read_release_layout(data_dir: str | Path) -> list[ReleaseSample]:
    """The samples of a folder in the release's layout: metadata rows first, then skeleton
    folders without a row; every file a sample needs is checked to be there."""
    data_dir = Path(data_dir)
    skeleton_root = data_dir / SKELETON_DIR
    if not skeleton_root.is_dir():
        raise ShotError(
            f"{data_dir}: no {SKELETON_DIR}/ folder; point to a folder in the release's layout "
            f"({METADATA}, {FIRST_FRAME_DIR}/, {SKELETON_DIR}/NAME/NNN.png, {SUBJECT_DIR}/)"
        )
    rows = _metadata_rows(data_dir)
    listed = {Path(row["file_name"]).stem: row for row in rows}
    names = list(listed) + sorted(
        p.name for p in skeleton_root.iterdir() if p.is_dir() and p.name not in listed
    )
    samples = []
    for name in names:
        row = listed.get(name)
        files = _skeleton_files(skeleton_root / name)
        wanted = _condition_index(data_dir / METADATA, row) if row else sorted(files)
        frames = tuple(sorted({f for f in wanted if 0 <= f < RELEASE_FRAMES}))
        missing = [f"{SKELETON_DIR}/{name}/{f:03d}.png" for f in frames if f not in files]
        first_frame = data_dir / FIRST_FRAME_DIR / f"{name}.png"
        if not first_frame.is_file():
            missing.insert(0, f"{FIRST_FRAME_DIR}/{name}.png")
        if missing:
            raise ShotError(
                f"{data_dir}: {name} lacks {', '.join(missing[:3])}"
                + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                + f"; {COPY_AGAIN}"
            )
        if 0 not in frames:
            raise ShotError(
                f"{data_dir}: {name} has no skeleton for frame 0 (000.png), the reference's pose"
            )
        samples.append(
            ReleaseSample(
                name=name,
                prompt=(row.get("text") or "") if row else "",
                pose_frames=frames,
                first_frame=first_frame,
                skeletons={f: files[f] for f in frames},
                subject=_subject_image(data_dir, name),
                in_metadata=row is not None,
            )
        )
    if not samples:
        raise ShotError(f"{data_dir}: {SKELETON_DIR}/ holds no sample folders")
    return samples


def subject_mask(subject: Path, width: int, height: int) -> np.ndarray:
    """(H, W) uint8 0/255 subject mask from the release's subject-on-white image."""
    from PIL import Image

    grey = read_image(subject, "L", COPY_AGAIN)
    mask = np.where(grey <= SUBJECT_GREY_MAX, 255, 0).astype(np.uint8)
    if mask.shape != (height, width):
        mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
    return mask


def sample_shot(sample: ReleaseSample, width: int, height: int) -> Shot:
    """The shot of one sample: 81 frames of skeleton images, no joints (``pose_source``)."""
    frames = RELEASE_FRAMES
    focal = float(max(width, height))
    K = np.tile(
        np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]]), (frames, 1, 1)
    )
    return Shot(
        name=sample.name,
        fps=RELEASE_FPS,
        frame_start=0,
        frame_end=frames - 1,
        skeleton=SkeletonGraph((), (), np.zeros((0, 2), np.int32), np.zeros(0, np.int8)),
        camera_path=CameraPath(K, np.tile(np.eye(4), (frames, 1, 1)), "perspective", width, height),
        joints3d=np.zeros((frames, 0, 3)),
        joints2d=np.zeros((frames, 0, 2)),
        depth=np.zeros((frames, 0)),
        visible=np.zeros((frames, 0), dtype=bool),
        prompt=sample.prompt,
        seed=RELEASE_SEED,
        guidance=Guidance(subject=1.0, camera=1.0),
        pose_frames=sample.pose_frames,
        engine={"steps": RELEASE_STEPS, "imported_from": "release layout"},
        pose_source="images",
    )


@dataclass(frozen=True)
class ImportedShot:
    name: str
    folder: Path
    pose_frames: int
    note: str
    """Why the shot differs from a metadata row ("" for a listed one)."""


def import_release_layout(data_dir: str | Path, out_dir: str | Path) -> list[ImportedShot]:
    """Write one shot folder per sample under ``out_dir`` (``out_dir/NAME``)."""
    samples = read_release_layout(data_dir)
    out_dir = Path(out_dir)
    imported = []
    for sample in samples:
        reference = read_image(sample.first_frame, "RGB", COPY_AGAIN)
        height, width = reference.shape[:2]
        mask = None if sample.subject is None else subject_mask(sample.subject, width, height)
        folder = write_shot(
            sample_shot(sample, width, height),
            out_dir / sample.name,
            sample.first_frame,
            reference_mask=mask,
            pose_images=sample.skeletons,
        )
        note = "" if sample.in_metadata else f"not in {METADATA}: every image a pose, no prompt"
        if sample.subject is None:
            note = "; ".join(
                filter(None, [note, f"no {SUBJECT_DIR}/{sample.name}_id.png: no mask"])
            )
        imported.append(ImportedShot(sample.name, folder, len(sample.pose_frames), note))
    return imported
