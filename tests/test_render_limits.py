"""What a render refuses before or while it works: frames that are no picture, and a video too
large to encode or to hold in memory (issue 14, cases 3 and 14)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from poseanything.engine.inference.frame_check import GeneratedVideoError, check_generated_frames
from poseanything.engine.inference.memory import MAX_VIDEO_SIDE, check_video_fits, video_bytes
from poseanything.engine.inference.settings import OptionError


def picture(frames: int = 6, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (frames, size, size, 3)).astype(np.float32)


def test_a_picture_passes_and_nan_in_a_small_patch_names_its_frames():
    frames = picture()
    check_generated_frames(frames, 0, frames[0])
    frames[2:4, 9, 13] = np.nan  # one pixel off the 4-pixel sampling grid
    frames[5, 30, 30, 1] = np.inf
    with pytest.raises(GeneratedVideoError, match=r"non-finite .* for frames 13-14, 16, so no"):
        check_generated_frames(frames, 10, frames[0])


def test_flat_frames_are_refused_unless_the_reference_is_flat_too():
    frames = picture()
    frames[1:] = 12.0
    with pytest.raises(GeneratedVideoError, match="a single flat colour for frames 2-6"):
        check_generated_frames(frames, 0, picture(1)[0])
    check_generated_frames(np.full_like(frames, 12.0), 0, np.full((64, 64, 3), 12, np.uint8))


def test_a_video_larger_than_h264_can_be_is_refused():
    with pytest.raises(OptionError, match=f"larger than an H.264 video can be \\({MAX_VIDEO_SIDE}"):
        check_video_fits(MAX_VIDEO_SIDE + 2, 480, 16, available=1e15)
    check_video_fits(MAX_VIDEO_SIDE, 480, 16, available=1e15)


def test_a_video_that_does_not_fit_in_memory_names_a_size_that_does():
    available = 8e9
    with pytest.raises(OptionError) as refused:
        check_video_fits(12000, 8000, 16, available=available)
    message = str(refused.value)
    assert "--native-size" in message and "8 GB is free" in message
    width, height = map(int, re.search(r"about (\d+)x(\d+) fits", message).groups())
    assert width / height == pytest.approx(12000 / 8000, rel=0.01)
    assert 0.97 * available < video_bytes(width, height, 16) <= available
    check_video_fits(width, height, 16, available=available)
