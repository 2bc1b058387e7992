"""The engine's one resize helper: area-averaged down, interpolated up, the release's Pillow."""

import numpy as np
import pytest
from PIL import Image

from poseanything.engine.inference.resize import resize_frames, resize_image


def test_shrinking_averages_so_a_thin_line_does_not_vanish_or_alias():
    image = np.zeros((32, 32), np.float32)
    image[:, ::4] = 1.0  # a 1 px line every 4 px
    small = resize_image(image, 8, 8)
    np.testing.assert_allclose(small, 0.25, atol=1e-6)  # each output pixel covers one line


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_enlarging_keeps_shape_dtype_and_a_flat_image_flat(method):
    frames = np.full((3, 6, 8, 3), 200, np.uint8)
    big = resize_frames(frames, 16, 12, method)
    assert big.shape == (3, 12, 16, 3) and big.dtype == np.uint8 and (big == 200).all()
    mask = resize_image(np.ones((6, 8), np.float32), 16, 12, method)
    assert mask.shape == (12, 16) and np.allclose(mask, 1.0)


def test_the_release_method_is_pillows_bilinear_bit_for_bit():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (27, 48, 3), dtype=np.uint8)
    for size in ((83, 45), (20, 11)):
        expected = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(resize_image(image, *size, "release"), expected)


def test_the_same_size_is_the_same_array():
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    assert resize_frames(frames, 4, 4) is frames
