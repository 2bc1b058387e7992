"""Will a video of the shot's size fit? Answered before sampling, not after it ran out.

The model works at its own (small) size whatever the shot's; what grows with the shot is each
window's frames at the shot's size and the H.264 encoder's buffers. Measured on a 16-frame
window (``benchmarks/render_memory.py``): engine and ffmpeg together at 1024², 2048² and 4096²
took 1.42, 1.96 and 3.77 GB, about 150 bytes a pixel above a fixed part.
"""

from __future__ import annotations

import os
from pathlib import Path

from .settings import OptionError

MAX_VIDEO_SIDE = 16384
"""libx264 refuses wider or taller frames."""
BYTES_PER_WINDOW_PIXEL = 6
"""A window's frames at the shot's size, uint8 RGB, twice (upscaled, then handed to ffmpeg)."""
ENCODER_BYTES_PER_PIXEL = 64
"""ffmpeg's libx264 buffers (lookahead, reference frames): 52 measured at 4096²."""
FIXED_BYTES = 1.5e9
"""Everything that does not grow with the shot: torch, the model, the warp, the working size."""


def video_bytes(width: int, height: int, window_frames: int) -> float:
    """Host memory a render writing ``width`` x ``height`` frames needs, about."""
    per_pixel = BYTES_PER_WINDOW_PIXEL * window_frames + ENCODER_BYTES_PER_PIXEL
    return FIXED_BYTES + per_pixel * width * height


def available_bytes() -> float | None:
    """Memory this machine can give now (MemAvailable), or None where that is not known."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024.0
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_video_fits(
    width: int, height: int, window_frames: int, available: float | None = None
) -> None:
    """An ``OptionError`` naming a size that fits, when a ``width`` x ``height`` video cannot be
    encoded or would not fit in ``available`` bytes (this machine's free memory by default)."""
    native = "or render at the model's working size with --native-size"
    if max(width, height) > MAX_VIDEO_SIDE:
        raise OptionError(
            f"shot: {width}x{height} is larger than an H.264 video can be ({MAX_VIDEO_SIDE} "
            f"pixels a side); lower the scene's resolution, {native}"
        )
    available = available_bytes() if available is None else available
    needed = video_bytes(width, height, window_frames)
    if available is None or needed <= available:
        return
    per_pixel = (needed - FIXED_BYTES) / (width * height)
    scale = min(1.0, max(0.0, (available - FIXED_BYTES) / per_pixel / (width * height)) ** 0.5)
    fits = f"{int(width * scale) // 2 * 2}x{int(height * scale) // 2 * 2}"
    raise OptionError(
        f"shot: a {width}x{height} video needs about {needed / 1e9:.0f} GB of memory and "
        f"{available / 1e9:.0f} GB is free; about {fits} fits (lower the scene's resolution), "
        f"{native}"
    )
