"""Five crops and thumbnails of padded batches, against NumPy references of torchvision's rules."""

import numpy as np
import pytest
import tensorflow as tf

from jwsol.data import crops
from jwsol.errors import ConfigError


def torchvision_five_crop(image: np.ndarray, h: int, w: int, size: int, canvas: int) -> np.ndarray:
    """FiveCrop of the valid h x w region (tl, tr, bl, br, centre; centre with Python's round),
    starts clipped into the canvas as our builder-padded images allow."""
    h, w = int(h), int(w)
    starts = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size),
              (round((h - size) / 2.0), round((w - size) / 2.0))]  # fmt: skip
    out = []
    for top, left in starts:
        top, left = min(max(top, 0), canvas - size), min(max(left, 0), canvas - size)
        out.append(image[top : top + size, left : left + size])
    return np.stack(out)


def test_five_crop_matches_torchvision_rules():
    canvas, size = 20, 6
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, canvas, canvas, 3)).astype(np.float32)
    # Odd and even margins (round half to even: 2.5 -> 2, 3.5 -> 4), a full canvas, and an image
    # smaller than the crop in one direction.
    sizes = np.array([[11, 13], [20, 20], [4, 15], [9, 6]], np.int32)
    out = crops.five_crop(tf.constant(images), tf.constant(sizes), size).numpy()
    assert out.shape == (4, 5, size, size, 3)
    for b, (h, w) in enumerate(sizes):
        np.testing.assert_array_equal(out[b], torchvision_five_crop(images[b], h, w, size, canvas))
    np.testing.assert_array_equal(out[0, 4], images[0, 2:8, 4:10])  # centre of 11 x 13, by hand


def test_five_crop_larger_than_canvas():
    with pytest.raises(ConfigError, match="crop size 8 exceeds the 6px canvas"):
        crops.five_crop(tf.zeros([1, 6, 6, 3]), tf.constant([[6, 6]]), 8)


def test_thumbnails_keep_aspect_on_black():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    colour = np.array([0.2, 0.5, 0.8], np.float32)
    images = np.zeros((2, 16, 16, 3), np.float32)
    images[0, :8, :16] = (colour - mean) / std  # a wide 8 x 16 image
    images[1, :16, :16] = (colour - mean) / std  # a square one
    thumbs = crops.thumbnails(
        tf.constant(images), tf.constant([[8, 16], [16, 16]]), 8, mean, std
    ).numpy()
    assert thumbs.shape == (2, 8, 8, 3) and thumbs.dtype == np.uint8
    expected = np.round(colour * 255).astype(np.uint8)
    np.testing.assert_allclose(thumbs[0, 2:6], np.broadcast_to(expected, (4, 8, 3)), atol=1)
    assert not thumbs[0, :2].any() and not thumbs[0, 6:].any()  # black bands above and below
    np.testing.assert_allclose(thumbs[1], np.broadcast_to(expected, (8, 8, 3)), atol=1)
