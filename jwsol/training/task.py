"""The contract between the shared loop and a job: what a task provides, what the loop tells it.

A task wires config -> model, data, loss and evaluator; the loop never knows which task it runs:
it only calls the methods below, and tells each evaluator which evaluation it is (`EvalContext`).
Batches are dicts of NumPy arrays whose leading axis is the example axis (this process's share
of the global batch).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

Batch = dict[str, np.ndarray]
Variables = dict[str, Any]  # {'params': ..., 'batch_stats': ...} as Flax returns them


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """What the loop knows about one evaluation; `Task.evaluator` receives it."""

    step: int  # the train step evaluated (the restored checkpoint's step in --mode=eval)
    final: bool  # the run's last evaluation, or --mode=eval: it writes eval_metrics.json
    schedule: tuple[int, ...]  # every step the whole training run evaluates at, in order
    epoch: float  # step / steps per epoch

    @property
    def first_middle_last(self) -> frozenset[int]:
        """The first, middle and last steps of the schedule (where sparse figures are drawn)."""
        s = self.schedule
        return frozenset((s[0], s[(len(s) - 1) // 2], s[-1])) if s else frozenset()


class Evaluator(abc.ABC):
    """Accumulates per-batch model outputs on the host and turns them into metrics and figures."""

    @abc.abstractmethod
    def add(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        """`batch` and `outputs` hold only valid (unpadded) examples."""

    def add_figure_batch(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        """Outputs on a batch of `Task.figure_batches`: drawn, never scored. Ignored by default."""

    def add_train_batch(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        """Outputs on a batch of `Task.train_eval_batches` (the training split, scored apart,
        e.g. CorLoc). Ignored by default."""

    @abc.abstractmethod
    def result(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """(metrics: flat name -> number, figures: name -> uint8 image [H, W, 3])."""

    def documents(self) -> dict[str, Any]:
        """JSON files the final evaluation writes beside eval_metrics.json (file name -> JSON
        value, e.g. detections_coco.json), asked for after `result`; none by default."""
        return {}


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """What `python -m jwsol.predict` asks of a job's predictions."""

    score_threshold: float | None = None  # None: the run's eval.score_threshold where it has one
    max_per_image: int = 100  # detections (or classes) kept per image, best first
    top_k: int = 5  # classes listed per image by classifiers


class Predictor(abc.ABC):
    """A job run on a user's own images (`Task.predictor`): it makes the batches, turns the
    outputs of `Task.predict` into JSON records and draws a picture per image."""

    # A pure, jittable (variables, batch) -> outputs used instead of `Task.predict` where the
    # predictions need more (e.g. Grad-CAM maps); None: `Task.predict`.
    predict = None

    @abc.abstractmethod
    def batches(
        self, images: list[np.ndarray], files: list[str], batch_size: int
    ) -> Iterable[Batch]:
        """Model inputs of `images` (uint8 RGB [H, W, 3] as read from `files`), in order; the last
        batch may be short (the caller pads it)."""

    @abc.abstractmethod
    def records(self, batch: Batch, outputs: dict[str, np.ndarray]) -> list[dict]:
        """One JSON-ready record per image of the (unpadded) batch; boxes in original pixels.
        Keys with a leading '_' (e.g. heatmaps) reach `picture` but are not written."""

    @abc.abstractmethod
    def picture(self, image: np.ndarray, record: dict) -> np.ndarray:
        """uint8 [H', W', 3]: the original `image` with what `record` found (boxes, heatmap)."""

    def document(self, records: list[dict]) -> dict[str, Any]:
        """The predictions part of the output JSON; each record carries `image_id` by then."""
        return {"predictions": records}


class Task(abc.ABC):
    """One job. Subclasses set `self.model` (a Flax module) in `__init__`."""

    # Panels of figures/curves.png (`jwsol.viz.curves`); None: the names logged for both
    # training and evaluation.
    curve_panels: tuple[str, ...] | None = None

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    # Data -----------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def num_train_examples(self) -> int:
        """Size of one training epoch (for epoch-based schedules)."""

    @abc.abstractmethod
    def train_batches(
        self, start_step: int, batch_size: int, process_index: int, process_count: int
    ) -> Iterator[Batch]:
        """Host batches of `batch_size // process_count` examples, from global step `start_step`.

        Deterministic in (config.seed, step): resuming at step k yields what an uninterrupted
        run sees at step k.
        """

    @abc.abstractmethod
    def eval_batches(
        self, batch_size: int, process_index: int, process_count: int
    ) -> Iterable[Batch]:
        """The fixed evaluation split; the last batch may be short (the loop pads it)."""

    def figure_batches(
        self, ctx: EvalContext, batch_size: int, process_index: int, process_count: int
    ) -> Iterable[Batch]:
        """Extra batches that the evaluation of `ctx` only draws (e.g. training images); none by
        default. The loop predicts on them and hands them to `Evaluator.add_figure_batch`."""
        return ()

    def train_eval_batches(
        self, ctx: EvalContext, batch_size: int, process_index: int, process_count: int
    ) -> Iterable[Batch]:
        """Training-split batches (eval transform) that the evaluation of `ctx` also scores, apart
        from the eval split (`Evaluator.add_train_batch`); none by default."""
        return ()

    def data_counts(self) -> dict[str, float]:
        """What the data loader left out or flagged (e.g. `data/skipped/train`: images and boxes
        skipped as bad); the loop adds it to a fresh run's first metrics.jsonl row. None by default."""
        return {}

    # Model ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def init_variables(self, rng: jax.Array, batch: Batch) -> Variables:
        """Fresh variables of the model (jitted; `load_pretrained` merges checkpoints after)."""

    def load_pretrained(self, variables: Variables) -> Variables | None:
        """Host-side hook: return `variables` with checkpoint weights merged in, or None to keep
        the fresh init. Runs once, outside jit (file I/O belongs here, not in `init`)."""
        return None

    @abc.abstractmethod
    def loss(
        self, params, model_state: dict, batch: Batch, rng: jax.Array
    ) -> tuple[jax.Array, tuple[dict, dict[str, jax.Array]]]:
        """Training loss: (scalar, (new model_state e.g. batch_stats, scalar metrics)). Pure."""

    @abc.abstractmethod
    def predict(self, variables: Variables, batch: Batch) -> dict[str, jax.Array]:
        """Eval-mode outputs, each with the example axis first. Pure and jittable."""

    def final_predict(self, variables: Variables, batch: Batch) -> dict[str, jax.Array]:
        """`predict` for the final evaluation, --mode=eval and `jwsol.predict`: a job whose
        last evaluation is worth more compute (test-time views) overrides it. Default: predict."""
        return self.predict(variables, batch)

    @abc.abstractmethod
    def evaluator(self, ctx: EvalContext) -> Evaluator:
        """A fresh evaluator for the evaluation `ctx` (one pass over `eval_batches`)."""

    def predictor(self, options: PredictOptions) -> Predictor | None:
        """How `python -m jwsol.predict` runs this job on new images; None: it cannot."""
        return None

    def grad_histograms(self, grads) -> dict[str, jax.Array]:
        """Gradients to log as histograms at log steps (name -> array); none by default."""
        return {}
