"""Job 1: the convolutional sliding-window localizer on 64x64 canvases.

Variants (grammar: configs/common.py): `configs/sliding_window.py` (Fashion-MNIST IDX files
from Debian's dataset-fashion-mnist), `:mnist` (tfds mnist), `:smoke` (made-up objects, a few
steps); modifier `steps=N` sets train.num_steps.
"""

import os
import sys

import ml_collections

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds the configs package
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, bases=("mnist", "smoke"), steps=0)
    config = common.base_config("sliding_window")
    config.data = ml_collections.ConfigDict({
        "mnist": common.mnist_data(),  # the objects
        "canvas_size": 64,
        "scale_min": 0.75,
        "scale_max": 1.25,
        "max_rotation_deg": 15.0,  # rotation drawn uniformly in [-max, max]
        "box_threshold": 0.0,  # the true box covers transformed pixels above this (in [0, 1])
        "num_test": 10000,  # test canvases (one per test image, fixed placement); 0: all
        # Train on a random train_crop x train_crop part of each canvas that holds the whole
        # object, its corner on the window grid: the net is fully convolutional, so a step
        # computes just the windows near the object. 0: whole canvases. Test canvases are
        # always whole.
        "train_crop": 56,
    })  # fmt: skip
    config.model = ml_collections.ConfigDict({
        # cKxF: VALID conv KxK with F features + ReLU (cKsSxF: stride S); pK: max pool K. A 1x1
        # head follows. This stack sees 48x48 windows every 4 px: 5x5 windows on a 64x64
        # canvas. The 2x2 stride-2 first conv (a learned space-to-depth) leaves the rest at
        # half resolution, which buys depth and width per second (docs/sliding_window.md).
        "layers": "c2s2x32,c3x32,p2,c3x64,c3x64,c3x128,c3x128,c3x128",
        "batch_norm": True,  # BatchNorm after every conv (an affine map at eval time)
    })  # fmt: skip
    config.loss = ml_collections.ConfigDict({
        # Weights of the class NLL and box error against the detection BCE: a heavier class
        # term trades box accuracy for class accuracy (measured: docs/sliding_window.md).
        "cls_weight": 8.0,
        "box_weight": 1.0,
        "label_smoothing": 0.1,  # eps of the class cross-entropy (0: the plain NLL)
    })  # fmt: skip
    # Sized for about 10 minutes of training on 2 CPU cores (docs/sliding_window.md). Only the
    # final evaluation: each one costs a share of that budget (set eval_every for the curve).
    config.train.batch_size = 32
    config.train.num_steps = 10500
    config.train.log_every = 100
    config.train.eval_every = 0
    config.train.checkpoint_every = 1500
    config.optimizer.name = "adamw"  # decoupled weight decay 0.1 (x the learning rate)
    config.optimizer.weight_decay = 0.1
    config.optimizer.learning_rate = 2e-3
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 200
    config.eval.batch_size = 500
    config.eval.num_figure_images = 30

    if arg.base == "mnist":
        config.data.mnist.source = "tfds"
        config.data.mnist.tfds_name = "mnist"
    elif arg.base == "smoke":
        config.data.mnist.source = "fake"  # a tiny net, a few steps
        config.model.layers = "c5x4,p2,c3x4,c3x4,p2,c3x8,c3x8,c5x8"
        common.smoke(config, batch_size=16, eval_batch_size=16, steps=6, every=3)
        config.optimizer.warmup_steps = 0
        config.data.num_test = 40
    if arg.steps:
        config.train.num_steps = arg.steps
    return config
