"""What every job config shares: the base fields, data and weight defaults, and the variant grammar.

Imports only `ml_collections` (loading a config never imports TensorFlow or a jwsol module).

Variants (`--config configs/NAME.py:VARIANT`) use one grammar, parsed by `parse_arg`: comma-
separated words, at most one of them a base word (the data set or a named setting, e.g.
`scenes`, `smoke`), the others modifiers: a bare word switches a boolean on (`robust`), and
`key=value` sets a typed value (`steps=2000`, `res=256`). For example
`configs/wsddn.py:scenes,steps=2000,res=256`.
"""

from __future__ import annotations

import ml_collections

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's per-channel mean of [0, 1] RGB pixels
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST_FOLDER = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def parse_arg(
    arg: str | None,
    *,
    bases: tuple[str, ...] = (),
    aliases: dict[str, str] | None = None,
    **spec,
) -> ml_collections.ConfigDict:
    """Parses a variant string into a ConfigDict {base, given, **spec}.

    Args:
      arg: e.g. 'scenes,robust,steps=2000' (None or '' for the default variant).
      bases: the allowed base words; the result's `base` is the one given, or ''.
      aliases: word -> its expansion, e.g. {'scenes_robust': 'scenes,robust'}.
      **spec: modifier -> default; a bare word sets a bool modifier True, `key=value` parses the
        value with the default's type (bool: true/false/1/0). `given` lists the modifiers the
        string named, so a base may choose another default for the others.

    Raises ValueError naming the allowed words for an unknown word or key, a bad value, a bare
    word for a non-bool modifier, or more than one base word.
    """
    result = ml_collections.ConfigDict({"base": "", "given": (), **spec})
    words = []
    for word in (arg or "").split(","):
        word = word.strip()
        words.extend((aliases or {}).get(word, word).split(","))

    def fail(problem: str) -> ValueError:
        allowed = [*bases, *(aliases or {}), *(f"{k}={v!r}" for k, v in spec.items())]
        return ValueError(f"unknown variant {arg!r}: {problem}; allowed: {', '.join(allowed)}.")

    for word in filter(None, words):
        key, has_value, value = word.partition("=")
        if word in bases:
            if result.base:
                raise fail(f"two base words ({result.base!r} and {word!r})")
            result.base = word
        elif key not in spec:
            raise fail(f"unknown word {key!r}")
        elif has_value:
            result[key] = _typed(value, spec[key], fail)
        elif isinstance(spec[key], bool):
            result[key] = True
        else:
            raise fail(f"{key!r} needs a value ({key}=...)")
        if key in spec:
            result.given = (*result.given, key)
    return result


def _typed(text: str, default, fail):
    """`text` parsed as the type of `default`."""
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise fail(f"{text!r} is not a bool")
        return text.lower() in ("true", "1")
    try:
        return type(default)(text)
    except ValueError:
        raise fail(f"{text!r} is not a {type(default).__name__}") from None


def base_config(task: str) -> ml_collections.ConfigDict:
    """The fields every job has; job configs start from this."""
    config = ml_collections.ConfigDict()
    config.task = task  # a name from jwsol.tasks.TASKS
    config.seed = 0  # initialisation, data order and augmentation all derive from it
    config.train = ml_collections.ConfigDict({
        "batch_size": 128,  # global: split over every device of every process
        "num_steps": 1000,
        "num_epochs": 0.0,  # > 0 overrides num_steps with epochs of the training set
        # Periods in steps, or in epochs with the `_epochs` field (> 0 wins); the loop turns
        # epochs into steps from the task's number of training examples.
        "log_every": 50,
        "log_every_epochs": 0.0,
        "eval_every": 0,  # 0: evaluate only at the end
        "eval_every_epochs": 0.0,
        "checkpoint_every": 500,
        "checkpoint_every_epochs": 0.0,
        "keep_checkpoints": 3,
        "progress_bar": True,
        # On CPU, XLA's convolution and dot kernels: 'ynnpack' (XLA's default), 'eigen', or
        # 'auto': time both on the run's first train steps and keep the faster (which one wins
        # depends on the net and the CPU; runs under 200 steps keep the default).
        "cpu_kernels": "auto",
        # 'float32' | 'bfloat16': the model computes in this dtype; parameters, optimizer state,
        # BatchNorm statistics and the loss stay float32 (jwsol.training.precision).
        "dtype": "float32",
        # A train step whose compiled peak memory exceeds this many GiB is refused before it
        # runs. -1: the device's memory where JAX can tell (GPU, TPU), else no check; 0: none.
        "memory_budget_gib": -1.0,
    })  # fmt: skip
    config.eval = ml_collections.ConfigDict({
        "batch_size": 256,
        "step": -1,  # --mode=eval restores this step; -1: the latest
    })  # fmt: skip
    config.optimizer = optimizer()
    return config


def optimizer() -> ml_collections.ConfigDict:
    """`config.optimizer` (read by jwsol.training.optimizer); job configs override what they need."""
    return ml_collections.ConfigDict({
        "name": "adam",  # 'sgd' | 'adam' | 'adamw'
        "learning_rate": 1e-3,
        "schedule": "cosine",  # 'constant' | 'cosine' | 'step' | 'onecycle'
        "warmup_steps": 0,
        "final_fraction": 0.0,  # cosine: final lr as a fraction of the peak
        "decay_epochs": 30,  # step: decay every this many epochs (torch StepLR's step_size)
        "decay_steps": (),  # step: explicit boundaries in steps (overrides decay_epochs)
        "decay_factor": 0.1,
        "onecycle_pct_start": 0.3,
        "onecycle_div_factor": 25.0,
        "onecycle_final_div_factor": 1e4,
        "momentum": 0.9,
        "nesterov": False,
        "beta1": 0.9,
        "beta2": 0.999,
        "weight_decay": 0.0,
        "grad_clip_norm": 0.0,  # 0 disables clipping
        # Per-layer learning rates: 'prefix=factor,...' over parameter paths, e.g. 'refine=10'.
        "lr_multipliers": "",
    })  # fmt: skip


def smoke(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    eval_batch_size: int,
    steps: int = 4,
    log_every: int = 2,
    every: int = 2,
) -> None:
    """The shared `smoke` schedule: a few steps, logs, evaluations and checkpoints, in steps."""
    t = config.train
    t.num_epochs, t.num_steps = 0.0, steps
    t.log_every, t.eval_every, t.checkpoint_every = log_every, every, every
    t.log_every_epochs = t.eval_every_epochs = t.checkpoint_every_epochs = 0.0
    t.batch_size = batch_size
    t.progress_bar = False
    config.eval.batch_size = eval_batch_size


def pretrained(arch: str = "alexnet", path: str = "") -> ml_collections.ConfigDict:
    """`config.pretrained`: where the ported torchvision weights come from."""
    return ml_collections.ConfigDict({
        "arch": arch,  # alexnet | vgg16 | resnet18 | resnet34 | resnet50
        # Folder written by `python -m jwsol.weights.torchvision` (see docs/weights.md);
        # '' trains from scratch, which must be asked for with from_scratch=True.
        "path": path,
        "from_scratch": False,
        "exclude": (),  # target variable paths that keep their init, e.g. ('params/fc',)
        "rename": "",  # 'src=dst,...' checkpoint prefix -> model prefix, e.g. 'params=params/features'
        # A jwsol.weights.pretrain recipe that makes `path` when it is missing ('' = none); set
        # with its `recipe` section by fashion_mnist_pretrained.
        "make": "",
    })  # fmt: skip


def fashion_mnist_pretrained(
    config: ml_collections.ConfigDict, *, steps: int = 1200
) -> ml_collections.ConfigDict:
    """`config.pretrained` of a scenes job: its AlexNet trunk pretrained as a classifier of
    Fashion-MNIST's training images (the scenes hold its test images), made on first use and
    cached (jwsol.weights.pretrain, docs/weights.md), loaded as ImageNet weights would be.

    Reads config.model (width, batch_norm, fc_features, dropout_rate) and config.data (object sizes x image_size /
    canvas_size: the size the trunk sees objects at), so call it after setting both. The folder
    name carries those settings, so jobs with other trunks or scales keep their own weights.
    """
    d, m = config.data, config.model
    scale = d.image_size / d.scenes.canvas_size
    low, high = round(d.scenes.min_object_size * scale), round(d.scenes.max_object_size * scale)
    batch_norm = bool(m.get("batch_norm", False))
    fc_features = int(m.get("fc_features", 0))  # WSDDN's fc6/fc7; the localizer has none
    key = f"w{m.width:g}{'_bn' if batch_norm else ''}{f'_fc{fc_features}' * bool(fc_features)}"
    key += f"_o{low}-{high}"
    c = pretrained("alexnet", f"~/.cache/jwsol/weights/fashion_mnist_alexnet_{key}")
    c.make = "fashion_mnist"
    c.recipe = ml_collections.ConfigDict({
        "width": float(m.width),
        "batch_norm": batch_norm,
        "fc_features": fc_features,  # > 0: fc6/fc7 on the object's RoI, loaded with the trunk
        "dropout_rate": float(m.get("dropout_rate", 0.1)),
        "image_size": max(high, 64),  # the canvas: the largest object fills it (AlexNet: >= 63)
        "min_object_size": low,
        "max_object_size": high,
        "steps": steps,  # about 4 minutes on 2 CPU cores at width 0.25, 160 px
        "batch_size": 64,
        "learning_rate": 1e-3,
        "warmup_steps": 100,
        "hide_prob": 0.0,  # hide-and-seek: share of grid cells blacked out in training
        "hide_grid": 8,
        "holdout": 5000,  # the last training images, for the accuracy in meta.json only
        "seed": 0,
        "mnist": mnist_data(),  # only the training split is read
    })  # fmt: skip
    return c


def detection_data() -> ml_collections.ConfigDict:
    """`config.data` of the detection builder (jwsol.data.detection), defaults for scenes."""
    c = ml_collections.ConfigDict()
    c.source = "scenes"  # 'scenes' | 'voc_folder' | 'tfds' | 'folder' (your own images)
    c.train_split = "train"  # scenes: 'train'/'test'; VOC: 'train', 'val', 'trainval', 'test'
    c.eval_split = "test"
    c.voc_root = ""  # VOCdevkit folder (or its VOC2007/ inside) for source 'voc_folder'
    c.tfds_name = "voc/2007"
    c.tfds_data_dir = ""  # tfds data_dir for source 'tfds' ('' = tfds' default); never downloads
    # Source 'folder' (jwsol.data.folder, docs/own_data.md): a labels file per split, a CSV
    # `file,labels` (labels separated by spaces) or a COCO JSON; '{split}' is replaced by the
    # split name. Image paths are relative to `images` ('' = the labels file's folder).
    c.folder = ml_collections.ConfigDict({
        "images": "",
        "labels": "",
        "classes": (),  # class names in label order; () = those of the train split's file
    })  # fmt: skip
    # Generated scenes go to <cache_dir>/scenes, computed proposals to <cache_dir>/proposals.
    c.cache_dir = "~/.cache/jwsol"
    c.strict = False  # True: bad files raise DataError; False: counted, logged skips
    # Decode every JPEG once when a split is loaded, so that a damaged file is a skip here
    # rather than an error inside the running pipeline.
    c.verify_images = True

    c.image_size = 224  # S: the static canvas side of `image`
    # 'fixed': resize to SxS (aspect not kept); 'shorter_side'/'longer_side': that side is set to
    # a value of `scales` (random per example in training, `eval_scale` in eval), aspect kept,
    # the longer side capped at S, then zero-padded to SxS (see image_size in the batch).
    c.resize_mode = "fixed"
    c.scales = (160, 192, 224)  # training sides for the *_side modes (WSDDN: 480..1200 at S=1200)
    c.eval_scale = 224
    c.antialias = True  # shrink by area averaging (no aliasing), grow bilinearly; False: bilinear
    c.flip = True  # random horizontal flips in training
    c.shuffle = True  # new permutation of the images each epoch in training

    c.max_proposals = 200  # R: proposals per image after cleaning, padded with proposal_mask
    c.max_gt_boxes = 50  # G: VOC 2007 has at most 42 objects per image
    c.difficult_policy = "include"  # 'include' | 'exclude' | 'ignore': see voc.image_labels

    c.proposals = ml_collections.ConfigDict()
    c.proposals.method = "selective_search"  # 'selective_search' | 'grid' | 'mat' (docs/data.md)
    # `.mat` file for method 'mat'; '{split}' is replaced by the split name.
    c.proposals.mat_file = ""
    c.proposals.mat_order = "yxyx"  # 'yxyx' (Fast R-CNN files) | 'xyxy' | 'auto' (checked)
    c.proposals.mode = "fast"  # selective search strategy: 'fast' | 'quality'
    c.proposals.resize = 0  # run selective search with the longer side at this size (0 = native)
    c.proposals.also_resize = ()  # and again at these longer sides, new boxes appended
    c.proposals.max_boxes = 0  # keep selective search's first N (0 = all)
    # 'grid': box sides (original pixels), aspect ratios (w / h), step as a fraction of the side.
    # NOTE: the grid is not ranked; set max_proposals >= its size (1,891 boxes at 128x128).
    c.proposals.grid_sizes = (24, 32, 48, 64)
    c.proposals.grid_ratios = (0.5, 1.0, 2.0)
    c.proposals.grid_stride = 0.25
    c.proposals.min_size = 4  # drop proposals narrower or lower than this (original pixels)
    c.proposals.top_k = 0  # keep the K best by score when the source has scores (0 = all)
    c.proposals.num_workers = 0  # processes for selective search (0 = one per core)

    c.mnist = mnist_data()  # where scenes take their objects from
    c.scenes = ml_collections.ConfigDict()
    c.scenes.canvas_size = 128
    c.scenes.min_objects = 1
    c.scenes.max_objects = 4
    c.scenes.min_object_size = 32  # side of a scaled 28x28 object square, pixels
    c.scenes.max_object_size = 64
    c.scenes.max_overlap = 0.2  # largest IoU between two objects' true boxes
    c.scenes.pixel_threshold = 32  # object pixels (>= this) define the true box
    c.scenes.num_train = 2000
    c.scenes.num_test = 500
    c.scenes.seed = 0  # fixes both splits
    return c


def mnist_data(source: str = "idx") -> ml_collections.ConfigDict:
    """`data.mnist`: an MNIST-format source of 28x28 objects (jwsol.data.mnist)."""
    return ml_collections.ConfigDict({
        # 'idx': MNIST-format IDX files in `folder`; 'tfds': tfds `tfds_name` from
        # `tfds_data_dir` ('' = tfds' default); 'fake': made up in memory (jwsol.data.fake).
        "source": source,
        "folder": FASHION_MNIST_FOLDER,
        "tfds_name": "fashion_mnist",  # 'fashion_mnist' | 'mnist'
        "tfds_data_dir": "",
    })  # fmt: skip


def scenes_data(**scenes) -> ml_collections.ConfigDict:
    """`detection_data()` with these `data.scenes` fields set (e.g. canvas_size=96)."""
    c = detection_data()
    for key, value in scenes.items():
        c.scenes[key] = value
    return c


def voc_data() -> ml_collections.ConfigDict:
    """VOC 2007 from a VOCdevkit folder with the Fast R-CNN proposal files (paths still to set)."""
    c = detection_data()
    c.source = "voc_folder"
    c.train_split, c.eval_split = "trainval", "test"
    c.image_size = 512
    c.scales = (480, 512)
    c.eval_scale = 512
    c.max_proposals = 2000
    c.proposals.method = "mat"
    c.proposals.mat_file = "selective_search_data/voc_2007_{split}.mat"
    c.proposals.min_size = 2
    return c
