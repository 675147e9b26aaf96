"""Multi-label VOC 2007 with ImageNet ResNet-50 (seed 003: mAP 0.7286, Adam 1e-4, batch 8).

Variants (grammar: configs/common.py):
  (none)      shortest edge 400, five 224 crops per image, max over the crops (seed 003)
  resize448   a plain 448 x 448 resize, one view
  tfds        as (none), from tfds voc/2007 (tfds build voc/2007 first) instead of a folder
  scenes      the offline check: the Fashion-MNIST scenes, ResNet-18 from scratch, on a CPU
  smoke       tiny scenes of made-up objects (data.mnist.source=fake), a few steps

    python -m jwsol.weights.torchvision --arch resnet50 --pth resnet50-0676ba61.pth \
        --out weights/resnet50 --drop-classifier
    python train.py --config configs/resnet_voc.py --workdir runs/voc \
        --config.data.voc_root=PATH/VOCdevkit --config.pretrained.path=weights/resnet50
"""

import os
import sys

import ml_collections

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds the configs package
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, bases=("resize448", "tfds", "scenes", "smoke"))
    config = common.base_config("multilabel")
    data = common.voc_data()
    data.voc_root = "data/VOCdevkit"
    data.train_split, data.eval_split = "trainval", "test"
    data.resize_mode = "shorter_side"  # shorter side -> 400, aspect kept ...
    data.scales = (400,)
    data.eval_scale = 400
    data.image_size = 800  # ... on an 800 x 800 canvas (the longer side is capped at 800)
    data.difficult_policy = "ignore"  # difficult-only classes: neither positive nor negative
    data.proposals.method = "none"  # this job reads no proposals
    config.data = data
    config.crops = ml_collections.ConfigDict({
        "mode": "five",  # 'five': FiveCrop, max of the logits over the crops; 'none': one view
        "size": 224,  # crop side
        "thumbnail": 96,  # side of the images in figures/ranked_images.png
    })  # fmt: skip
    # conv_batch_chunk: convs on chunks of that many examples (0: whole batch; docs/speed.md)
    config.model = ml_collections.ConfigDict(
        {"depth": 50, "small_input": False, "conv_batch_chunk": 0}
    )
    config.pretrained = common.pretrained("resnet50", "weights/resnet50")
    config.pretrained.exclude = ("params/fc",)  # 20 classes, not ImageNet's 1000
    config.train.batch_size = 8
    config.train.num_epochs = 10.0  # the seed converged in about 10 epochs
    config.train.log_every = 50
    config.train.eval_every_epochs = 1.0
    config.train.checkpoint_every_epochs = 1.0
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-4
    config.optimizer.schedule = "constant"
    config.eval.batch_size = 16
    config.eval.num_ranked = 5  # best and worst scored images per class in the picture
    config.eval.tail_top = 50  # tail accuracy: the top-scored images per class ...
    config.eval.tail_thresholds = 20  # ... at this many thresholds from 0.5 up

    if arg.base == "resize448":
        config.data.resize_mode = "fixed"
        config.data.image_size = 448
        config.data.scales = (448,)
        config.data.eval_scale = 448
        config.crops.mode = "none"
    elif arg.base == "tfds":
        config.data.source = "tfds"
    elif arg.base in ("scenes", "smoke"):
        _scenes(config, smoke=arg.base == "smoke")
    return config


def _scenes(config: ml_collections.ConfigDict, smoke: bool) -> None:
    """The offline scenes (Fashion-MNIST objects on black canvases), ResNet-18 from scratch."""
    data = common.detection_data()
    data.proposals.method = "none"  # this job reads no proposals
    data.max_gt_boxes = 8
    data.resize_mode = "fixed"
    data.image_size = 64  # 128 x 128 scenes shrunk for a CPU: objects are 16-32 px
    data.scales = (64,)
    data.eval_scale = 64
    config.data = data
    config.crops.mode = "none"
    config.crops.thumbnail = 48
    config.model.depth = 18
    config.pretrained.path = ""
    config.pretrained.from_scratch = True
    config.train.num_epochs = 0.0
    config.train.num_steps = 250  # 8,000 scenes seen: 4 epochs of the 2,000
    config.train.batch_size = 32
    config.train.log_every = 10
    config.train.eval_every = config.train.checkpoint_every = 50
    config.train.eval_every_epochs = config.train.checkpoint_every_epochs = 0.0
    config.optimizer.learning_rate = 1e-3  # from scratch: 10x the fine-tuning rate, ...
    config.optimizer.schedule = "cosine"  # ... decayed over the short run
    config.eval.batch_size = 100
    config.eval.tail_top = 20
    if smoke:
        data.scenes.canvas_size = 64
        data.scenes.min_object_size = 20
        data.scenes.max_object_size = 32
        data.scenes.max_objects = 3
        data.scenes.num_train = 12
        data.scenes.num_test = 10
        data.mnist.source = "fake"
        data.proposals.num_workers = 1
        data.resize_mode = "shorter_side"  # exercise the five crops
        data.image_size = 48
        data.scales = (40,)
        data.eval_scale = 40
        config.crops.mode = "five"
        config.crops.size = 24
        config.crops.thumbnail = 24
        common.smoke(config, batch_size=4, eval_batch_size=8)
        config.eval.tail_top = 5
        config.eval.tail_thresholds = 4
