"""The shot folder contract: write, read back, validation errors (engine side, no bpy)."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from poseanything.engine.contract.shot import (
    SCHEMA_VERSION,
    CameraPath,
    Guidance,
    Shot,
    ShotError,
    SkeletonGraph,
    read_background,
    read_reference,
    read_reference_mask,
    read_shot,
    write_shot,
)


def make_shot(frames: int = 4, width: int = 64, height: int = 48, **changes) -> Shot:
    """A three-joint arm swinging in front of a fixed perspective camera."""
    t = np.linspace(0, 1, frames)[:, None]
    joints3d = np.stack(
        [np.zeros((frames, 3)), np.hstack([t, np.zeros_like(t), np.ones_like(t)]),
         np.hstack([t, t, np.ones_like(t)])], axis=1,
    )  # fmt: skip
    joints3d[..., 2] += 4.0
    K = np.tile(np.array([[50.0, 0, width / 2], [0, 50.0, height / 2], [0, 0, 1]]), (frames, 1, 1))
    w2c = np.tile(np.eye(4), (frames, 1, 1))
    projected = np.einsum("fij,fkj->fki", K, joints3d)
    shot = Shot(
        name="arm",
        fps=24.0,
        frame_start=10,
        frame_end=10 + frames - 1,
        skeleton=SkeletonGraph(
            joint_names=("root", "elbow", "hand"),
            bone_names=("upper", "lower"),
            edges=np.array([[0, 1], [1, 2]], np.int32),
            edge_part=np.array([0, 0], np.int8),
        ),
        camera_path=CameraPath(K=K, w2c=w2c, cam_type="perspective", width=width, height=height),
        joints3d=joints3d,
        joints2d=projected[..., :2] / projected[..., 2:],
        depth=joints3d[..., 2],
        visible=np.ones((frames, 3), bool),
        prompt="a robot arm",
        seed=7,
        guidance=Guidance(subject=1.2, camera=0.5),
        pose_frames=(0, frames - 1),
        armature="Armature",
        camera="Camera",
    )
    return dataclasses.replace(shot, **changes)


def reference(width=64, height=48):
    return np.full((height, width, 3), 90, np.uint8)


def test_round_trip(tmp_path):
    shot = make_shot()
    folder = write_shot(shot, tmp_path / "shot", reference())
    back = read_shot(folder)
    for field in ("name", "fps", "frame_start", "frame_end", "prompt", "seed", "guidance",
                  "pose_frames", "armature", "camera"):  # fmt: skip
        assert getattr(back, field) == getattr(shot, field), field
    for array in ("joints3d", "joints2d", "depth", "visible"):
        np.testing.assert_array_equal(getattr(back, array), getattr(shot, array))
    np.testing.assert_array_equal(back.camera_path.K, shot.camera_path.K)
    np.testing.assert_array_equal(back.skeleton.edges, shot.skeleton.edges)
    assert back.skeleton.bone_names == ("upper", "lower")
    assert (back.width, back.height, back.num_frames) == (64, 48, 4)
    assert read_reference(folder).shape == (48, 64, 3)
    poses = sorted(p.name for p in (folder / "poses").iterdir())
    assert poses == ["0001.png", "0002.png", "0003.png", "0004.png"]
    assert np.asarray(Image.open(folder / "poses" / "0002.png")).max() == 0  # sparse frame
    assert np.asarray(Image.open(folder / "poses" / "0004.png")).max() > 128
    assert json.loads((folder / "shot.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_rewrite_keeps_videos_and_replaces_contract_files(tmp_path):
    folder = write_shot(make_shot(), tmp_path / "shot", reference())
    (folder / "video.mp4").write_bytes(b"take one")
    write_shot(make_shot(frames=6, prompt="second"), folder, reference())
    assert (folder / "video.mp4").read_bytes() == b"take one"
    assert read_shot(folder).prompt == "second"
    assert len(list((folder / "poses").iterdir())) == 6


def subject_mask(width=64, height=48):
    mask = np.zeros((height, width), np.uint8)
    mask[10:40, 20:30] = 255
    mask[10:40, 30] = 128  # an anti-aliased edge
    return mask


def test_the_reference_mask_round_trips_and_a_rewrite_without_one_drops_the_old(tmp_path):
    folder = write_shot(make_shot(), tmp_path / "shot", reference(), reference_mask=subject_mask())
    mask = read_reference_mask(folder)
    assert mask.dtype == np.float32 and mask.shape == (48, 64)
    np.testing.assert_allclose(mask * 255, subject_mask(), atol=1e-3)
    # A new reference without a known mask: the old mask would describe another image.
    write_shot(make_shot(), folder, reference())
    assert read_reference_mask(folder) is None
    assert read_shot(folder).num_frames == 4


def test_a_mask_of_another_size_is_refused(tmp_path):
    with pytest.raises(ShotError, match=r"^reference_mask: uint8 \(24, 32\), expected uint8"):
        write_shot(make_shot(), tmp_path / "shot", reference(), reference_mask=subject_mask(32, 24))
    assert not (tmp_path / "shot").exists()


def test_schema_1_shots_still_read_and_have_no_mask(tmp_path):
    folder = write_shot(make_shot(), tmp_path / "shot", reference(), reference_mask=subject_mask())
    meta = json.loads((folder / "shot.json").read_text())
    (folder / "shot.json").write_text(json.dumps({**meta, "schema_version": 1}))
    (folder / "reference_mask.png").unlink()
    assert read_shot(folder).name == "arm"
    assert read_reference_mask(folder) is None


def plates(folder, count, width=64, height=48):
    """``count`` background plates, frame i all grey 10 * i, as PNG files in ``folder``."""
    folder.mkdir()
    paths = []
    for i in range(count):
        paths.append(folder / f"plate_{i + 100}.png")
        Image.fromarray(np.full((height, width, 3), 10 * i, np.uint8)).save(paths[-1])
    return paths


def test_background_plates_round_trip_one_per_frame_and_a_rewrite_without_drops_them(tmp_path):
    folder = write_shot(
        make_shot(), tmp_path / "shot", reference(), background=plates(tmp_path / "p", 4)
    )
    background = read_background(folder, read_shot(folder))
    assert sorted(background) == [0, 1, 2, 3]
    assert background[2].shape == (48, 64, 3) and (background[2] == 20).all()
    write_shot(make_shot(), folder, reference())
    assert read_background(folder, read_shot(folder)) is None
    assert not (folder / "background").exists()


def test_background_plates_of_another_count_or_size_are_refused(tmp_path):
    with pytest.raises(ShotError, match=r"^background: 3 plates for 4 frames; give one per"):
        write_shot(make_shot(), tmp_path / "a", reference(), background=plates(tmp_path / "p", 3))
    small = plates(tmp_path / "q", 4, 32, 24)
    with pytest.raises(
        ShotError, match=r"^background: plate_100.png is 32x24, not the shot's 64x48"
    ):
        write_shot(make_shot(), tmp_path / "b", reference(), background=small)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_missing_background_plate_says_to_re_export(tmp_path):
    folder = write_shot(
        make_shot(), tmp_path / "shot", reference(), background=plates(tmp_path / "p", 4)
    )
    (folder / "background" / "0003.png").unlink()
    with pytest.raises(ShotError, match=r"^background: 0003.png is missing; re-export the shot$"):
        read_background(folder, read_shot(folder))


def test_schema_2_shots_still_read_and_have_no_background(tmp_path):
    folder = write_shot(make_shot(), tmp_path / "shot", reference(), reference_mask=subject_mask())
    meta = json.loads((folder / "shot.json").read_text())
    (folder / "shot.json").write_text(json.dumps({**meta, "schema_version": 2}))
    shot = read_shot(folder)
    assert read_background(folder, shot) is None
    assert read_reference_mask(folder) is not None


def test_refuses_foreign_folder_and_non_png_reference(tmp_path):
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ShotError, match="not empty"):
        write_shot(make_shot(), foreign, reference())
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    jpeg = tmp_path / "ref.jpg"
    Image.fromarray(reference()).save(jpeg)
    with pytest.raises(ShotError, match="not a PNG"):
        write_shot(make_shot(), tmp_path / "shot", jpeg)
    assert not (tmp_path / "shot").exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"frame_end": 9}, "frame_end"),
        ({"joints2d": np.zeros((4, 2, 2))}, "joints2d"),
        ({"depth": np.full((4, 3), np.nan)}, "depth"),
        ({"pose_frames": (0, 9)}, "pose_frames"),
        ({"fps": 0.0}, "fps"),
    ],
)
def test_invalid_shots_name_the_field(tmp_path, changes, field):
    with pytest.raises(ShotError, match=f"^{field}"):
        write_shot(make_shot(**changes), tmp_path / "shot", reference())


def test_read_errors_name_the_file_or_field(tmp_path):
    folder = write_shot(make_shot(), tmp_path / "shot", reference())
    meta = json.loads((folder / "shot.json").read_text())
    (folder / "shot.json").write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(ShotError, match="^schema_version"):
        read_shot(folder)
    (folder / "shot.json").write_text(json.dumps(meta))
    with np.load(folder / "poses.npz") as npz:
        arrays = dict(npz)
    arrays["K"] = arrays["K"][:2]
    np.savez(folder / "poses.npz", **arrays)
    with pytest.raises(ShotError, match="^K: shape"):
        read_shot(folder)
    (folder / "reference.png").unlink()
    with pytest.raises(ShotError, match="^reference.png: missing"):
        read_shot(folder)
    with pytest.raises(ShotError, match="does not exist"):
        read_shot(tmp_path / "nowhere")
