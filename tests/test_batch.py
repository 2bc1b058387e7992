"""``poseanything batch``: local and Ray batches of real shot folders with a tiny random model.

The Ray tests start their own 2-CPU cluster on loopback (session files in a temporary folder) and
shut it down at the end of the module. A worker is killed with SIGKILL in the middle of a shot,
exactly as a crashed or preempted node would lose it.
"""

import dataclasses
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
from synthetic_shots import write_synthetic_shot
from test_pipeline import tiny_pipeline

from poseanything.engine.batch.plan import (
    DONE_MARKER,
    VIDEO_NAME,
    BatchError,
    BatchSettings,
    read_contract,
    shot_key,
)
from poseanything.engine.batch.runners import run_batch, start_local_ray
from poseanything.engine.cli import main
from poseanything.engine.cli.batch import SUMMARY_NAME
from poseanything.engine.contract.video import read_video
from poseanything.engine.errors import EXIT_CANCELLED, EXIT_FAILED
from poseanything.engine.inference.cancel import CancelToken
from poseanything.engine.render import ModelChoice, RenderSettings

SHOT_FRAMES = 6
LONG_SHOT_FRAMES = 40
"""Five model windows: long enough that a cancel finds a worker still sampling."""
VICTIM_FRAMES = 160
"""Twenty windows (about 20 s a try): the worker is killed at the first progress event the
batch hears of, which on a loaded machine can come seconds late; the shot must still be
sampling then, or nothing is left to retry."""
RENDERED = {VIDEO_NAME, "engine.json", DONE_MARKER}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_pipeline().save_pretrained(tmp_path_factory.mktemp("model") / "tiny")


def make_shots(root: Path, frames: list[int]) -> list[Path]:
    return [
        write_synthetic_shot(root / f"shot{i}", num_frames=count, width=48, height=32, seed=i)
        for i, count in enumerate(frames)
    ]


def make_broken_shot(root: Path) -> Path:
    folder = write_synthetic_shot(root / "broken", num_frames=SHOT_FRAMES, width=48, height=32)
    (folder / "poses.npz").unlink()
    return folder


def tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its modification time (ns)."""
    return {
        str(path.relative_to(root)): path.stat().st_mtime_ns
        for path in root.rglob("*")
        if path.is_file()
    }


def new_files(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {name for name, mtime in after.items() if before.get(name) != mtime}


def assert_complete_video(shot: Path, video: Path) -> None:
    frames, fps = read_video(video)
    shot_json = json.loads((shot / "shot.json").read_text())
    expected = shot_json["frame_end"] - shot_json["frame_start"] + 1
    assert frames.shape[:3] == (expected, 32, 48)
    assert fps == pytest.approx(12.0)


def statuses(summary) -> dict[str, str]:
    return {Path(result.shot).name: result.status for result in summary.results}


# ---------------------------------------------------------------------------------------------
# In this process (no Ray)


def test_local_batch_renders_each_shot_once_and_reports_a_broken_one(
    tmp_path, model_dir, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    shots = make_shots(tmp_path, [SHOT_FRAMES, SHOT_FRAMES])
    broken = make_broken_shot(tmp_path)
    settings = BatchSettings(model=ModelChoice(folder=model_dir))
    before = tree(tmp_path)
    events = []
    summary = run_batch([*shots, broken], settings, on_event=events.append)

    assert statuses(summary) == {"shot0": "done", "shot1": "done", "broken": "failed"}
    assert "poses.npz" in summary.results[2].error and summary.results[2].attempts == 1
    assert summary.exit_code == EXIT_FAILED
    for shot in shots:
        assert_complete_video(shot, shot / VIDEO_NAME)
    expected = {f"{shot.name}/{name}" for shot in shots for name in RENDERED}
    assert new_files(before, tree(tmp_path)) == expected
    progress = [e for e in events if e["event"] == "progress" and e["shot"] == str(shots[0])]
    assert progress and progress[-1]["step"] == progress[-1]["total"]

    rendered = tree(tmp_path)
    again = run_batch([*shots, broken], settings)
    assert statuses(again) == {"shot0": "skipped", "shot1": "skipped", "broken": "failed"}
    assert tree(tmp_path) == rendered


def test_changed_shot_or_settings_render_again_but_never_replace_a_video_silently(
    tmp_path, model_dir
):
    (shot,) = make_shots(tmp_path, [SHOT_FRAMES])
    run_batch([shot], BatchSettings(model=ModelChoice(folder=model_dir)))
    video = shot / VIDEO_NAME
    first = video.stat().st_mtime_ns
    reseeded = BatchSettings(model=ModelChoice(folder=model_dir), render=RenderSettings(seed=7))

    refused = run_batch([shot], reseeded)
    assert statuses(refused) == {"shot0": "failed"}
    assert "--overwrite" in refused.results[0].error
    assert video.stat().st_mtime_ns == first

    replaced = run_batch([shot], dataclasses.replace(reseeded, overwrite=True))
    assert statuses(replaced) == {"shot0": "done"}
    assert video.stat().st_mtime_ns != first
    assert statuses(run_batch([shot], reseeded)) == {"shot0": "skipped"}


def test_out_dir_leaves_shot_folders_untouched(tmp_path, model_dir):
    shots = make_shots(tmp_path / "shots", [SHOT_FRAMES, SHOT_FRAMES])
    before = tree(tmp_path / "shots")
    out = tmp_path / "renders"
    summary = run_batch(shots, BatchSettings(model=ModelChoice(folder=model_dir), out_dir=out))
    assert statuses(summary) == {"shot0": "done", "shot1": "done"}
    assert tree(tmp_path / "shots") == before
    assert set(tree(out)) == {f"{shot.name}/{name}" for shot in shots for name in RENDERED}
    assert summary.results[0].output == str(out / "shot0" / VIDEO_NAME)


def test_corrupt_weights_are_refused_before_any_shot_and_never_retried(tmp_path, model_dir):
    """A damaged weights file is a bad file (issue 14): a retry cannot fix it, so the batch
    refuses it while planning, naming the file, and renders nothing."""
    from poseanything.engine.checkpoints.weights import CheckpointError

    corrupt = tmp_path / "model"
    shutil.copytree(model_dir, corrupt)
    (weights,) = (corrupt / "transformer").glob("*.safetensors")
    weights.write_bytes(b"not safetensors")
    (shot,) = make_shots(tmp_path / "shots", [SHOT_FRAMES])
    with pytest.raises(CheckpointError, match="transformer.*is damaged"):
        run_batch([shot], BatchSettings(model=ModelChoice(folder=corrupt), retries=1))
    assert not (shot / VIDEO_NAME).exists()


def test_bad_input_is_never_retried_but_an_error_a_retry_can_fix_is(tmp_path, model_dir):
    """A broken shot fails at its first attempt. An I/O error is not the user's input: here the
    model's weights file is a folder during the first attempt (as while an install is being
    replaced), so the attempt fails with an OSError, and the retry renders the shot."""
    model = shutil.copytree(model_dir, tmp_path / "model")
    (weights,) = (model / "transformer").glob("*.safetensors")
    aside = weights.rename(tmp_path / "weights.safetensors")
    weights.mkdir()
    (shot,) = make_shots(tmp_path / "shots", [SHOT_FRAMES])
    broken = make_broken_shot(tmp_path / "shots")
    errors = []

    def put_the_weights_back_before_the_second_attempt(event):
        if event["event"] == "start" and event["shot"] == str(shot) and weights.is_dir():
            if errors:
                weights.rmdir()
                aside.rename(weights)
            errors.append(event)

    settings = BatchSettings(model=ModelChoice(folder=model), retries=1)
    summary = run_batch([shot, broken], settings, put_the_weights_back_before_the_second_attempt)
    by_name = {Path(result.shot).name: result for result in summary.results}
    assert (by_name["shot0"].status, by_name["shot0"].attempts) == ("done", 2)
    assert (by_name["broken"].status, by_name["broken"].attempts) == ("failed", 1)
    assert_complete_video(shot, shot / VIDEO_NAME)


def test_cancel_stops_the_shot_in_progress_and_starts_no_more(tmp_path, model_dir):
    shots = make_shots(tmp_path, [SHOT_FRAMES, SHOT_FRAMES])
    before = tree(tmp_path)
    cancel = CancelToken()

    def cancel_at_first_step(event):
        if event["event"] == "progress":
            cancel.cancel()

    summary = run_batch(
        shots, BatchSettings(model=ModelChoice(folder=model_dir)), cancel_at_first_step, cancel
    )
    assert statuses(summary) == {"shot0": "cancelled", "shot1": "cancelled"}
    assert summary.exit_code == EXIT_CANCELLED
    assert tree(tmp_path) == before


def test_the_resume_key_follows_what_changes_the_pixels_only(tmp_path, model_dir):
    (shot,) = make_shots(tmp_path, [SHOT_FRAMES])
    contract = read_contract(shot)
    base = BatchSettings(model=ModelChoice(folder=model_dir))
    key = shot_key(contract, base, model_dir)
    same = [
        dataclasses.replace(base, overwrite=True, retries=0, ray="auto", out_dir=tmp_path),
        dataclasses.replace(base, model=ModelChoice(model_dir, device="cpu", threads=1)),
        dataclasses.replace(base, model=ModelChoice(model_dir, online=True)),
    ]
    assert {shot_key(contract, settings, model_dir) for settings in same} == {key}
    different = [
        dataclasses.replace(base, render=RenderSettings(seed=3)),
        dataclasses.replace(base, render=RenderSettings(overlap=2)),
        dataclasses.replace(base, model=ModelChoice(model_dir, pixel_area=4096)),
        dataclasses.replace(base, model=ModelChoice(model_dir, backend="onnx")),
    ]
    keys = {shot_key(contract, settings, model_dir) for settings in different}
    assert len(keys) == len(different) and key not in keys
    keys = {key}
    # Every file the render reads: a re-exported skeleton image, mask or background plate.
    for name in ("poses/0001.png", "reference_mask.png", "background/0001.png"):
        (shot / name).parent.mkdir(exist_ok=True)
        (shot / name).write_bytes(b"re-exported")
        keys.add(shot_key(read_contract(shot), base, model_dir))
    assert len(keys) == 4
    (shot / "take.mp4").write_bytes(b"a video kept beside the shot")
    assert shot_key(read_contract(shot), base, model_dir) in keys


def test_clashing_outputs_and_missing_ray_are_clear_errors(tmp_path, model_dir, monkeypatch):
    shots = [tmp_path / "a" / "shot", tmp_path / "b" / "shot"]
    with pytest.raises(BatchError, match="same video"):
        run_batch(
            shots, BatchSettings(model=ModelChoice(folder=model_dir), out_dir=tmp_path / "out")
        )
    (shot,) = make_shots(tmp_path, [SHOT_FRAMES])
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the ray extra were not installed
    with pytest.raises(BatchError, match=r"poseanything\[ray\]"):
        run_batch([shot], BatchSettings(model=ModelChoice(folder=model_dir), ray="auto"))


def test_command_line_prints_the_table_and_writes_the_summary_json(
    tmp_path, model_dir, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    shots = make_shots(tmp_path, [SHOT_FRAMES])
    broken = make_broken_shot(tmp_path)
    argv = ["batch", *map(str, shots), str(broken), "--model", str(model_dir), "--progress", "none"]
    assert main(argv) == EXIT_FAILED
    printed = capsys.readouterr().out
    assert "shot0" in printed and "done" in printed and "poses.npz" in printed
    summary = json.loads((tmp_path / SUMMARY_NAME).read_text())
    assert summary["counts"] == {"done": 1, "skipped": 0, "failed": 1, "cancelled": 0}
    assert [shot["status"] for shot in summary["shots"]] == ["done", "failed"]
    assert summary["shots"][0]["output"] == str(shots[0] / VIDEO_NAME)

    json_summary = tmp_path / "again.json"
    argv = [*argv[:-1], "json", "--summary", str(json_summary)]
    assert main(argv) == EXIT_FAILED
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines if "shot" in line] == ["skipped", "start", "failed"]
    assert lines[-1]["event"] == "summary" and lines[-1]["path"] == str(json_summary)
    assert json.loads(json_summary.read_text())["counts"]["skipped"] == 1


# ---------------------------------------------------------------------------------------------
# On a local Ray cluster


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A 2-CPU cluster on loopback; its workers' temporary folder (TMPDIR) is returned, to check
    that the workers leave nothing there."""
    ray = pytest.importorskip("ray", reason="the optional ray extra is not installed")
    session_dir = tmp_path_factory.mktemp("ray")
    worker_tmp = tmp_path_factory.mktemp("worker-tmp")
    start_local_ray(
        ray,
        num_cpus=2,
        _temp_dir=str(session_dir),
        log_to_driver=False,
        runtime_env={"env_vars": {"TMPDIR": str(worker_tmp)}},
    )
    yield worker_tmp
    ray.shutdown()


def test_ray_batch_survives_a_killed_worker_and_reports_a_broken_shot(
    tmp_path, model_dir, ray_cluster, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    shots = make_shots(tmp_path, [VICTIM_FRAMES, SHOT_FRAMES, SHOT_FRAMES, SHOT_FRAMES])
    broken = make_broken_shot(tmp_path)
    victim = str(shots[0])
    pids: dict[str, int] = {}
    killed: list[int] = []

    def kill_the_first_attempt_mid_shot(event):
        if event["event"] == "start":
            pids[event["shot"]] = event["pid"]
        if event["event"] == "progress" and event["shot"] == victim and not killed:
            killed.append(pids[victim])
            os.kill(pids[victim], signal.SIGKILL)

    settings = BatchSettings(model=ModelChoice(folder=model_dir), ray="auto", retries=2)
    before = tree(tmp_path)
    summary = run_batch([*shots, broken], settings, on_event=kill_the_first_attempt_mid_shot)

    assert killed
    assert statuses(summary) == {
        "shot0": "done",
        "shot1": "done",
        "shot2": "done",
        "shot3": "done",
        "broken": "failed",
    }
    by_name = {Path(result.shot).name: result for result in summary.results}
    assert by_name["shot0"].attempts == 2 and pids[victim] != killed[0]
    assert by_name["broken"].attempts == 1 and "poses.npz" in by_name["broken"].error
    for shot in shots:
        assert_complete_video(shot, shot / VIDEO_NAME)
    expected = {f"{shot.name}/{name}" for shot in shots for name in RENDERED}
    assert new_files(before, tree(tmp_path)) == expected

    rendered = tree(tmp_path)
    again = run_batch([*shots, broken], settings)
    assert [statuses(again)[shot.name] for shot in shots] == ["skipped"] * 4
    assert tree(tmp_path) == rendered
    assert not any(ray_cluster.iterdir())


def test_ray_without_shared_storage_sends_shots_and_videos_as_bytes(
    tmp_path, model_dir, ray_cluster
):
    shots = make_shots(tmp_path / "shots", [SHOT_FRAMES, SHOT_FRAMES])
    broken = make_broken_shot(tmp_path / "shots")
    before = tree(tmp_path / "shots")
    out = tmp_path / "renders"
    settings = BatchSettings(
        model=ModelChoice(folder=model_dir), ray="auto", out_dir=out, shared_fs=False
    )
    summary = run_batch([*shots, broken], settings)

    assert statuses(summary) == {"shot0": "done", "shot1": "done", "broken": "failed"}
    assert f"poses.npz: missing from {broken}" in summary.results[2].error
    assert tree(tmp_path / "shots") == before
    assert set(tree(out)) == {f"{shot.name}/{name}" for shot in shots for name in RENDERED}
    for shot in shots:
        assert_complete_video(shot, out / shot.name / VIDEO_NAME)
        engine = json.loads((out / shot.name / "engine.json").read_text())
        assert engine["shot"] == str(shot)
    assert not any(ray_cluster.iterdir())
    shared = dataclasses.replace(settings, shared_fs=True)
    assert [r.status for r in run_batch(shots, shared).results] == ["skipped", "skipped"]


def test_ray_cancel_keeps_finished_videos_and_leaves_no_partial_files(
    tmp_path, model_dir, ray_cluster
):
    shots = make_shots(tmp_path, [SHOT_FRAMES] + [LONG_SHOT_FRAMES] * 3)
    before = tree(tmp_path)
    cancel = CancelToken()

    def cancel_after_the_first_video(event):
        if event["event"] == "done":
            cancel.cancel()

    settings = BatchSettings(model=ModelChoice(folder=model_dir), ray="auto")
    summary = run_batch(shots, settings, cancel_after_the_first_video, cancel)
    assert not any(ray_cluster.iterdir())
    assert summary.cancelled and summary.exit_code == EXIT_CANCELLED
    result = statuses(summary)
    assert "cancelled" in result.values() and "done" in result.values()
    written = new_files(before, tree(tmp_path))
    for shot in shots:
        outputs = {name for name in written if name.startswith(f"{shot.name}/")}
        if result[shot.name] == "done":
            assert outputs == {f"{shot.name}/{name}" for name in RENDERED}
            assert_complete_video(shot, shot / VIDEO_NAME)
        else:
            assert result[shot.name] == "cancelled" and not outputs
