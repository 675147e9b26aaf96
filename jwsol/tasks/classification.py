"""Single-label image classification with a ResNet: TinyImageNet (seed 004) and Fashion-MNIST.

Data sources (`config.data.source`):
  tinyimagenet  the extracted tiny-imagenet-200 folder (`data.folder`), split 'standard'
                (train / val) or 'shuffled' (70:30 of all labelled images); 64x64 RGB.
  fake_tinyimagenet  a small made-up tiny-imagenet-200 folder (jwsol.data.fake), written
                once under `data.cache_dir`
  mnist         the MNIST-format source of `data.mnist` (Fashion-MNIST IDX files from Debian's
                dataset-fashion-mnist by default), zero-padded from 28x28 to `data.image_size`
                and replicated to 3 channels (so the model, the augmentation and ImageNet
                weights stay those of RGB data).

Training: cross-entropy (optional label smoothing) on augmented images, BatchNorm in train
mode; logged train metrics `loss`, `top1` (on the augmented batch). Evaluation: `top1`, `top5`,
`loss` (mean cross-entropy on the test split), `num_examples`, and the figure
`gradcam_mistakes`: the first `eval.num_figure_images` misclassified test images, each with the
layer4 Grad-CAM of the predicted class and of the true class.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jwsol.data import augment
from jwsol.data import classification as classification_data
from jwsol.errors import ConfigError
from jwsol.metrics import classification
from jwsol.models.resnet import STAGE_SIZES, ResNet
from jwsol.ops.gradcam import gradcam_maps
from jwsol.training.task import Batch, EvalContext, Evaluator, Task
from jwsol.viz import gradcam
from jwsol.weights import merge


class ClassificationEvaluator(Evaluator):
    def __init__(self, class_names, mean, std, num_figure_images: int = 24):
        self.names, self.mean, self.std, self.k = class_names, mean, std, num_figure_images
        self.losses, self.top1, self.top5 = [], [], []
        self.mistakes: list[tuple] = []

    def add(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        logits, labels = outputs["logits"], batch["label"]
        predicted = np.argmax(logits, axis=1)
        self.losses.append(classification.cross_entropy(logits, labels))
        self.top1.append(predicted == labels)
        self.top5.append(classification.topk_correct(logits, labels, min(5, logits.shape[1])))
        have = sum(len(m[0]) for m in self.mistakes)
        wrong = np.flatnonzero(predicted != labels)[: max(0, self.k - have)]
        if len(wrong):
            z = logits[wrong] - logits[wrong].max(axis=1, keepdims=True)
            prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            self.mistakes.append(
                (
                    augment.denormalize(batch["image"][wrong], self.mean, self.std),
                    labels[wrong],
                    predicted[wrong],
                    prob[np.arange(len(wrong)), predicted[wrong]],
                    outputs["cam_pred"][wrong],
                    outputs["cam_true"][wrong],
                )
            )

    def result(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        metrics = {
            "top1": float(np.mean(np.concatenate(self.top1))),
            "top5": float(np.mean(np.concatenate(self.top5))),
            "loss": float(np.mean(np.concatenate(self.losses))),
            "num_examples": float(sum(len(t) for t in self.top1)),
        }
        if self.mistakes:
            images, true, pred, prob, cam_pred, cam_true = (
                np.concatenate(x) for x in zip(*self.mistakes)
            )
        else:
            images, true, pred, prob = np.zeros((0, 1, 1, 3), np.uint8), [], [], []
            cam_pred = cam_true = np.zeros((0, 1, 1), np.float32)
        names = self.names
        titles = [
            f"true: {names[t]}\npred: {names[p]} ({q:.2f})" for t, p, q in zip(true, pred, prob)
        ]
        map_titles = [[f"CAM {names[p]}" for p in pred], [f"CAM {names[t]}" for t in true]]
        figure = gradcam.gradcam_gallery(images, titles, [cam_pred, cam_true], map_titles)
        return metrics, {"gradcam_mistakes": figure}


class ClassificationTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        if config.model.depth not in STAGE_SIZES:
            raise ConfigError(
                f"model.depth={config.model.depth!r}; expected one of {sorted(STAGE_SIZES)}."
            )
        merge.require(config.pretrained, f"resnet{config.model.depth}")  # before the data
        d = config.data
        (self.train_images, self.train_labels), (self.test_images, self.test_labels), names = (
            classification_data.load_source(d)
        )
        self.class_names = names
        self.model = ResNet(
            depth=config.model.depth, num_classes=len(names), small_input=config.model.small_input,
            conv_batch_chunk=config.model.get("conv_batch_chunk", 0),
        )  # fmt: skip
        self.aug = classification_data.Augment.from_config(config.augment)
        self.data_kwargs = {"image_size": d.image_size, "mean": tuple(d.mean), "std": tuple(d.std)}
        logging.info(
            "classification: %s, %d classes, %d train / %d test images",
            d.source,
            len(names),
            len(self.train_labels),
            len(self.test_labels),
        )

    # Data -------------------------------------------------------------------------------------
    @property
    def num_train_examples(self) -> int:
        return len(self.train_labels)

    def train_batches(self, start_step, batch_size, process_index, process_count):
        return classification_data.train_batches(
            self.train_images,
            self.train_labels,
            seed=self.config.seed,
            start_step=start_step,
            batch_size=batch_size,
            process_index=process_index,
            process_count=process_count,
            aug=self.aug,
            **self.data_kwargs,
        )

    def eval_batches(self, batch_size, process_index, process_count):
        return classification_data.eval_batches(
            self.test_images,
            self.test_labels,
            batch_size=batch_size,
            process_index=process_index,
            process_count=process_count,
            **self.data_kwargs,
        )

    # Model ------------------------------------------------------------------------------------
    def init_variables(self, rng, batch):
        return self.model.init(rng, jnp.asarray(batch["image"]), train=False)

    def load_pretrained(self, variables):
        # A 3x3 small_input stem cannot take the 7x7 ImageNet kernel.
        stem = ("params/conv1",) if self.config.model.small_input else ()
        return merge.load_into(
            variables, self.config.pretrained, exclude_extra=("params/fc", *stem)
        )

    def loss(self, params, model_state, batch, rng):
        logits, new_state = self.model.apply(
            {"params": params, **model_state}, batch["image"], train=True, mutable=["batch_stats"]
        )
        targets = jax.nn.one_hot(batch["label"], len(self.class_names))
        if self.config.loss.label_smoothing > 0:
            targets = optax.smooth_labels(targets, self.config.loss.label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        top1 = jnp.mean(jnp.argmax(logits, axis=-1) == batch["label"])
        return loss, (dict(new_state), {"top1": top1})

    def predict(self, variables, batch):
        """Logits and layer4 Grad-CAM maps of the predicted and of the true class."""
        layer4 = self.model.apply(variables, batch["image"], train=False, method=ResNet.features)[
            "layer4"
        ]

        def head(a):
            return self.model.apply(variables, a, method=ResNet.head)

        logits = head(layer4)
        _, cam_pred = gradcam_maps(head, layer4, jnp.argmax(logits, axis=-1))
        _, cam_true = gradcam_maps(head, layer4, batch["label"].astype(jnp.int32))
        return {"logits": logits, "cam_pred": cam_pred, "cam_true": cam_true}

    def predictor(self, options):
        from jwsol.tasks.classifier_predict import ClassificationPredictor

        return ClassificationPredictor(self, options)

    def evaluator(self, ctx: EvalContext):
        del ctx  # every evaluation is the same
        d = self.config.data
        return ClassificationEvaluator(
            self.class_names, tuple(d.mean), tuple(d.std), self.config.eval.num_figure_images
        )
