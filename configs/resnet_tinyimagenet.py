"""ResNet-18 on TinyImageNet from scratch (seed 004: 56.3% top-1 after 48 epochs).

Variants (grammar: configs/common.py):
  (none)          standard split: train/ (100,000) for training, val/ (10,000) for testing
  shuffled        the seed's split: all 110,000 labelled images shuffled, 70:30
  fashion_mnist   the same recipe on Fashion-MNIST padded to 32x32, a short offline run
  smoke           a made-up tiny-imagenet-shaped folder (data.source=fake_tinyimagenet), a few steps

    python train.py --config configs/resnet_tinyimagenet.py --workdir runs/tin \
        --config.data.folder=PATH/tiny-imagenet-200
    python -m jwsol.viz.curves runs/tin        # figures/curves.png: train/test loss, top-1
"""

import os
import sys

import ml_collections

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds the configs package
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, bases=("shuffled", "fashion_mnist", "smoke"))
    config = common.base_config("classification")
    config.data = ml_collections.ConfigDict(
        {
            # 'tinyimagenet' (the folder), 'fake_tinyimagenet' (made up, under cache_dir) or
            # 'mnist' (the `mnist` section)
            "source": "tinyimagenet",
            "folder": "data/tiny-imagenet-200",  # the extracted folder
            "mnist": common.mnist_data(),
            "cache_dir": "~/.cache/jwsol",
            "split": "standard",  # 'standard' (train / val) or 'shuffled' (all labelled, 70:30)
            "train_fraction": 0.7,  # for split='shuffled'
            "split_seed": 0,  # the 'shuffled' permutation (fixed apart from config.seed)
            "image_size": 64,  # S: images are S x S (resized if they are not)
            "mean": common.IMAGENET_MEAN,  # per-channel normalisation of [0, 1] pixels
            "std": common.IMAGENET_STD,
            "num_train": 0,  # > 0: only the first that many training images (quick runs)
            "num_test": 0,  # > 0: only the first that many test images
        }
    )
    config.augment = ml_collections.ConfigDict(
        {
            "pad": 8,  # zero-pad, then crop S x S at a uniform offset
            "flip": True,  # horizontal flip with p 0.5
            "rotate_deg": 15.0,  # rotation angle uniform in [-rotate_deg, rotate_deg] ...
            "rotate_prob": 0.5,  # ... applied with this probability
            "noise_std": 0.03,  # additive Gaussian noise on [0, 1] pixels ...
            "noise_prob": 0.5,  # ... with this probability
            "holes_min": 1,  # coarse dropout: this many to holes_max holes ...
            "holes_max": 3,
            "hole_min": 8,  # ... of hole_min..hole_max px a side, set to 0 ...
            "hole_max": 16,
            "dropout_prob": 0.5,  # ... with this probability
        }
    )
    config.model = ml_collections.ConfigDict(
        {
            "depth": 18,  # ResNet-18/34/50
            "small_input": True,  # 3x3 stride-1 stem, no max pool: layer4 is 8x8 for 64x64 input
            # Convs on chunks of this many examples (0: the whole batch at once): same numbers,
            # faster on XLA:CPU at large batches (docs/speed.md).
            "conv_batch_chunk": 16,
        }
    )
    config.pretrained = common.pretrained("resnet18")  # pretrained.path: converted weights
    config.pretrained.from_scratch = True
    config.loss = ml_collections.ConfigDict({"label_smoothing": 0.0})
    config.train.batch_size = 256
    config.train.num_epochs = 48.0
    config.train.log_every = 50
    config.train.eval_every_epochs = 1.0
    config.train.checkpoint_every_epochs = 1.0
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1  # the one-cycle peak
    config.optimizer.schedule = "onecycle"
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 5e-4
    config.eval.batch_size = 500
    config.eval.num_figure_images = 24  # misclassified test images in figures/gradcam_mistakes

    if arg.base == "shuffled":
        config.data.split = "shuffled"
    elif arg.base == "fashion_mnist":
        # The offline check: ~8 minutes of training on 2 shared CPU cores (4,800 images, under
        # a tenth of an epoch). Augmentation scaled to 32 px.
        config.data.source = "mnist"
        config.data.image_size = 32
        config.data.mean = (0.2860,) * 3  # Fashion-MNIST's training-set pixel mean and std
        config.data.std = (0.3530,) * 3
        config.data.num_test = 1000  # the first 1,000 test images
        config.augment.pad = 4
        config.augment.hole_min = 4
        config.augment.hole_max = 8
        config.augment.holes_max = 2
        config.train.batch_size = 32
        config.train.num_epochs = 0.0
        config.train.num_steps = 150
        config.train.eval_every = config.train.checkpoint_every = 50
        config.train.eval_every_epochs = config.train.checkpoint_every_epochs = 0.0
        config.train.log_every = 10
        config.optimizer.learning_rate = 0.05
        config.eval.batch_size = 250
    elif arg.base == "smoke":
        config.data.source = "fake_tinyimagenet"
        config.data.image_size = 16
        config.augment.pad = 2
        config.augment.hole_min = 2
        config.augment.hole_max = 4
        common.smoke(config, batch_size=8, eval_batch_size=16)
        config.eval.num_figure_images = 6
    return config
