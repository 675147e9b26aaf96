"""Side by side with PyTorch: one train step of every job, in jwsol and in torch, same shapes.

For each job the jwsol step is what the loop jits (the task's loss, or for the ResNets the
model and loss their tasks use, and the optimizer of the job's config, `make_optimizer`), and
the torch step is the same model, loss and optimizer in torch (benchmarks/torch_jobs.py), on the
same random batch, glibc's malloc tuned as train.py does (`cpu.tune_malloc`). Torch runs with 2 threads (`TORCH_THREADS`). After `WARMUP` steps each, the
two are timed alternately, A B A B, `rounds` steps each; reported: the median and the best ms
per step and the ratio jwsol / torch of the medians (< 1: jwsol faster). Results: a table in the
pytest summary and benchmarks/results/vs_torch.json (other sizes and dtypes:
vs_torch_<size>_<dtype>.json).

Environment:
  JWSOL_BENCH_SIZE  = smoke (tiny shapes, seconds: CI) | default (the issue's shapes, minutes on
                      2 cores) | voc (the configs' full VOC batches, for a GPU)
  JWSOL_BENCH_DTYPE = float32 | bfloat16 (compute dtype; parameters stay float32)
  JWSOL_BENCH_JOBS  = comma-separated subset of JOBS (default: all)
  JWSOL_BENCH_TORCH_THREADS = torch's intra-op threads (default 2, the cores of the dev VM)
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch_jobs as tj

from jwsol import losses, tasks
from jwsol.data import canvas
from jwsol.models.resnet import ResNet
from jwsol.ops import roi_pool as jwsol_roi_pool
from jwsol.training import cpu
from jwsol.training.config import load
from jwsol.training.optimizer import make_optimizer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIZE = os.environ.get("JWSOL_BENCH_SIZE", "default")
DTYPE = os.environ.get("JWSOL_BENCH_DTYPE", "float32")
TORCH_THREADS = int(os.environ.get("JWSOL_BENCH_TORCH_THREADS", "2"))
WARMUP = 1 if SIZE == "smoke" else 2
ROUNDS = {"smoke": 2, "default": 3, "voc": 5}
JOBS = ("sliding_window", "localizer", "wsddn", "oicr", "resnet18", "resnet50")
NUM_CLASSES = {"localizer": 20, "wsddn": 20, "oicr": 20, "resnet18": 200, "resnet50": 20}


@dataclasses.dataclass(frozen=True)
class Shape:
    batch: int
    pixels: int
    proposals: int = 0
    fc: int = 4096  # WSDDN/OICR fc6/fc7 width


# Per size and job: images per step, image side, proposals per image.
SHAPES = {
    "smoke": {
        "sliding_window": Shape(4, 56), "localizer": Shape(1, 128),
        "wsddn": Shape(1, 128, 64, fc=256), "oicr": Shape(1, 128, 64, fc=256),
        "resnet18": Shape(2, 32), "resnet50": Shape(1, 64),
    },
    "default": {
        "sliding_window": Shape(32, 56), "localizer": Shape(4, 512),
        "wsddn": Shape(2, 512, 2000), "oicr": Shape(2, 512, 2000),
        "resnet18": Shape(64, 64), "resnet50": Shape(8, 224),
    },
    "voc": {  # the configs' batches; WSDDN/OICR at the paper's test scale, ResNet-50 five crops
        "sliding_window": Shape(32, 56), "localizer": Shape(32, 512),
        "wsddn": Shape(2, 688, 2000), "oicr": Shape(2, 688, 2000),
        "resnet18": Shape(256, 64), "resnet50": Shape(40, 224),
    },
}  # fmt: skip
ROWS: dict[str, dict[str, Any]] = {}
# As train.py does by default: glibc keeps freed buffers (both sides profit alike).
MALLOC_TUNED = cpu.tune_malloc()


def _selected_jobs() -> tuple[str, ...]:
    chosen = os.environ.get("JWSOL_BENCH_JOBS", "")
    return tuple(j for j in chosen.split(",") if j) or JOBS


def _torch_device() -> torch.device:
    """CUDA when JAX runs on a GPU and torch sees one (the GPU comparison), else the CPU."""
    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def _mixed(model):
    """`model` computing in DTYPE (jwsol.training.precision), or a skip if that is missing."""
    if DTYPE == "float32":
        return model
    if DTYPE != "bfloat16":
        raise ValueError(f"JWSOL_BENCH_DTYPE={DTYPE!r}: use float32 or bfloat16")
    try:
        from jwsol.training.precision import MixedPrecision
    except ImportError:
        pytest.skip("bfloat16 needs jwsol.training.precision (train.dtype), not in this tree")
    return MixedPrecision(model, jnp.bfloat16)


# --------------------------------------------------------------------------------- batches


def _boxes(rng, n: int, r: int, side: int) -> np.ndarray:
    """[n, r, 4] proposals inside a side x side image, 16 px to 60% of it a side."""
    xy = rng.uniform(0, side - 16, (n, r, 2))
    wh = rng.uniform(16, side * 0.6, (n, r, 2))
    return np.concatenate([xy, np.minimum(xy + wh, side - 1)], -1).astype(np.float32)


def make_batch(job: str, shape: Shape, geom=None, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed random batch with the keys and dtypes of the job's real batches (NHWC)."""
    rng = np.random.default_rng(seed)
    n, s = shape.batch, shape.pixels
    channels = 1 if job == "sliding_window" else 3
    batch = {"image": rng.standard_normal((n, s, s, channels), dtype=np.float32)}
    if job == "sliding_window":
        corner = rng.integers(0, s - 36, (n, 2))
        boxes = np.concatenate([corner, corner + 32], 1)
        targets = canvas.window_targets(boxes, rng.integers(0, 10, n), geom)
        batch.update({f"target_{k}": v for k, v in targets.items()})
    elif job == "resnet18":
        batch["label"] = rng.integers(0, NUM_CLASSES[job], n).astype(np.int32)
    else:
        c = NUM_CLASSES[job]
        labels = (rng.random((n, c)) < 0.15).astype(np.float32)
        labels[np.arange(n), rng.integers(0, c, n)] = 1.0  # every image has a class
        batch.update(labels=labels, label_weights=np.ones((n, c), np.float32))
    if shape.proposals:
        r = shape.proposals
        batch.update(
            proposals=_boxes(rng, n, r, s),
            proposal_mask=np.ones((n, r), bool),
            proposal_scores=np.zeros((n, r), np.float32),
        )
    return batch


# ----------------------------------------------------------------------------- jwsol side


def _config(job: str, shape: Shape):
    name = {"sliding_window": "sliding_window.py", "localizer": "localizer.py",
            "wsddn": "wsddn.py", "oicr": "wsddn.py", "resnet18": "resnet_tinyimagenet.py",
            "resnet50": "resnet_voc.py:resize448"}[job]  # fmt: skip
    config = load(str(CONFIGS / name))
    if job in ("localizer", "wsddn", "oicr"):
        config.data.source = "tfds"  # VOC's 20 class names without reading a VOC folder
    if job in ("wsddn", "oicr"):
        config.model.fc_features = shape.fc
        config.data.max_proposals = shape.proposals
        if job == "oicr":  # OICR's K = 3 streams on the WSDDN AlexNet trunk
            config.model.num_refinements = 3
            config.loss.refine_weights = (1.0, 1.0, 1.0)
    return config


def _resnet_loss(model, job: str):
    """The loss of the classification (ResNet-18) or multi-label (ResNet-50) task."""

    def loss(params, model_state, batch, rng):
        logits, state = model.apply(
            {"params": params, **model_state}, batch["image"], train=True,
            mutable=["batch_stats"],
        )  # fmt: skip
        if job == "resnet18":
            targets = jax.nn.one_hot(batch["label"], NUM_CLASSES[job])
            return optax.softmax_cross_entropy(logits, targets).mean(), (dict(state), {})
        value, _ = losses.image_label_bce(logits, batch["labels"], batch["label_weights"])
        return value, (dict(state), {})

    return loss


def jwsol_step(job: str, shape: Shape, config, batch: dict[str, np.ndarray]):
    """(run: () -> loss, number of parameters, CPU kernels): the job's jwsol train step on
    `batch`, jitted with the kernels the loop would pick (train.cpu_kernels, 'auto' timed
    the same way: jwsol.training.cpu.choose_kernels)."""
    if job.startswith("resnet"):
        depth = 18 if job == "resnet18" else 50
        chunk = config.model.get("conv_batch_chunk", 0)
        model = ResNet(
            depth, NUM_CLASSES[job], small_input=job == "resnet18", conv_batch_chunk=chunk
        )
        variables = jax.jit(model.init)(jax.random.key(0), batch["image"][:1])
        loss_fn = _resnet_loss(_mixed(model), job)
    else:
        task = tasks.build(config)
        small = {k: v[:1] for k, v in batch.items()}
        variables = jax.jit(task.init_variables)(jax.random.key(0), small)
        task.model = _mixed(task.model)
        loss_fn = task.loss
    tx, _ = make_optimizer(config.optimizer, 1000, 100)
    params = variables.pop("params")

    def step(params, model_state, opt_state, batch, rng):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (model_state, _)), grads = grad_fn(params, model_state, batch, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), model_state, opt_state, loss

    device_batch = jax.device_put(batch)
    state = [params, variables, tx.init(params)]
    rng = jax.random.key(1)
    kernels = config.train.cpu_kernels
    if kernels == "auto" and SIZE == "smoke":  # as the loop: short runs keep the default
        kernels = "ynnpack"
    if kernels == "auto":
        chosen = cpu.choose_kernels(
            lambda options: jax.jit(step, compiler_options=options), (*state, device_batch, rng)
        )
        kernels = "ynnpack" if chosen is None else chosen[0]
    options = cpu.kernel_options(kernels)
    compiled = jax.jit(step, donate_argnums=(0, 1, 2), compiler_options=options)

    def run() -> float:
        *new, loss = compiled(*state, device_batch, rng)
        state[:] = new
        return float(loss)  # waits for the step

    return run, sum(x.size for x in jax.tree.leaves(params)), kernels


# ------------------------------------------------------------------------------ torch side


def _nchw(x: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)


def torch_step(job: str, shape: Shape, config, batch: dict[str, np.ndarray]):
    """(run: () -> loss, number of parameters): the job's model, loss and optimizer in torch."""
    device = _torch_device()
    torch.manual_seed(0)
    images = _nchw(batch["image"], device)
    t = {k: torch.from_numpy(v).to(device) for k, v in batch.items() if k != "image"}
    if job == "sliding_window":
        from jwsol.models.sliding_window import parse_layers

        model = tj.sliding_window_net(parse_layers(config.model.layers))
        lc = config.loss
        args = (t["target_y0"], t["target_y1"].long(), t["target_box"])
        weights = (lc.cls_weight, lc.box_weight, lc.label_smoothing)
        loss_fn = lambda m: tj.sliding_window_loss(m(images), *args, *weights)
    elif job == "localizer":
        model = tj.Localizer(NUM_CLASSES[job])
        bce = torch.nn.BCEWithLogitsLoss(weight=t["label_weights"])
        loss_fn = lambda m: bce(m(images), t["labels"])
    elif job in ("wsddn", "oicr"):
        m = config.model
        model = tj.WSDDN(
            NUM_CLASSES[job], shape.fc, m.num_refinements, m.pool_size, m.spatial_scale
        )

        def loss_fn(model):
            scores, refine = model(images, t["proposals"], t["proposal_mask"])
            loss, source = tj.wsddn_loss(scores, t["labels"]), scores
            mask = t["proposal_mask"].float()
            for probs in refine:
                labels, weights = tj.pseudo_labels(
                    source.float(), t["proposals"], t["labels"], t["proposal_mask"]
                )
                loss = loss + tj.oicr_loss(probs, labels, weights, mask)
                source = probs[..., 1:]
            return loss
    else:
        model = tj.resnet(18 if job == "resnet18" else 50, NUM_CLASSES[job], job == "resnet18")
        if job == "resnet18":
            loss_fn = lambda m: torch.nn.functional.cross_entropy(m(images), t["label"].long())
        else:
            bce = torch.nn.BCEWithLogitsLoss(weight=t["label_weights"])
            loss_fn = lambda m: bce(m(images), t["labels"])
    model = model.to(device)
    step = tj.train_step(model, loss_fn, tj.optimizer(model.parameters(), config.optimizer), DTYPE)
    count = sum(p.numel() for p in model.parameters())
    if device.type == "cuda":
        return (lambda: (step(), torch.cuda.synchronize())[0]), count
    return step, count


# --------------------------------------------------------------------------------- timing


def alternate(runs: dict[str, Any], rounds: int) -> dict[str, list[float]]:
    """Seconds of `rounds` calls of each run, called A B A B after `WARMUP` calls each."""
    for run in runs.values():
        for _ in range(WARMUP):
            assert np.isfinite(run())
    seconds = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            loss = run()
            seconds[name].append(time.perf_counter() - start)
            assert np.isfinite(loss), (name, loss)
    return seconds


def test_roi_pool_matches_jwsol():
    """The torch side's vectorised roi_pool gives jwsol's (torchvision's) numbers."""
    rng = np.random.default_rng(3)
    features = rng.standard_normal((2, 23, 19, 5)).astype(np.float32)
    boxes = _boxes(rng, 2, 40, 300)
    boxes[0, 0] = (0, 0, 7, 7)  # a one-cell roi
    boxes[1, 1] = (250, 280, 299, 299)  # reaching past the map: empty bins are 0
    ours = np.asarray(jwsol_roi_pool.batched_roi_pool(features, boxes, 6, 1 / 16))
    index = torch.arange(2).repeat_interleave(40)
    theirs = tj.roi_pool(
        _nchw(features, "cpu"), torch.from_numpy(boxes.reshape(-1, 4)), index, 6, 1 / 16
    )
    np.testing.assert_array_equal(ours.reshape(-1, 6, 6, 5), theirs.permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("job", _selected_jobs())
def test_step_vs_torch(job):
    torch.set_num_threads(TORCH_THREADS)
    shape = SHAPES[SIZE][job]
    config = _config(job, shape)
    geom = None
    if job == "sliding_window":  # crops: the windows of a shape.pixels square
        geom = tasks.build(config).model.window_geometry(shape.pixels)
    batch = make_batch(job, shape, geom)
    ours, ours_count, kernels = jwsol_step(job, shape, config, batch)
    theirs, theirs_count = torch_step(job, shape, config, batch)
    assert ours_count == theirs_count, f"{job}: the torch model is not the jwsol model"
    runs = {"jwsol": ours, "torch": theirs}
    seconds = alternate(runs, ROUNDS[SIZE])
    median = {name: statistics.median(s) for name, s in seconds.items()}
    ROWS[job] = {
        "job": job,
        "images": shape.batch,
        "pixels": shape.pixels,
        "proposals": shape.proposals,
        "parameters": ours_count,
        "cpu_kernels": kernels,
        "jwsol_ms": median["jwsol"] * 1e3,
        "torch_ms": median["torch"] * 1e3,
        "jwsol_best_ms": min(seconds["jwsol"]) * 1e3,
        "torch_best_ms": min(seconds["torch"]) * 1e3,
        "ratio": median["jwsol"] / median["torch"],
        "jwsol_s_all": seconds["jwsol"],
        "torch_s_all": seconds["torch"],
        "load_average_1min": round(os.getloadavg()[0], 2),
        "malloc_tuned": MALLOC_TUNED,
    }


def test_report(write_results, report_table, format_table, machine_info):
    """Print the table and write benchmarks/results/vs_torch*.json for the jobs run."""
    if not ROWS:
        pytest.skip("no job ran (all skipped): nothing to report")
    rows = [ROWS[job] for job in JOBS if job in ROWS]
    table = format_table(
        rows,
        [
            ("job", "job", ""),
            ("images", "images", "d"),
            ("pixels", "px", "d"),
            ("proposals", "proposals", "d"),
            ("cpu_kernels", "kernels", ""),
            ("jwsol_ms", "jwsol ms", ".1f"),
            ("torch_ms", "torch ms", ".1f"),
            ("ratio", "jwsol/torch", ".2f"),
            ("jwsol_best_ms", "jwsol best", ".1f"),
            ("torch_best_ms", "torch best", ".1f"),
            ("load_average_1min", "load", ".1f"),
        ],
    )
    device = f"torch on {_torch_device()}, {TORCH_THREADS} threads; jax on {jax.devices()[0]}"
    notes = (
        f"size {SIZE}, {DTYPE}; median of {ROUNDS[SIZE]} alternated steps after {WARMUP} "
        f"warm-up steps each; {device}; load {machine_info['load_average_1_5_15']}"
    )
    report_table("train step: jwsol vs PyTorch", f"{table}\n{notes}")
    name = "vs_torch" if (SIZE, DTYPE) == ("default", "float32") else f"vs_torch_{SIZE}_{DTYPE}"
    write_results(name, rows, {"size": SIZE, "dtype": DTYPE, "notes": notes, "table": table})
