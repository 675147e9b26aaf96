"""WSDDN (Bilen & Vedaldi, CVPR 2016): weakly supervised detection from image-level labels.

Variants (grammar: configs/common.py):
  configs/wsddn.py          the course setting on VOC 2007 (16-824 seeds 000/001): AlexNet
                            from ported ImageNet weights, 512x512 images, the top 300 selective
                            search proposals by score, batch 1, SGD lr 1e-4, momentum 0.9,
                            weight decay 5e-4.
  configs/wsddn.py:paper    the paper / hbilen/WSDDN setting: all proposals (min side 20),
                            shorter side in {480, 576, 688, 864, 1200} with flips, lr 1e-5 for
                            10 epochs then 1e-6 for 10, detection softmax temperature 2, box
                            scores x10 (where proposals carry scores), spatial regulariser 1e-4.
  configs/wsddn.py:scenes   the offline embedded default: Fashion-MNIST scenes, selective
                            search proposals, a CPU-sized AlexNet whose trunk is pretrained on
                            Fashion-MNIST's training images (made once, ~4 min, cached).
  configs/wsddn.py:smoke    tiny and fast, on made-up objects (data.mnist.source=fake).
Modifiers: `steps=N` sets train.num_steps, `res=S` data.image_size, `scratch` trains the trunk
from scratch (no pretrained weights), e.g. `configs/wsddn.py:scenes,steps=2000,res=256`.
Both VOC variants need data.voc_root (or data.source='tfds'), the Fast R-CNN proposal files
(data.proposals.mat_file) and converted AlexNet weights (docs/weights.md).
"""

import os
import sys

import ml_collections

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds the configs package
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, bases=("paper", "scenes", "smoke"), steps=0, res=0, scratch=False)
    config = common.base_config("wsddn")
    config.data = common.voc_data()
    config.data.max_proposals = 300  # the course keeps the 300 best-scoring proposals
    config.data.proposals.top_k = 300
    config.pretrained = common.pretrained("alexnet", "~/.cache/jwsol/weights/alexnet")
    config.model = ml_collections.ConfigDict({
        # 'alexnet' | 'vgg16' (then pool_size 7 and pretrained.arch 'vgg16': configs/oicr.py)
        "backbone": "alexnet",
        "width": 1.0,  # trunk channel multiplier; 1.0 is the only width ported weights fit
        "batch_norm": False,  # BatchNorm in conv1-5: from scratch only (no ported weights)
        "fc_features": 4096,  # fc6/fc7 width
        "dropout_rate": 0.5,
        "pooling": "roi_pool",  # 'roi_pool' (max, as the paper) | 'roi_align' (bilinear)
        "pool_size": 6,  # bins per side: fc6 sees pool_size x pool_size x conv5 channels
        "spatial_scale": 1.0 / 16.0,  # conv5 cells per input pixel (AlexNet stride 16)
        "sampling_ratio": 2,  # roi_align samples per bin and axis (<= 0: adaptive)
        "cls_temperature": 1.0,  # softmax(x / T) over classes
        "det_temperature": 1.0,  # softmax(x / T) over regions (hbilen/WSDDN: 2)
        "box_score_scale": 0.0,  # pooled features x (1 + this x proposal score); paper: 10
        "num_refinements": 0,  # OICR's refinement streams (configs/oicr.py); 0 = WSDDN alone
        # A per-class box regression head on fc7, trained on the last stream's pseudo boxes and
        # applied at test time (Yang et al., ICCV 2019; configs/oicr.py `reg`).
        "box_regression": False,
        # Trunk init before pretrained weights (if any) replace it: 'torch' (torch's default) or
        # 'he' (N(0, 2 / fan_in) kernels, for training from scratch).
        "init": "torch",
    })  # fmt: skip
    config.loss = ml_collections.ConfigDict({
        "spatial_weight": 0.0,  # spatial regulariser weight (hbilen/WSDDN: 1e-4); 0 = off
        "spatial_iou": 0.6,  # regions overlapping the top one by more than this are pulled in
        "spatial_num_boxes": 10,  # among the top this many regions by score
        # OICR (model.num_refinements > 0): one loss weight per refinement stream, the IoU that
        # makes a proposal foreground of a pseudo box, and weight 0 below this IoU (0 = off).
        "refine_weights": (),
        "fg_iou": 0.5,
        "ignore_below": 0.0,
        "regression_weight": 1.0,  # the box regression's smooth L1 (model.box_regression)
    })  # fmt: skip
    config.train.batch_size = 1
    config.train.num_epochs = 5
    config.train.log_every = 100
    config.train.eval_every = 0
    config.train.checkpoint_every = 2000
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 1e-4
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.optimizer.schedule = "constant"
    config.eval.batch_size = 1
    config.eval.score_threshold = 1e-3  # detections need a region score above this
    config.eval.nms_iou = 0.4  # per-class NMS IoU threshold (hbilen/WSDDN: 0.4)
    config.eval.max_per_class = 0  # keep at most this many detections per class and image (0: all)
    config.eval.voc07 = True  # 11-point AP (VOC 2007); False: all-point AP (VOC 2010+)
    config.eval.num_figure_images = 12  # images in the detections picture
    # Region scores evaluated: 'mil' (WSDDN's two-stream product) or 'refine' (OICR: the mean of
    # the refinement streams' class probabilities).
    config.eval.score_source = "mil"
    # Test-time augmentation: scores averaged over these scales (the unit of data.eval_scale, or
    # data.image_size in 'fixed' resize mode; () = the pipeline's one scale) and, with flip, their
    # mirror images.
    config.eval.scales = ()
    config.eval.flip = False
    # The views above only at the final evaluation (and --mode=eval, jwsol-predict): the
    # evaluations during training then cost one view.
    config.eval.views_final_only = False
    config.eval.train_corloc = False  # CorLoc on the training split too, at the final evaluation
    # COCO AP, AP50, AP75 (pycocotools, an optional dependency) beside the VOC AP
    config.eval.coco_ap = False

    if arg.base == "paper":
        d = config.data
        d.resize_mode = "shorter_side"
        d.scales = (480, 576, 688, 864, 1200)
        d.eval_scale = 688  # one test scale (the paper averages all five and their flips)
        d.image_size = 1600  # the longer side is capped here (hbilen/WSDDN: 2000)
        d.max_proposals = 4000  # all of them, in practice (more are cut, with a warning)
        d.proposals.top_k = 0
        d.proposals.min_size = 20  # hbilen/WSDDN's minBoxSize
        config.model.det_temperature = 2.0
        config.model.box_score_scale = 10.0
        config.loss.spatial_weight = 1e-4
        config.train.num_epochs = 20
        config.optimizer.learning_rate = 1e-5
        config.optimizer.schedule = "step"
        config.optimizer.decay_epochs = 10
        config.optimizer.decay_factor = 0.1
    elif arg.base in ("scenes", "smoke"):
        _scenes(config)
        if arg.base == "smoke":
            _smoke(config)
    if arg.steps:
        config.train.num_steps = arg.steps
    if arg.res:
        config.data.image_size = arg.res
        if config.pretrained.get("make"):
            # The recipe's object sizes follow image_size, so the trunk sees objects at the new scale.
            config.pretrained = common.fashion_mnist_pretrained(config)
    if arg.scratch:
        _from_scratch(config)
    return config


def _from_scratch(config: ml_collections.ConfigDict) -> None:
    """No pretrained weights: the trunk keeps its `model.init` draw."""
    config.pretrained = common.pretrained("alexnet")
    config.pretrained.from_scratch = True


def _scenes(config: ml_collections.ConfigDict) -> None:
    """Offline scenes on 2 CPU cores: a narrow AlexNet whose trunk is pretrained on Fashion-MNIST's
    training images (made on first use, cached; ImageNet weights cannot be had offline).

    Selective search (fast, native 128 px) gives ~45 boxes per scene and covers 96% of the
    objects at IoU 0.5. Canvases are upsampled to 320 px so conv5 (stride 16) is 19x19 and an
    object spans 5-10 cells. BatchNorm in the trunk, He init, the detection softmax at
    temperature 2 (as hbilen/WSDDN), RoI max pooling, Adam with warm-up and cosine decay:
    1,000 steps of 16 train in about 9 minutes here (measurements and ablations: docs/wsddn.md).
    """
    d = config.data = common.detection_data()
    d.image_size = 320
    d.max_proposals = 128
    m = config.model
    m.width = 0.25
    m.batch_norm = True
    m.fc_features = 256
    m.dropout_rate = 0.1
    m.pooling = "roi_pool"  # as the paper (roi_align: docs/wsddn.md)
    m.det_temperature = 2.0
    m.init = "he"  # for the layers the pretrained trunk does not fill
    config.pretrained = common.fashion_mnist_pretrained(config)
    config.train.batch_size = 16
    config.train.num_epochs = 0
    config.train.num_steps = 1000
    config.train.log_every = 50
    config.train.eval_every = 250  # ~10 s each: four points on the AP curve
    config.train.checkpoint_every = 500
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = 100
    config.eval.batch_size = 50


def _smoke(config: ml_collections.ConfigDict) -> None:
    d = config.data
    d.image_size = 64
    d.max_proposals = 64
    d.scenes.canvas_size = 64
    d.scenes.min_object_size = 16
    d.scenes.max_object_size = 28
    d.scenes.num_train = 24
    d.scenes.num_test = 8
    d.mnist.source = "fake"
    d.proposals.method = "grid"
    d.proposals.grid_sizes = (20, 32)
    d.proposals.grid_ratios = (1.0,)
    d.proposals.grid_stride = 0.5
    m = config.model
    m.width = 0.125
    m.fc_features = 16
    _from_scratch(config)  # seconds, not the minutes of pretraining
    common.smoke(config, batch_size=4, eval_batch_size=4)
    config.optimizer.warmup_steps = 0
    config.eval.num_figure_images = 4
