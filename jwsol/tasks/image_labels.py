"""Shared base of the jobs trained from image-level labels on detection data (scenes or VOC).

The AlexNet localizers, WSDDN and the multi-label classifier all read `jwsol.data.detection`
batches and may start from ported ImageNet weights; this class wires both once.
Subclasses set `self.model` and implement `loss`, `predict`, `evaluator` (and `init_variables`
when the model takes more than the image).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np

from jwsol.data import detection, records
from jwsol.training.task import Batch, Task, Variables
from jwsol.weights import merge


class ImageLabelTask(Task):
    """Data and pretrained weights for a task whose config has `data` and `pretrained`
    (configs/common.py: detection_data, pretrained)."""

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.class_names = records.class_names(config.data)
        self.num_classes = len(self.class_names)

    @property
    def num_train_examples(self) -> int:
        return records.num_examples(self.config.data, self.config.data.train_split)

    def train_batches(self, start_step, batch_size, process_index, process_count):
        ds = detection.build(
            self.config.data, self.config.data.train_split, train=True, seed=self.config.seed,
            batch_size=batch_size, start_index=start_step * batch_size,
            process_index=process_index, process_count=process_count,
        )  # fmt: skip
        yield from ds.as_numpy_iterator()

    def eval_batches(self, batch_size, process_index, process_count):
        ds = detection.build(
            self.config.data, self.config.data.eval_split, train=False, seed=self.config.seed,
            batch_size=batch_size, process_index=process_index, process_count=process_count,
        )  # fmt: skip
        yield from ds.as_numpy_iterator()

    def data_counts(self) -> dict[str, float]:
        """Skipped images and dropped boxes (each logged where it happened), and the images kept
        without any positive label (valid negatives for these losses, but worth knowing)."""
        counts = {}
        for split in dict.fromkeys((self.config.data.train_split, self.config.data.eval_split)):
            kept = records.load_records(self.config.data, split)
            counts[f"data/skipped/{split}"] = float(len(kept.skipped))
            counts[f"data/unlabelled/{split}"] = float(np.sum(~np.any(kept.labels > 0, axis=1)))
        return counts

    def init_variables(self, rng, batch: Batch) -> Variables:
        return self.model.init(rng, jnp.asarray(batch["image"]))

    def load_pretrained(self, variables: Variables) -> Variables | None:
        return merge.load_into(variables, self.config.pretrained)
