"""The offline stand-in for ImageNet weights: a scenes job's narrow AlexNet trunk pretrained as a
Fashion-MNIST classifier, cached in the folder format of `python -m jwsol.weights.torchvision`.

The offline scenes are made of Fashion-MNIST's *test* images; this recipe reads only its
*training* images (the last `holdout` of them kept aside for the reported accuracy), so no test
object is ever seen. Each image is flipped at random, scaled to a random side in
[min_object_size, max_object_size] (the size the job's trunk sees objects at) and placed at a
random position on a black `image_size` canvas, grey replicated to RGB and normalised with
ImageNet's mean/std, as the scenes pipeline does. The head is WSDDN's own when
`fc_features` > 0 (RoI max pooling of the object's box into 6x6 conv5 bins, fc6, fc7, so those
come pretrained too, as in ImageNet AlexNet; without them WSDDN picks object parts twice as
often: docs/weights.md), else global average pooling; then one Dense layer. He init, Adam with
warm-up and cosine decay, BatchNorm (if any) in train mode, a fixed seed.

The folder holds `variables.msgpack` ({'params': {'features': conv1..5[, 'fc67': fc6, fc7]}
[, 'batch_stats': {'features': bn1..5}]}; no 10-way layer) and `meta.json` (format, arch, recipe, its settings, steps,
held-out accuracy, seconds), so `jwsol.weights.merge.load_into` merges it into a job's model like
converted ImageNet weights. `merge.require` calls `ensure` when `config.pretrained.make` names a
recipe: a missing, damaged or other-settings folder is (re)made, with a progress bar.

    python -m jwsol.weights.pretrain configs/wsddn.py:scenes    # make the folder ahead of time
    python -m jwsol.weights.pretrain configs/wsddn.py:scenes pretrained.path=/tmp/w pretrained.recipe.steps=600
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from tqdm import tqdm

from jwsol.data import mnist, stats
from jwsol.errors import ConfigError, DataError, UserError
from jwsol.models.alexnet import FC67, AlexNetFeatures, he_init
from jwsol.ops.roi_pool import roi_pool
from jwsol.weights import store

RECIPES = ("fashion_mnist",)  # the values of config field `pretrained.make`
IMAGENET_MEAN = np.array(stats.IMAGENET_MEAN, np.float32)  # as jwsol.data.augment.normalize
IMAGENET_STD = np.array(stats.IMAGENET_STD, np.float32)
NUM_CLASSES = 10
_EVAL_BATCH = 500


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that defines the pretrained weights (recorded in meta.json, the cache key)."""

    width: float = 0.25  # AlexNetFeatures.width
    batch_norm: bool = True  # AlexNetFeatures.batch_norm
    # > 0: the head is WSDDN's, RoI max pooling of the object's box (6x6 bins of conv5) -> fc6,
    # fc7 of this width (FC67, saved with the trunk) -> Dense; 0: global average pool -> Dense.
    fc_features: int = 0
    dropout_rate: float = 0.1  # FC67's dropout
    image_size: int = 160  # canvas side, pixels
    min_object_size: int = 80  # side of the scaled 28x28 image, pixels
    max_object_size: int = 160
    steps: int = 1200
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    # Hide-and-seek (Singh & Lee, ICCV 2017): each cell of a hide_grid x hide_grid grid over the
    # canvas is blacked out with this probability in training, so the classifier must use every
    # part of an object, not its most telling one (WSDDN then picks parts less often).
    hide_prob: float = 0.0
    hide_grid: int = 8
    holdout: int = 5000  # the last this many training images: accuracy only, never trained on
    seed: int = 0
    mnist_source: str = "idx"  # jwsol.data.mnist sources ('fake' for tests)
    mnist_folder: str = mnist.DEFAULT_IDX_FOLDER
    mnist_tfds_name: str = "fashion_mnist"
    mnist_data_dir: str = ""

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> Recipe:
        """From `config.pretrained.recipe` (configs/common.py: fashion_mnist_pretrained)."""
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dict(section).items() if k != "mnist"}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"pretrained.recipe: unknown fields {unknown}; known: {list(fields)}")
        if "mnist" in section:
            source = section["mnist"]
            values["mnist_source"], values["mnist_folder"] = source["source"], source["folder"]
            values["mnist_tfds_name"] = source["tfds_name"]
            values["mnist_data_dir"] = source["tfds_data_dir"]
        recipe = cls(**values)
        recipe.check()
        return recipe

    def check(self) -> None:
        if not 4 <= self.min_object_size <= self.max_object_size <= self.image_size:
            raise ConfigError(
                f"pretrained.recipe object sizes {self.min_object_size}..{self.max_object_size} "
                f"must lie in 4..image_size ({self.image_size})."
            )
        if not 0.0 <= self.hide_prob < 1.0 or self.hide_grid < 1:
            raise ConfigError(
                f"pretrained.recipe: hide_prob={self.hide_prob} must lie in [0, 1) and "
                f"hide_grid={self.hide_grid} be >= 1."
            )
        if self.steps < 1 or self.batch_size < 1 or self.holdout < 1:
            raise ConfigError("pretrained.recipe: steps, batch_size and holdout must be >= 1.")

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TrunkClassifier(nn.Module):
    """AlexNetFeatures (conv1-5, no last pool) -> a head -> Dense: logits [N, num_classes].

    The head is global average pooling, or (fc_features > 0) WSDDN's: RoI max pooling of one
    box per image into 6x6 bins, then FC67. The `features` (and `fc67`) subtrees are what the
    jobs load.
    """

    width: float
    batch_norm: bool
    fc_features: int = 0
    dropout_rate: float = 0.1
    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, x: jax.Array, boxes: jax.Array, train: bool = False) -> jax.Array:
        """x: [N, H, W, 3]; boxes: [N, 4] (x1, y1, x2, y2) pixels, read by the RoI head only."""
        x = AlexNetFeatures(
            include_last_pool=False, width=self.width, batch_norm=self.batch_norm, name="features"
        )(x, train=train)
        if not self.fc_features:
            return nn.Dense(self.num_classes, name="fc")(jnp.mean(x, axis=(1, 2)))
        # AlexNet's fc6 input (6x6) at conv5's stride (16), as configs/wsddn.py
        pooled = jax.vmap(lambda f, b: roi_pool(f, b[None], 6, 1.0 / 16.0)[0])(x, boxes)
        x = FC67(self.dropout_rate, self.fc_features, name="fc67")(pooled, train=train)
        return nn.Dense(self.num_classes, name="fc")(x)


def object_boxes(sides: jax.Array, offsets: jax.Array) -> jax.Array:
    """[N, 4] (x1, y1, x2, y2) of the rendered squares (offsets are (y, x))."""
    y, x = offsets[:, 0], offsets[:, 1]
    return jnp.stack([x, y, x + sides, y + sides], axis=-1).astype(jnp.float32)


def draw_placements(
    rng: np.random.Generator, n: int, recipe: Recipe
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random placements of n objects: sides int32 [n], offsets int32 [n, 2] (y, x) keeping the
    object inside the canvas, flips bool [n]."""
    sides = rng.integers(recipe.min_object_size, recipe.max_object_size + 1, n).astype(np.int32)
    offsets = (rng.random((n, 2)) * (recipe.image_size - sides + 1)[:, None]).astype(np.int32)
    flips = rng.random(n) < 0.5
    return sides, offsets, flips


def draw_kept_cells(rng: np.random.Generator, n: int, recipe: Recipe) -> np.ndarray:
    """bool [n, hide_grid, hide_grid]: the grid cells left visible (hide-and-seek)."""
    return rng.random((n, recipe.hide_grid, recipe.hide_grid)) >= recipe.hide_prob


def render(
    images: jax.Array,
    sides: jax.Array,
    offsets: jax.Array,
    flips: jax.Array,
    image_size: int,
    kept: jax.Array | None = None,
) -> jax.Array:
    """Objects on black canvases, normalised like the scenes pipeline (jittable).

    images: uint8 [N, h, w]; sides: [N] pixels; offsets: [N, 2] (y, x) of the top-left corner;
    flips: bool [N], mirror left-right; kept: optional bool [N, g, g], the cells of a g x g grid
    over the canvas that stay visible (the others are black). Returns float32
    [N, image_size, image_size, 3]: bilinear upsampling (half-pixel centres, as
    cv2.INTER_LINEAR), then (x / 255 - mean) / std.
    """
    images = jnp.where(flips[:, None, None], images[:, :, ::-1], images).astype(jnp.float32)

    def one(image, side, offset):
        scale = side.astype(jnp.float32) / jnp.array(image.shape, jnp.float32)
        return jax.image.scale_and_translate(
            image, (image_size, image_size), (0, 1), scale, offset.astype(jnp.float32), "linear"
        )

    canvases = jax.vmap(one)(images, sides, offsets)
    if kept is not None:
        cell = np.arange(image_size) * kept.shape[1] // image_size  # pixel -> grid cell
        canvases = canvases * kept[:, cell][:, :, cell]
    return (canvases[..., None] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def _splits(recipe: Recipe) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, held-out images, held-out labels) of the source's train split."""
    images, labels = mnist.load(
        recipe.mnist_source, "train", folder=recipe.mnist_folder,
        tfds_name=recipe.mnist_tfds_name, data_dir=recipe.mnist_data_dir or None,
    )  # fmt: skip
    if len(images) <= recipe.holdout:
        raise DataError(
            f"{recipe.mnist_folder}: {len(images)} training images, need more than "
            f"pretrained.recipe.holdout={recipe.holdout}."
        )
    cut = len(images) - recipe.holdout
    return images[:cut], labels[:cut], images[cut:], labels[cut:]


def _model(recipe: Recipe) -> TrunkClassifier:
    return TrunkClassifier(recipe.width, recipe.batch_norm, recipe.fc_features, recipe.dropout_rate)


def train(
    recipe: Recipe, images: np.ndarray, labels: np.ndarray, *, progress: bool = True
) -> dict[str, Any]:
    """Trains the classifier; returns its variables {'params', ['batch_stats']} (NumPy)."""
    model = _model(recipe)
    dummy = jnp.zeros((1, recipe.image_size, recipe.image_size, 3), jnp.float32)
    init_rng, he_rng, dropout_rng = jax.random.split(jax.random.key(recipe.seed), 3)
    variables = dict(model.init(init_rng, dummy, jnp.zeros((1, 4))))
    params = he_init(variables.pop("params"), he_rng)  # as the scenes jobs' trunks from scratch
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, recipe.learning_rate, min(recipe.warmup_steps, recipe.steps - 1), recipe.steps
    )
    tx = optax.adam(schedule)

    @jax.jit
    def step(params, state, opt_state, batch, rng):
        x = render(
            batch["image"], batch["side"], batch["offset"], batch["flip"], recipe.image_size,
            batch["kept"],
        )  # fmt: skip

        def loss_fn(params):
            logits, new_state = model.apply(
                {"params": params, **state}, x, object_boxes(batch["side"], batch["offset"]),
                train=True, mutable=list(state), rngs={"dropout": rng},
            )  # fmt: skip
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
            return loss, new_state

        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss

    opt_state = tx.init(params)
    bar = tqdm(
        range(recipe.steps), desc="pretraining the trunk on Fashion-MNIST", disable=not progress
    )
    for i in bar:
        rng = np.random.default_rng([recipe.seed, i])
        index = rng.integers(0, len(images), recipe.batch_size)
        side, offset, flip = draw_placements(rng, recipe.batch_size, recipe)
        kept = draw_kept_cells(rng, recipe.batch_size, recipe)
        batch = {"image": images[index], "label": labels[index], "side": side, "offset": offset, "flip": flip, "kept": kept}  # fmt: skip
        key = jax.random.fold_in(dropout_rng, i)
        params, variables, opt_state, loss = step(params, variables, opt_state, batch, key)
        if i % 20 == 0 or i == recipe.steps - 1:
            bar.set_postfix(loss=f"{float(loss):.3f}")
    return jax.tree.map(np.asarray, {"params": params, **variables})


def accuracy(
    recipe: Recipe, variables: Mapping[str, Any], images: np.ndarray, labels: np.ndarray
) -> float:
    """Top-1 accuracy on `images` placed as in training (one fixed draw of the recipe's seed)."""
    model = _model(recipe)

    @jax.jit
    def predict(variables, batch):
        x = render(batch["image"], batch["side"], batch["offset"], batch["flip"], recipe.image_size)
        boxes = object_boxes(batch["side"], batch["offset"])
        return jnp.argmax(model.apply(variables, x, boxes, train=False), axis=-1)

    rng = np.random.default_rng([recipe.seed, 1 << 30])
    side, offset, flip = draw_placements(rng, len(images), recipe)
    # Padded with copies of the last image so every batch has one shape (one compilation).
    pad = -len(images) % _EVAL_BATCH
    inputs = {"image": images, "side": side, "offset": offset, "flip": flip}
    inputs = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in inputs.items()}
    predicted = np.concatenate([
        np.asarray(predict(variables, {k: v[i : i + _EVAL_BATCH] for k, v in inputs.items()}))
        for i in range(0, len(inputs["image"]), _EVAL_BATCH)
    ])  # fmt: skip
    correct = int(np.sum(predicted[: len(images)] == labels))
    return correct / len(images)


def make(recipe: Recipe, out_dir: str, *, progress: bool = True) -> dict[str, Any]:
    """Pretrains and writes out_dir (variables.msgpack + meta.json). Returns the meta written."""
    start = time.time()
    train_images, train_labels, held_images, held_labels = _splits(recipe)
    variables = train(recipe, train_images, train_labels, progress=progress)
    acc = accuracy(recipe, variables, held_images, held_labels)
    trunk = {
        name: {k: tree[k] for k in ("features", "fc67") if k in tree}
        for name, tree in variables.items()
    }
    leaves = jax.tree.leaves(trunk)
    meta = {
        "format": store.FORMAT,
        "arch": "alexnet",
        "num_classes": None,  # the trunk only: the 10-way head stays behind
        "recipe": "fashion_mnist",
        "settings": recipe.settings(),
        "source": f"{recipe.mnist_source}:{recipe.mnist_folder} train[:{len(train_images)}]",
        "steps": recipe.steps,
        "holdout_accuracy": acc,
        "seconds": round(time.time() - start, 1),
        "num_arrays": len(leaves),
        "num_values": int(sum(leaf.size for leaf in leaves)),
    }
    store.save_variables(trunk, out_dir, meta)
    logging.info("pretrained trunk written to %s: held-out accuracy %.4f", out_dir, acc)
    return meta


def read_meta(path: str) -> dict[str, Any] | None:
    """meta.json of a weights folder, or None when it is missing or not JSON."""
    try:
        with open(os.path.join(path, store.META_FILE)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def made_by_recipe(path: str) -> bool:
    """Whether the folder holds weights made here (not ported torchvision ones)."""
    return (read_meta(path) or {}).get("recipe") in RECIPES


def _stale(path: str, recipe: Recipe) -> str | None:
    """Why the folder cannot serve `recipe` ('' when it can), for the rebuild log line."""
    meta = read_meta(path)
    if meta is None:
        return "no readable meta.json"
    if meta.get("recipe") != "fashion_mnist" or meta.get("settings") != recipe.settings():
        return "made with other settings"
    try:
        store.load_variables(path, "alexnet")
    except DataError as e:
        return str(e)
    return ""


def ensure(pretrained: Mapping[str, Any], *, progress: bool = True) -> str:
    """The folder `config.pretrained` names, made by its recipe when missing, damaged or made
    with other settings (an existing folder of ported weights is an error, never overwritten).
    Returns the folder (user home expanded)."""
    if pretrained["make"] not in RECIPES:
        raise ConfigError(
            f"pretrained.make={pretrained['make']!r}; expected '' or one of {RECIPES}."
        )
    if "recipe" not in pretrained:
        raise ConfigError(
            "pretrained.make needs a pretrained.recipe section: build the pretrained section with "
            "configs/common.py fashion_mnist_pretrained."
        )
    recipe = Recipe.from_config(pretrained["recipe"])
    path = os.path.expanduser(pretrained["path"])
    why = _stale(path, recipe) if os.path.exists(path) else "missing"
    if not why:
        return path
    if os.path.exists(path) and read_meta(path) and not made_by_recipe(path):
        raise ConfigError(
            f"pretrained.path={path!r} holds other weights; pretrained.make={pretrained['make']!r} "
            "would overwrite them. Point pretrained.path at another folder."
        )
    if jax.process_count() > 1:
        raise ConfigError(
            f"pretrained.path={path!r} is {why}: make it once in a single process first "
            "(python -m jwsol.weights.pretrain CONFIG) on a folder every host sees."
        )
    logging.info("pretrained trunk %s is %s: making it (%s)", path, why, pretrained["make"])
    make(recipe, path, progress=progress)
    return path


def _typed_override(item: str) -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', value as a Python literal, else the string)."""
    key, _, text = item.partition("=")
    try:
        return key, ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return key, text


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or not all("=" in a for a in argv[1:]):
        print(
            "usage: python -m jwsol.weights.pretrain configs/NAME.py[:VARIANT] [field=value ...]"
            "  (e.g. pretrained.recipe.steps=600)",
            file=sys.stderr,
        )
        return 2
    try:
        from jwsol.training import config as config_lib

        overrides = dict(_typed_override(a) for a in argv[1:])
        pretrained = config_lib.load(argv[0], overrides).pretrained
        if not pretrained.get("make"):
            raise ConfigError(f"{argv[0]}: pretrained.make is empty; no recipe to run.")
        path = ensure(pretrained)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = read_meta(path)
    print(f"{path}: held-out accuracy {meta['holdout_accuracy']:.4f}, {meta['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
