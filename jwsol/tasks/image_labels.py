"""Shared base of the jobs trained from image-level labels on detection data (scenes or VOC).

The AlexNet localizers, WSDDN and the multi-label classifier all read `jwsol.data.detection`
batches and may start from ported ImageNet weights; this class wires both once.
Subclasses set `self.model` and implement `loss`, `predict`, `evaluator` (and `init_variables`
when the model takes more than the image).
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jwsol.data import detection
from jwsol.errors import ConfigError, DataError
from jwsol.training.task import Batch, Task, Variables


class ImageLabelTask(Task):
    """Data and pretrained weights for a task whose config has `data` and `pretrained`
    (configs/common.py: detection_data, pretrained)."""

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.class_names = detection.class_names(config.data)
        self.num_classes = len(self.class_names)

    @property
    def num_train_examples(self) -> int:
        return detection.num_examples(self.config.data, self.config.data.train_split)

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

    def init_variables(self, rng, batch: Batch) -> Variables:
        return self.model.init(rng, jnp.asarray(batch["image"]))

    def load_pretrained(self, variables: Variables) -> Variables | None:
        p = self.config.pretrained
        if not p.path:
            if not p.from_scratch:
                raise ConfigError(
                    f"pretrained.path is empty: give the folder of converted {p.arch} weights "
                    f"(python -m jwsol.weights.torchvision --arch {p.arch} --pth FILE --out DIR; "
                    f"see docs/weights.md), or train from scratch with "
                    f"--config.pretrained.from_scratch=True."
                )
            logging.info("training from scratch (pretrained.from_scratch=True)")
            return None
        from jwsol.weights import torchvision as tv

        path = os.path.expanduser(p.path)
        if not os.path.exists(path):
            raise DataError(
                f"pretrained.path={path!r} does not exist. Download {tv.URLS[p.arch]} on a "
                f"machine with internet and convert it with python -m jwsol.weights.torchvision "
                f"--arch {p.arch} --pth FILE --out {path}."
            )
        pretrained = tv.load_pretrained(path, p.arch, drop_classifier=True)
        rename = dict(item.split("=") for item in p.rename.split(",")) if p.rename else None
        merged, report = tv.merge_pretrained(
            jax_to_numpy(variables), pretrained, exclude=tuple(p.exclude), rename=rename
        )
        logging.info("pretrained %s from %s:\n%s", p.arch, path, report)
        if not report.loaded:
            raise ConfigError(
                f"no weights from {path} matched the model; check pretrained.rename/exclude."
            )
        return merged


def jax_to_numpy(tree):
    import jax

    return jax.tree.map(np.asarray, tree)
