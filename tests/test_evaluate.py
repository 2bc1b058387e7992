"""engine.metrics on known inputs, and engine.evaluate end to end on a small held-out clip."""

import math
from pathlib import Path

import numpy as np
import pytest
from tiny_models import one_torch_thread, tiny_pipeline  # noqa: F401

from poseanything.engine.cli import build_parser
from poseanything.engine.training import metrics
from poseanything.engine.training.evaluate import (
    FULL,
    NETWORK,
    NO_POSE,
    REPEAT,
    WARP,
    WORKING,
    evaluate,
    load_clip,
    summary_line,
    table_rows,
)

EVAL_CLIP = Path(__file__).parent / "data" / "eval_clip"


def random_video(seed: int, frames: int = 3, size: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)


def test_identical_videos_are_perfect():
    video = random_video(0)
    assert metrics.psnr(video, video) == math.inf
    assert metrics.ssim(video, video) == pytest.approx(1.0)
    assert metrics.l1(video, video) == 0.0
    assert metrics.masked_psnr(video, video, np.ones(video.shape[:3], bool)) == math.inf


def test_psnr_and_l1_of_a_known_error():
    target = np.full((2, 16, 16, 3), 100, dtype=np.uint8)
    video = target + np.uint8(10)  # MSE 100 everywhere
    assert metrics.psnr(video, target) == pytest.approx(10 * math.log10(255**2 / 100))
    assert metrics.l1(video, target) == pytest.approx(10 / 255)


def test_subject_psnr_counts_only_the_mask():
    target = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    video = target.copy()
    video[:, :8] = 50  # error only in the top half
    top = np.zeros((2, 16, 16), dtype=bool)
    top[:, :8] = True
    assert metrics.masked_psnr(video, target, ~top) == math.inf
    assert metrics.masked_psnr(video, target, top) == pytest.approx(10 * math.log10(255**2 / 2500))
    assert metrics.psnr(video, target) > metrics.masked_psnr(video, target, top)
    with pytest.raises(ValueError, match="empty"):
        metrics.masked_psnr(video, target, np.zeros_like(top))


def test_ssim_falls_with_noise_and_is_symmetric():
    clean = np.repeat(np.linspace(0, 255, 32)[None, :, None], 32, 0)
    clean = np.repeat(np.repeat(clean[None], 2, 0), 3, -1).astype(np.uint8)
    rng = np.random.default_rng(1)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    value = metrics.ssim(noisy, clean)
    assert 0.0 < value < 0.9
    assert metrics.ssim(clean, noisy) == pytest.approx(value)


def test_sharpness_sees_the_blur_psnr_forgives():
    rng = np.random.default_rng(2)
    target = rng.integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    subject = np.zeros((2, 64, 64), dtype=bool)
    subject[:, 16:48, 16:48] = True
    import cv2

    small = np.stack([cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA) for f in target])
    blurred = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_CUBIC) for f in small])
    assert metrics.sharpness_ratio(target, target, subject) == pytest.approx(1.0)
    assert metrics.sharpness_ratio(blurred, target, subject) < 0.2


def test_flicker_is_the_subjects_change_beyond_the_truths():
    still = np.full((3, 8, 8, 3), 100, dtype=np.uint8)
    moving = still.copy()
    moving[1] += 10  # the truth changes by 10 and back
    subject = np.ones((3, 8, 8), dtype=bool)
    assert metrics.flicker(moving, moving, subject) == 0.0
    assert metrics.flicker(still, moving, subject) == pytest.approx(-10.0)
    jitter = moving.copy()
    jitter[1] += 10
    assert metrics.flicker(jitter, moving, subject) == pytest.approx(10.0)


def test_eval_writes_a_table_sheets_and_the_summary(tmp_path):
    pipeline = tiny_pipeline()
    rows = table_rows(ablations=False)
    assert [row.name for row in rows] == [FULL, NETWORK, WORKING, REPEAT, WARP, NO_POSE]
    report = tmp_path / "report.md"
    results = evaluate(pipeline, [EVAL_CLIP], report, rows, log=lambda line: None)
    text = report.read_text()
    assert "| full model |" in text and "| no pose |" in text
    assert text.strip().splitlines()[-1] == summary_line(results)
    assert summary_line(results).startswith("full PSNR ")
    assert (tmp_path / "report_sheets" / "eval_clip.png").is_file()
    clip = load_clip(EVAL_CLIP)  # measured at the clip's own 128x128
    assert clip.frames.shape[1:3] == (clip.shot.height, clip.shot.width) == (128, 128)
    assert results[REPEAT][0]["psnr"] == pytest.approx(
        metrics.psnr(np.repeat(clip.frames[:1], len(clip.frames) - 1, 0), clip.frames[1:])
    )
    assert all(len(values) == 1 for values in results.values())
    # The model-free warp follows the skeleton: it beats the still reference on this clip.
    assert results[WARP][0]["subject_psnr"] > results[REPEAT][0]["subject_psnr"] + 1.0
    # At the clip's size the warp keeps the reference's detail; the working size upscaled loses it.
    assert results[WARP][0]["sharpness"] > 0.5 > results[WORKING][0]["sharpness"]
    assert results[REPEAT][0]["flicker"] < results[WARP][0]["flicker"]  # a still never moves


def test_all_table_rows_are_named_once():
    names = [row.name for row in table_rows()]
    assert len(names) == len(set(names)) == 12
    assert "PTCM off" in names and "guidance 2.0" in names


def test_eval_command_line_needs_an_output():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval"])
