"""OICR (Tang et al., CVPR 2017): WSDDN plus K online instance classifier refinement streams.

The same job as configs/wsddn.py (task 'wsddn', `model.num_refinements` = K > 0): each stream is a
(C + 1)-way proposal classifier on the shared fc7, trained on pseudo-labels from the stream
before it (jwsol/ops/oicr.py), and the detector's region scores are the mean of the K streams
(`eval.score_source = 'refine'`; 'mil' evaluates the WSDDN stream alone).

Variants (grammar: configs/common.py):
  configs/oicr.py          the paper's VOC 2007 setting: ImageNet VGG16 (conv5_3, RoI pool 7x7),
                           five training scales with flips, SGD
                           lr 1e-3 for 40k iterations then 1e-4 for 30k, two images a batch, and
                           the test scores averaged over the five scales and their flips.
  configs/oicr.py:scenes   the offline embedded default: Fashion-MNIST scenes, the scenes
                           WSDDN trunk (pretrained on Fashion-MNIST's training images) and
                           schedule (configs/wsddn.py:scenes) for 1,250 steps, selective
                           search at 128 and 192 px, box regression, and test views (three
                           canvases and their flips) at the final evaluation.
  configs/oicr.py:smoke    tiny and fast, on made-up objects.
Modifiers: `k=N` refinement streams (0 = WSDDN), `tta` (test canvases of 0.8, 1 and 1.2 times
the side and their flips, at the final evaluation), `reg` (a box regression head trained on the
last stream's pseudo boxes, Yang et al. ICCV 2019), `ss=S` (selective search again with the
longer side at S px, its new boxes appended up to data.max_proposals; 0 = once), on for scenes
unless set (`tta=false`, `reg=false`, `ss=0`: the recipe before them, with `steps=1000`),
`scratch` (no pretrained trunk), `steps=N`, `res=S`; e.g. `configs/oicr.py:scenes,k=2,tta`. Results: docs/oicr.md.
"""

import os
import sys

import ml_collections

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds the configs package
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
from configs import common, wsddn

PAPER_SCALES = (480, 576, 688, 864, 1200)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(
        arg,
        bases=("scenes", "smoke"),
        k=3,
        tta=False,
        steps=0,
        res=0,
        scratch=False,
        reg=False,
        ss=0,
    )
    if arg.k < 0:
        raise ValueError(f"configs/oicr.py: k={arg.k}; expected 0 or more refinement streams.")
    config = wsddn.get_config(
        (arg.base or "paper")
        + (",scratch" if arg.scratch else "")
        + (f",res={arg.res}" if arg.res else "")
    )
    config.model.num_refinements = arg.k
    config.loss.refine_weights = (1.0,) * arg.k  # the paper weighs the streams alike
    config.loss.fg_iou = 0.5
    config.loss.ignore_below = 0.0
    config.eval.score_source = "refine" if arg.k else "mil"
    config.eval.train_corloc = True  # CorLoc as the field reports it: on the training split
    # The main job (scenes) has box regression and test views unless the variant names them.
    main = arg.base == "scenes"
    config.model.box_regression = arg.reg if "reg" in arg.given else main
    if not arg.base:
        _paper(config)
    elif arg.tta if "tta" in arg.given else main:
        # Canvas sides around the pipeline's one (320 px on scenes), and their flips, at the
        # final evaluation: the evaluations during training stay at one view.
        side = config.data.image_size
        config.eval.scales = (round(side * 0.8), side, round(side * 1.2))
        config.eval.flip = True
        config.eval.views_final_only = True
    if main:
        # About 10 minutes on 2 idle cores (0.48 s a step with the input pipeline and three
        # evaluations); the evaluations during training at 500 and 1,000.
        config.train.num_steps = 1250
        config.train.eval_every = 500
    second_side = arg.ss if "ss" in arg.given else (192 if main else 0)
    if second_side:
        # Selective search again at this side, its new boxes filling the proposal slots.
        config.data.proposals.also_resize = (second_side,)
        config.data.proposals.max_boxes = int(config.data.max_proposals)
    if arg.steps:
        config.train.num_steps = arg.steps
        config.train.num_epochs = 0
    return config


def _paper(config: ml_collections.ConfigDict) -> None:
    """The paper's VOC setting on the WSDDN paper variant's data (configs/wsddn.py:paper), with
    ImageNet VGG16 (`python -m jwsol.weights.torchvision --arch vgg16`, docs/weights.md)."""
    m, lc = config.model, config.loss
    m.backbone = "vgg16"
    m.pool_size = 7  # VGG16's fc6 input
    config.pretrained = common.pretrained("vgg16", "~/.cache/jwsol/weights/vgg16")
    m.det_temperature = 1.0
    m.box_score_scale = 0.0
    lc.spatial_weight = 0.0
    config.train.batch_size = 2
    config.train.num_epochs = 0
    config.train.num_steps = 70_000
    config.train.checkpoint_every = 5000
    config.optimizer.learning_rate = 1e-3
    config.optimizer.schedule = "step"
    config.optimizer.decay_steps = (40_000,)
    config.eval.scales = PAPER_SCALES
    config.eval.flip = True
    config.eval.views_final_only = True
