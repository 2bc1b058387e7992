"""Resizing images, masks and frames: the engine's one place for it (OpenCV).

The filter follows the direction: shrinking averages the source pixels it covers
(``INTER_AREA``: no aliasing of thin bones or fine texture), enlarging interpolates, bilinear
for what is computed on (masks, the network's low-frequency change) and bicubic for what
people see (the reference fitted to the shot, frames upscaled to it). The one exception is
the release's own loader (``"release"``): torchvision's bilinear resize of a PIL image is
Pillow's, which antialiases when it shrinks as OpenCV's bilinear does not, so the full
model's skeleton images stay bit-identical to the release's (``tests/test_official_parity.py``).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

Method = Literal["linear", "cubic", "release"]
"""How an image is enlarged ("linear", "cubic"; shrinking is area-averaged either way), or
"release": Pillow's bilinear both ways, as the release loads images."""


def resize_image(
    image: np.ndarray, width: int, height: int, method: Method = "linear"
) -> np.ndarray:
    """(h,w), (h,w,C) uint8 or float ``image`` at ``width`` x ``height``; the same array when
    it has that size already (``method``: see the module docstring)."""
    if image.shape[:2] == (height, width):
        return image
    image = np.ascontiguousarray(image)
    if method == "release":
        from PIL import Image

        resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(resized)
    shrinks = width * height < image.shape[0] * image.shape[1]
    interpolation = (
        cv2.INTER_AREA if shrinks else cv2.INTER_CUBIC if method == "cubic" else cv2.INTER_LINEAR
    )
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    return resized.reshape(height, width, *image.shape[2:])  # OpenCV drops a channel axis of 1


def resize_frames(
    frames: np.ndarray, width: int, height: int, method: Method = "linear"
) -> np.ndarray:
    """(F,h,w) or (F,h,w,C) frames at ``width`` x ``height``, one frame at a time into one
    array of the frames' dtype (a long HD shot never holds a float copy of uint8 frames)."""
    if frames.shape[1:3] == (height, width):
        return frames
    out = np.empty((len(frames), height, width, *frames.shape[3:]), dtype=frames.dtype)
    for index, frame in enumerate(frames):
        out[index] = resize_image(frame, width, height, method)
    return out
