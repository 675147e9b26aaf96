"""Job 2: the weakly supervised AlexNet localizers (the course's seeds 000 and 001).

Variants (grammar: configs/common.py), e.g. `configs/localizer.py:robust,epochs45`:
  (none)          VOC 2007 trainval -> test at 512x512, ImageNet AlexNet conv1-5, max pooling,
                  SGD (lr 0.01, momentum 0.9, weight decay 1e-4), batch 32, x0.1 every 30 epochs,
                  30 epochs, evaluation every 2 epochs
  robust          global average pooling (log-sum-exp: add --config.model.pooling=lse)
  epochs=N        N epochs (same step decay); epochs2, epochs30, epochs45: the course's
  scenes          offline Fashion-MNIST scenes, a CPU-sized AlexNet (width 0.25) whose trunk is
                  pretrained on Fashion-MNIST's training images (made once, cached)
  scenes_robust   = scenes,robust
  smoke           tiny scenes of made-up objects (data.mnist.source=fake), 4 steps

    python train.py --config configs/localizer.py --workdir runs/loc_max \
        --config.data.voc_root=PATH/VOCdevkit --config.pretrained.path=PATH/alexnet
    python train.py --config configs/localizer.py:robust,epochs45 --workdir runs/loc_avg ...
    python train.py --config configs/localizer.py:scenes --workdir runs/loc_scenes_max
"""

import os
import sys

import ml_collections

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds the configs package
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
from configs import common

ALIASES = {
    "scenes_robust": "scenes,robust",
    **{f"epochs{n}": f"epochs={n}" for n in (2, 30, 45)},  # the course's training lengths
}


def _voc(config: ml_collections.ConfigDict) -> None:
    config.data = common.voc_data()
    config.data.voc_root = "data/VOCdevkit"  # the VOCdevkit folder (or its VOC2007/)
    config.data.resize_mode = "fixed"  # 512 x 512, as the course
    config.data.scales = (512,)
    config.data.difficult_policy = "ignore"  # classes seen only as 'difficult' get weight 0
    config.data.proposals.method = "none"  # this job reads no proposals
    config.pretrained = common.pretrained("alexnet", "~/.cache/jwsol/weights/alexnet")


def _scenes(config: ml_collections.ConfigDict) -> None:
    """A CPU-sized run: 192 px canvases (9x9 maps), AlexNet at width 0.25."""
    d = config.data = common.scenes_data(
        canvas_size=192, min_object_size=48, max_object_size=96, max_objects=4,
        num_train=3000, num_test=500,
    )  # fmt: skip
    d.image_size = d.eval_scale = 192
    d.scales = (192,)
    d.max_gt_boxes = 8
    d.proposals.method = "none"  # this job reads no proposals
    config.model.width = 0.25
    config.model.init = "he"  # for the layers the pretrained trunk does not fill
    # NOTE: ImageNet weights cannot be fetched offline, and width 0.25 could not take them
    # anyway: the trunk is pretrained on Fashion-MNIST's training images instead.
    config.pretrained = common.fashion_mnist_pretrained(config)
    config.eval.box_max_side = 0  # exact: 192 x 192
    config.train.num_epochs = 6.0
    config.train.log_every = 10
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "cosine"
    config.eval.batch_size = 100


def _smoke(config: ml_collections.ConfigDict) -> None:
    _scenes(config)
    d = config.data
    d.scenes.canvas_size = 96  # the smallest canvas with a 3x3 map
    d.scenes.min_object_size = 24
    d.scenes.max_object_size = 40
    d.scenes.max_objects = 3
    d.scenes.num_train = 24
    d.scenes.num_test = 12
    d.image_size = d.eval_scale = 96
    d.scales = (96,)
    d.mnist.source = "fake"
    config.model.width = 0.125
    config.pretrained = common.pretrained("alexnet")
    config.pretrained.from_scratch = True  # seconds, not the minutes of pretraining
    common.smoke(config, batch_size=8, eval_batch_size=8)
    config.eval.num_figure_images = 2
    config.eval.num_cam_thresholds = 20


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(
        arg, bases=("scenes", "smoke"), aliases=ALIASES, robust=False, epochs=0.0
    )
    config = common.base_config("localizer")
    config.model = ml_collections.ConfigDict({
        "pooling": "max",  # 'max' | 'avg' (robust) | 'lse': score map -> image logit
        "lse_r": 10.0,  # log-sum-exp sharpness: average as r -> 0, max as r -> inf
        "width": 1.0,  # AlexNet channel multiplier; 1.0 for the ImageNet weights
        # AlexNet init before any pretrained weights: 'torch' (torchvision's) or 'he'
        # (N(0, 2 / fan_in) kernels, for training from scratch: models/alexnet.py he_init)
        "init": "torch",
    })  # fmt: skip
    config.train.batch_size = 32
    config.train.num_epochs = 30.0
    config.train.log_every = 20
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.01
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "step"
    config.optimizer.decay_epochs = 30
    config.optimizer.decay_factor = 0.1
    config.train.eval_every_epochs = 2.0
    config.train.checkpoint_every_epochs = 2.0
    config.eval.batch_size = 64
    config.eval.recall_threshold = 0.5  # metric2: recall of sigmoid(logit) >= this
    config.eval.fbeta = 0.0  # > 0: also report F-beta at recall_threshold with this beta
    # Box metrics (tasks/localizer.py): CorLoc at cam_threshold; MaxBoxAcc over the grid
    # 0, 1/num_cam_thresholds, ...; cam_threshold must lie on that grid.
    # Fraction of the min-max range of the logit map. Not CAM's 0.2 of the max: that assumes
    # post-ReLU maps with background near 0; logit maps keep background well above their min
    # (docs/localizer.md). Choose it on held-out boxes when you have them.
    config.eval.cam_threshold = 0.5
    config.eval.num_cam_thresholds = 100  # Choe et al.'s grid 0, 0.01, ..., 0.99
    config.eval.heatmap_alignment = "receptive_field"  # or 'stretch' (cv2.resize over the canvas)
    # > 0: box metrics on the image shrunk to this longer side (224: Choe et al.'s images).
    config.eval.box_max_side = 224
    # 'exact' (pixel-edge boxes, float thresholds) or 'wsolevaluation' (clovaai/wsolevaluation's
    # BoxEvaluator number for number: the convention of its published table; docs/localizer.md).
    config.eval.box_convention = "exact"
    config.eval.box_metrics_every_eval = False  # False: box metrics at the final evaluation only
    config.eval.figures_every_eval = False  # False: figures at the first, middle, last evaluation
    config.eval.num_figure_images = 6  # fixed train and eval images in the heatmap figures
    config.eval.max_maps_per_image = 3  # class heatmaps drawn per image

    {"scenes": _scenes, "smoke": _smoke}.get(arg.base, _voc)(config)
    if arg.robust:
        config.model.pooling = "avg"
    if arg.epochs:
        config.train.num_epochs = arg.epochs
    return config
