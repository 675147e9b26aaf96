"""Detection figures: uint8 pictures of any number of images, and AP bars with NaN classes."""

import numpy as np

from jwsol.viz import detections


def test_detections_figure_draws_every_entry_and_an_empty_list():
    entry = {
        "image": np.zeros((20, 30, 3), np.uint8),
        "gt": np.array([[1, 2, 10, 12]], np.float32),
        "boxes": np.array([[2, 2, 9, 9]], np.float32),
        "text": ["a 0.900"],
    }
    figure = detections.detections_figure([entry] * 5, ncols=4)
    assert figure.dtype == np.uint8 and figure.ndim == 3 and figure.shape[-1] == 3
    one = detections.detections_figure([entry])
    assert one.shape[0] < figure.shape[0]  # one row against two
    assert detections.detections_figure([]).dtype == np.uint8


def test_ap_bar_chart_accepts_nan_classes():
    chart = detections.ap_bar_chart({"a": 0.5, "b": float("nan")}, 0.5, 0.4, 0.9)
    assert chart.dtype == np.uint8 and chart.shape[-1] == 3
