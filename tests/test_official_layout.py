"""``poseanything import-official``: the release's data/test layout as shot folders."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from poseanything.engine import cli
from poseanything.engine.contract.official_layout import read_release_layout
from poseanything.engine.contract.shot import (
    ShotError,
    read_pose_images,
    read_reference_mask,
    read_shot,
)

# As in the release's data/test: two metadata rows (145 and 150 skeleton frames), and two
# skeleton folders without a row (chat, talk: 129 frames) and without an _id image.
SAMPLES = {
    "EZwrDYL6YIw_69": (145, "A majestic deer with impressive antlers walks gracefully."),
    "Og1-HBAendg_30": (150, "A hummingbird is captured in mid-flight, &amp; hovers."),
    "chat": (129, None),
    "talk": (129, None),
}


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def release_data(tmp_path):
    data = tmp_path / "test"
    rows = []
    for name, (frames, prompt) in SAMPLES.items():
        write_png(data / "first_frame" / f"{name}.png", np.full((18, 32, 3), 90, np.uint8))
        for frame in range(frames):
            image = np.zeros((9, 16, 3), np.uint8)
            image[4, frame % 16] = 255
            write_png(data / "skeleton_image" / name / f"{frame:03d}.png", image)
        if prompt is not None:
            subject = np.full((9, 16, 3), 255, np.uint8)
            subject[2:7, 4:12] = 40  # the subject on white
            write_png(data / "video" / f"{name}_id.png", subject)
            index = list(range(frames))
            rows.append(
                {
                    "file_name": name,
                    "condition_images": str([f"{i:03d}.png" for i in index]),
                    "text": prompt,
                    "condition_index": str(index),
                }
            )
    with open(data / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle, ["file_name", "condition_images", "text", "condition_index"]
        )
        writer.writeheader()
        writer.writerows(rows)
    return data


def test_the_release_test_data_becomes_four_shots(release_data, tmp_path, capsys):
    out = tmp_path / "shots"
    assert cli.main(["import-official", str(release_data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 shots" in printed and "not in metadata.csv" in printed
    for name, (_frames, prompt) in SAMPLES.items():
        shot = read_shot(out / name)
        assert shot.pose_source == "images" and shot.num_frames == 81 and shot.fps == 24.0
        assert shot.pose_frames == tuple(range(81))  # the release keeps frames below 81
        assert shot.seed == 123 and shot.engine["steps"] == 50
        assert (shot.guidance.subject, shot.guidance.camera) == (1.0, 1.0)  # cfg 1.0
        assert shot.prompt == (prompt or "")  # cleaned when encoded, as the release does
        assert (shot.width, shot.height) == (32, 18) and shot.skeleton.num_joints == 0
        images = read_pose_images(out / name, shot)
        given = np.asarray(Image.open(release_data / "skeleton_image" / name / "080.png"))
        assert len(images) == 81 and np.array_equal(images[80], given)  # as given, own size
        (out / name / "poses" / "0081.png").write_bytes(b"damaged later")  # each read when asked
        with pytest.raises(ShotError, match="0081.png: unreadable.*import the shot again"):
            images[80]
        mask = read_reference_mask(out / name)
        if prompt is None:
            assert mask is None
        else:
            assert mask.shape == (18, 32) and 0 < mask.mean() < 1
            assert mask[9, 16] == 1.0 and mask[0, 0] == 0.0


def test_sparse_condition_frames_keep_their_indices(release_data):
    metadata = release_data / "metadata.csv"
    rows = list(csv.DictReader(open(metadata, encoding="utf-8")))
    rows[0]["condition_index"] = str([0, 10, 40, 80, 90, 120])
    with open(metadata, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sample = read_release_layout(release_data)[0]
    assert sample.pose_frames == (0, 10, 40, 80)


def test_a_missing_first_frame_is_named_before_anything_is_written(release_data, tmp_path, capsys):
    (release_data / "first_frame" / "talk.png").unlink()
    out = tmp_path / "shots"
    assert cli.main(["import-official", str(release_data), "--out", str(out)]) == 2
    assert "talk lacks first_frame/talk.png" in capsys.readouterr().err
    assert not out.exists()


def test_a_folder_of_another_layout_is_refused(tmp_path, capsys):
    assert cli.main(["import-official", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "release's layout" in capsys.readouterr().err


def test_the_default_model_refuses_a_shot_without_joints(release_data, tmp_path, capsys):
    out = tmp_path / "shots"
    assert cli.main(["import-official", str(release_data), "--out", str(out)]) == 0
    shot = out / "Og1-HBAendg_30"
    args = ["render", str(shot), "--out", str(tmp_path / "v.mp4"), "--progress", "json"]
    assert cli.main(args) == 2
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert "skeleton images but no joints" in error["message"]
    assert not (tmp_path / "v.mp4").exists()
