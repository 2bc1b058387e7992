"""``poseanything render`` end to end on shot folders written with engine.shot.write_shot."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_shots import write_synthetic_shot
from tiny_models import one_torch_thread, tiny_model_folder  # noqa: F401

from poseanything.engine import cli
from poseanything.engine.contract.video import read_video


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("model"))


def render(shot_dir, out, model_dir, *extra):
    args = ["render", str(shot_dir), "--out", str(out), "--model", str(model_dir)]
    return cli.main([*args, "--steps", "2", *extra])


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_render_writes_video_frames_and_engine_json(tmp_path, model_dir, capsys):
    shot_dir = write_synthetic_shot(tmp_path / "shot", num_frames=10, width=48, height=32)
    out = tmp_path / "takes" / "walk.mp4"
    code = render(
        shot_dir,
        out,
        model_dir,
        "--progress",
        "json",
        "--frames-dir",
        str(tmp_path / "png"),
        "--seed",
        "5",
        "--camera-guidance",
        "0.5",
        "--guidance",
        "1.3",
    )
    events = json_lines(capsys.readouterr().out)
    assert code == 0
    frames, fps = read_video(out)
    assert frames.shape == (10, 32, 48, 3) and fps == 12.0
    assert sorted(os.listdir(tmp_path / "png")) == [f"{i:04d}.png" for i in range(1, 11)]
    assert sorted(os.listdir(out.parent)) == ["engine.json", "walk.mp4"]  # no preview left over

    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "progress" in kinds
    progress = [event for event in events if event["event"] == "progress"]
    assert [p["step"] for p in progress] == list(range(1, progress[-1]["total"] + 1))
    assert {"step", "total", "eta_s", "preview"} <= set(progress[0])
    assert progress[-1]["preview"].endswith(".walk.preview.png")

    report = json.loads((out.parent / "engine.json").read_text())
    assert report["video"] == "walk.mp4" and report["num_frames"] == 10 and report["fps"] == 12.0
    assert report["model"] == "tiny-test" and report["seed"] == 5
    settings = report["settings"]
    assert settings["steps"] == 2 and settings["subject_guidance"] == 1.3
    assert settings["camera_guidance"] == 0.5 and settings["ptcm"] is True
    assert report["ptcm"]["part_correspondence"]
    assert report["timings_s"]["total"] >= report["timings_s"]["generate"] > 0


def test_existing_video_is_kept_unless_overwrite(tmp_path, model_dir, capsys):
    shot_dir = write_synthetic_shot(tmp_path / "shot", num_frames=3, width=32, height=32)
    out = tmp_path / "take.mp4"
    out.write_bytes(b"an earlier take")
    assert render(shot_dir, out, model_dir, "--progress", "json") == 2
    error = json_lines(capsys.readouterr().out)[-1]
    assert error["event"] == "error" and "--overwrite" in error["message"]
    assert out.read_bytes() == b"an earlier take"
    assert render(shot_dir, out, model_dir, "--overwrite", "--no-ptcm") == 0
    assert read_video(out)[0].shape[0] == 3
    assert json.loads((tmp_path / "engine.json").read_text())["ptcm"]["enabled"] is False


def break_schema(folder):
    meta = json.loads((folder / "shot.json").read_text())
    meta["schema_version"] = 99
    (folder / "shot.json").write_text(json.dumps(meta))


def rewrite_npz(folder, **changes):
    with np.load(folder / "poses.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays.update(changes)
    np.savez(folder / "poses.npz", **arrays)


def with_nan(folder):
    with np.load(folder / "poses.npz") as npz:
        joints2d = npz["joints2d"].copy()
    joints2d[1, 2, 0] = np.nan
    rewrite_npz(folder, joints2d=joints2d)


def zero_frames(folder):
    meta = json.loads((folder / "shot.json").read_text())
    meta["frame_end"] = meta["frame_start"] - 1
    (folder / "shot.json").write_text(json.dumps(meta))


def tiny_subject(folder):
    with np.load(folder / "poses.npz") as npz:
        joints2d = npz["joints2d"]
    rewrite_npz(folder, joints2d=joints2d[:, :1] + (joints2d - joints2d[:, :1]) * 0.02)


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda folder: (folder / "poses.npz").unlink(), "poses.npz"),
        (lambda folder: (folder / "reference.png").unlink(), "reference.png"),
        (break_schema, "schema_version"),
        (lambda folder: rewrite_npz(folder, depth=np.ones((2, 3))), "depth"),
        (with_nan, "joints2d"),
        (zero_frames, "frame_end"),
        (tiny_subject, "too small"),
    ],
)
def test_broken_shot_folders_exit_2_naming_the_field(tmp_path, model_dir, capsys, damage, field):
    shot_dir = write_synthetic_shot(tmp_path / "shot", num_frames=4, width=640, height=640)
    damage(shot_dir)
    out = tmp_path / "out.mp4"
    assert render(shot_dir, out, model_dir, "--progress", "json") == 2
    error = json_lines(capsys.readouterr().out)[-1]
    assert error["event"] == "error" and error["kind"] == "bad_input"
    assert field in error["message"]
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["shot"]


def test_missing_model_exits_2_saying_how_to_get_one(tmp_path, capsys):
    shot_dir = write_synthetic_shot(tmp_path / "shot", num_frames=2, width=32, height=32)
    assert render(shot_dir, tmp_path / "out.mp4", tmp_path / "no-model") == 2
    assert "poseanything train" in capsys.readouterr().err


def test_console_script_streams_json_and_cancels_without_a_partial_video(tmp_path, model_dir):
    shot_dir = write_synthetic_shot(tmp_path / "shot", num_frames=60, width=32, height=32)
    out = tmp_path / "takes" / "long.mp4"
    out.parent.mkdir()
    command = [
        sys.executable,
        "-m",
        "poseanything.engine.cli",
        "render",
        str(shot_dir),
        "--out",
        str(out),
        "--model",
        str(model_dir),
        "--steps",
        "50",
        "--progress",
        "json",
        "--threads",
        "1",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    first = json.loads(process.stdout.readline())
    assert first["event"] == "start" and first["frames"] == 60
    progress = json.loads(process.stdout.readline())
    assert progress["event"] == "progress" and progress["step"] == 1
    process.send_signal(signal.SIGTERM)
    rest = [json.loads(line) for line in process.stdout]
    assert process.wait(timeout=60) == 130
    assert rest[-1]["event"] == "cancelled"
    assert os.listdir(out.parent) == []  # no video, no temporary file, no preview


def test_video_writer_pads_odd_sizes_and_never_replaces_silently(tmp_path):
    from poseanything.engine.contract.video import OutputExistsError, write_frames, write_video

    frames = np.random.default_rng(0).integers(0, 255, (4, 33, 47, 3), dtype=np.uint8)
    path = write_video(tmp_path / "clip.mp4", frames, fps=24)
    decoded, fps = read_video(path)
    assert decoded.shape == (4, 34, 48, 3) and fps == 24.0
    with pytest.raises(OutputExistsError):
        write_video(path, frames[:2], fps=24)
    assert read_video(path)[0].shape[0] == 4
    write_video(path, frames[:2], fps=24, overwrite=True)
    assert read_video(path)[0].shape[0] == 2
    write_frames(tmp_path / "frames", frames)
    with pytest.raises(OutputExistsError):
        write_frames(tmp_path / "frames", frames[:1])
    write_frames(tmp_path / "frames", frames[:1], overwrite=True)
    assert os.listdir(tmp_path / "frames") == ["0001.png"]
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "frames"]  # no temporary names left


def test_streamed_writers_take_frames_as_they_come_and_leave_nothing_on_an_error(tmp_path):
    from poseanything.engine.contract.video import FramesWriter, VideoWriter, write_video

    frames = np.random.default_rng(1).integers(0, 255, (5, 32, 48, 3), dtype=np.uint8)
    with VideoWriter(tmp_path / "streamed.mp4", fps=24) as video:
        for chunk in (frames[:2], frames[2:3], frames[3:]):
            video.append(chunk)
            assert not video.path.exists()  # under a temporary name until the block ends
    with FramesWriter(tmp_path / "frames") as pngs:
        pngs.append(frames[:3])
        pngs.append(frames[3:])
    write_video(tmp_path / "whole.mp4", frames, fps=24)
    streamed, whole = (
        read_video(tmp_path / "streamed.mp4")[0],
        read_video(tmp_path / "whole.mp4")[0],
    )
    np.testing.assert_array_equal(streamed, whole)
    assert sorted(os.listdir(tmp_path / "frames")) == [f"{i:04d}.png" for i in range(1, 6)]
    assert video.count == pngs.count == 5
    with pytest.raises(RuntimeError, match="window failed"):
        with VideoWriter(tmp_path / "broken.mp4", fps=24) as video:
            video.append(frames[:2])
            raise RuntimeError("window failed")
    with pytest.raises(ValueError, match="no frames"):
        with FramesWriter(tmp_path / "empty"):
            pass
    assert sorted(os.listdir(tmp_path)) == ["frames", "streamed.mp4", "whole.mp4"]


def test_a_streamed_writer_removes_what_a_killed_writer_of_its_output_left(tmp_path):
    """A writer killed outright leaves its temporary file; the next writer of that output
    removes it, and never a live writer's or another output's."""
    from poseanything.engine.contract.video import VideoWriter

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = {
        "killed": tmp_path / f".take.mp4.abc123.{dead.pid}.partial.mp4",
        "killed_frames": tmp_path / f".take.mp4.xyz789.{dead.pid}.partial",
        "live": tmp_path / f".take.mp4.def456.{os.getppid()}.partial.mp4",
        "other": tmp_path / f".other.mp4.ghi789.{dead.pid}.partial.mp4",
    }
    for name, path in left.items():
        path.mkdir() if name == "killed_frames" else path.write_bytes(b"half a video")
    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    with VideoWriter(tmp_path / "take.mp4", fps=24) as video:
        video.append(frames)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["take.mp4", left["live"].name, left["other"].name]
    )


def test_bundled_model_renders_a_shot_the_add_on_exported(tmp_path, capsys):
    """The committed held-out clip was exported by the add-on (a Rigify metarig through
    export_shot); the bundled model renders it with the shot's frame count, size and fps."""
    shot_dir = Path(__file__).parent / "data" / "eval_clip"
    before = sorted(p.relative_to(shot_dir) for p in shot_dir.rglob("*"))
    out = tmp_path / "take.mp4"
    assert cli.main(["render", str(shot_dir), "--out", str(out), "--progress", "none"]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (16, 128, 128, 3) and fps == 24.0
    report = json.loads((tmp_path / "engine.json").read_text())
    assert report["model"] and report["num_frames"] == 16
    assert sorted(p.relative_to(shot_dir) for p in shot_dir.rglob("*")) == before


def run_engine(*argv: str) -> subprocess.CompletedProcess:
    """``python -m poseanything.engine.cli`` as the add-on starts it."""
    command = [sys.executable, "-m", "poseanything.engine.cli", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_bad_input_exits_2_in_one_line_and_our_own_value_error_exits_1_with_a_traceback(
    tmp_path, model_dir
):
    """A ``BadInput`` is the user's to fix: exit 2, its message, no traceback. A ``ValueError``
    from our own code (here: a model folder whose pipeline.json no tool of ours writes) is a bug:
    exit 1, a crash event and the traceback, never passed off as the user's bad input."""
    shot_dir = write_synthetic_shot(tmp_path / "shot", num_frames=3, width=32, height=32)
    common = ["--progress", "json", "--threads", "1"]

    bad = run_engine("render", str(shot_dir), "--out", str(tmp_path / "a.mp4"), "--steps", "-1",
                     "--model", str(model_dir), *common)  # fmt: skip
    assert bad.returncode == 2
    (event,) = json_lines(bad.stdout)
    assert event == {"event": "error", "kind": "bad_input", "message": event["message"]}
    assert event["message"].startswith("steps is -1; use at least 1")
    assert "Traceback" not in bad.stderr

    broken = shutil.copytree(model_dir, tmp_path / "broken-model")
    meta = json.loads((broken / "pipeline.json").read_text())
    meta["config"]["flow_base"] = "warp"  # without reference_source: PipelineConfig refuses
    (broken / "pipeline.json").write_text(json.dumps(meta))
    bug = run_engine("render", str(shot_dir), "--out", str(tmp_path / "b.mp4"),
                     "--model", str(broken), *common)  # fmt: skip
    assert bug.returncode == 1
    assert json_lines(bug.stdout)[-1]["kind"] == "crash"
    assert "Traceback" in bug.stderr and "ValueError: flow_base 'warp'" in bug.stderr
    assert sorted(os.listdir(tmp_path)) == ["broken-model", "shot"]
