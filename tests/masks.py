"""Growing masks in tests that run under every Blender's Python (no OpenCV there)."""

import numpy as np


def grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` (H,W) bool grown by ``pixels`` in every direction (a square), without
    wrapping round the edges; ``~grow(~mask, n)`` shrinks it."""
    height, width = mask.shape
    padded = np.pad(mask, pixels)
    grown = np.zeros_like(mask)
    for dy in range(2 * pixels + 1):
        for dx in range(2 * pixels + 1):
            grown |= padded[dy : dy + height, dx : dx + width]
    return grown
