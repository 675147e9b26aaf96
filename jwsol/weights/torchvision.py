"""torchvision state_dicts -> Flax variables for jwsol.models.alexnet / vgg / resnet, by tables.

Each table row says which torch key fills which Flax path and how the array is rearranged:

    conv    Conv2d weight OIHW -> kernel HWIO            transpose(2, 3, 1, 0)
    linear  Linear weight [out, in] -> kernel [in, out]  transpose
    fc6     AlexNet classifier.1 weight, permuted once so an NHWC flatten of the 6x6x256 pool
            matches torch's NCHW flatten: W.reshape(4096, 256, 6, 6).transpose(2, 3, 1, 0)
            .reshape(9216, 4096)
    vgg_fc6 VGG16 classifier.0 weight, the same permutation for the 7x7x512 pool:
            W.reshape(4096, 512, 7, 7).transpose(2, 3, 1, 0).reshape(25088, 4096)
    copy    biases, BatchNorm weight/bias -> params scale/bias, running_mean/var -> batch_stats
    ignore  BatchNorm num_batches_tracked (allowed to be absent, as in older checkpoints)

Every key of the state_dict must be used and every leaf of the model's `init` tree filled with
the same shape, otherwise a DataError names the key or path.

Convert once (needs torch, imported only here and lazily):

    python -m jwsol.weights.torchvision --arch resnet50 --pth resnet50-0676ba61.pth --out DIR
    python -m jwsol.weights.torchvision --arch vgg16 --pth vgg16-397923af.pth --out DIR

DIR then holds the files of `jwsol.weights.store`; `load_pretrained(DIR, arch)` reads them without
torch and checks every shape against the model; `jwsol.weights.merge` puts them into a model.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jwsol.errors import DataError, UserError
from jwsol.models.alexnet import AlexNet
from jwsol.models.resnet import STAGE_SIZES, ResNet
from jwsol.models.vgg import VGG16
from jwsol.weights import store
from jwsol.weights.store import ARCHS, URLS, VARIABLES_FILE

RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50}
# Flax subtree of each arch's classifier (dropped with drop_classifier=True).
CLASSIFIER = {"alexnet": "params/fc8", "vgg16": "params/fc8"}
CLASSIFIER.update({a: "params/fc" for a in RESNET_DEPTHS})


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a port table: torch key -> Flax path ('collection/module/.../leaf')."""

    torch_key: str
    flax_path: str  # empty for 'ignore'
    transform: str  # 'conv' | 'linear' | 'fc6' | 'vgg_fc6' | 'copy' | 'ignore'


ALEXNET_TABLE = (
    Row("features.0.weight", "params/features/conv1/kernel", "conv"),
    Row("features.0.bias", "params/features/conv1/bias", "copy"),
    Row("features.3.weight", "params/features/conv2/kernel", "conv"),
    Row("features.3.bias", "params/features/conv2/bias", "copy"),
    Row("features.6.weight", "params/features/conv3/kernel", "conv"),
    Row("features.6.bias", "params/features/conv3/bias", "copy"),
    Row("features.8.weight", "params/features/conv4/kernel", "conv"),
    Row("features.8.bias", "params/features/conv4/bias", "copy"),
    Row("features.10.weight", "params/features/conv5/kernel", "conv"),
    Row("features.10.bias", "params/features/conv5/bias", "copy"),
    Row("classifier.1.weight", "params/fc67/fc6/kernel", "fc6"),
    Row("classifier.1.bias", "params/fc67/fc6/bias", "copy"),
    Row("classifier.4.weight", "params/fc67/fc7/kernel", "linear"),
    Row("classifier.4.bias", "params/fc67/fc7/bias", "copy"),
    Row("classifier.6.weight", "params/fc8/kernel", "linear"),
    Row("classifier.6.bias", "params/fc8/bias", "copy"),
)

VGG16_TABLE = (
    Row("features.0.weight", "params/features/conv1_1/kernel", "conv"),
    Row("features.0.bias", "params/features/conv1_1/bias", "copy"),
    Row("features.2.weight", "params/features/conv1_2/kernel", "conv"),
    Row("features.2.bias", "params/features/conv1_2/bias", "copy"),
    Row("features.5.weight", "params/features/conv2_1/kernel", "conv"),
    Row("features.5.bias", "params/features/conv2_1/bias", "copy"),
    Row("features.7.weight", "params/features/conv2_2/kernel", "conv"),
    Row("features.7.bias", "params/features/conv2_2/bias", "copy"),
    Row("features.10.weight", "params/features/conv3_1/kernel", "conv"),
    Row("features.10.bias", "params/features/conv3_1/bias", "copy"),
    Row("features.12.weight", "params/features/conv3_2/kernel", "conv"),
    Row("features.12.bias", "params/features/conv3_2/bias", "copy"),
    Row("features.14.weight", "params/features/conv3_3/kernel", "conv"),
    Row("features.14.bias", "params/features/conv3_3/bias", "copy"),
    Row("features.17.weight", "params/features/conv4_1/kernel", "conv"),
    Row("features.17.bias", "params/features/conv4_1/bias", "copy"),
    Row("features.19.weight", "params/features/conv4_2/kernel", "conv"),
    Row("features.19.bias", "params/features/conv4_2/bias", "copy"),
    Row("features.21.weight", "params/features/conv4_3/kernel", "conv"),
    Row("features.21.bias", "params/features/conv4_3/bias", "copy"),
    Row("features.24.weight", "params/features/conv5_1/kernel", "conv"),
    Row("features.24.bias", "params/features/conv5_1/bias", "copy"),
    Row("features.26.weight", "params/features/conv5_2/kernel", "conv"),
    Row("features.26.bias", "params/features/conv5_2/bias", "copy"),
    Row("features.28.weight", "params/features/conv5_3/kernel", "conv"),
    Row("features.28.bias", "params/features/conv5_3/bias", "copy"),
    Row("classifier.0.weight", "params/fc67/fc6/kernel", "vgg_fc6"),
    Row("classifier.0.bias", "params/fc67/fc6/bias", "copy"),
    Row("classifier.3.weight", "params/fc67/fc7/kernel", "linear"),
    Row("classifier.3.bias", "params/fc67/fc7/bias", "copy"),
    Row("classifier.6.weight", "params/fc8/kernel", "linear"),
    Row("classifier.6.bias", "params/fc8/bias", "copy"),
)


def _conv_rows(torch_module: str, flax_module: str) -> list[Row]:
    """A bias-free torch Conv2d (ResNet) -> Flax Conv kernel."""
    return [Row(f"{torch_module}.weight", f"params/{flax_module}/kernel", "conv")]


def _bn_rows(torch_module: str, flax_module: str) -> list[Row]:
    """torch BatchNorm2d -> Flax BatchNorm: affine in params, running stats in batch_stats."""
    return [
        Row(f"{torch_module}.weight", f"params/{flax_module}/scale", "copy"),
        Row(f"{torch_module}.bias", f"params/{flax_module}/bias", "copy"),
        Row(f"{torch_module}.running_mean", f"batch_stats/{flax_module}/mean", "copy"),
        Row(f"{torch_module}.running_var", f"batch_stats/{flax_module}/var", "copy"),
        Row(f"{torch_module}.num_batches_tracked", "", "ignore"),
    ]


def resnet_table(depth: int) -> tuple[Row, ...]:
    """The port table of torchvision resnet{depth}: stem, every block of layer1..4, fc."""
    if depth not in STAGE_SIZES:
        raise UserError(f"ResNet depth {depth!r}: expected one of {sorted(STAGE_SIZES)}")
    block, sizes = STAGE_SIZES[depth]
    convs = ("conv1", "conv2") if block == "basic" else ("conv1", "conv2", "conv3")
    rows = _conv_rows("conv1", "conv1") + _bn_rows("bn1", "bn1")
    for stage, num_blocks in enumerate(sizes, start=1):
        for j in range(num_blocks):
            torch_block, flax_block = f"layer{stage}.{j}", f"layer{stage}/block{j}"
            for k, conv in enumerate(convs, start=1):
                rows += _conv_rows(f"{torch_block}.{conv}", f"{flax_block}/{conv}")
                rows += _bn_rows(f"{torch_block}.bn{k}", f"{flax_block}/bn{k}")
            # Only the first block of a stage changes shape; torchvision gives it `downsample`
            # except in layer1 of the basic-block nets (64 -> 64 channels, stride 1).
            if j == 0 and (stage > 1 or block == "bottleneck"):
                rows += _conv_rows(f"{torch_block}.downsample.0", f"{flax_block}/downsample_conv")
                rows += _bn_rows(f"{torch_block}.downsample.1", f"{flax_block}/downsample_bn")
    rows += [
        Row("fc.weight", "params/fc/kernel", "linear"),
        Row("fc.bias", "params/fc/bias", "copy"),
    ]
    return tuple(rows)


# fc6 transform -> (channels, side) of the pooled map its torch weight flattens (NCHW order).
FC6_INPUTS = {"fc6": (256, 6), "vgg_fc6": (512, 7)}


def _fc6_permute(w: np.ndarray, channels: int = 256, side: int = 6) -> np.ndarray:
    """torch fc6 [out, C*s*s] (NCHW flatten) -> kernel [s*s*C, out] (NHWC flatten)."""
    out = w.shape[0]
    return w.reshape(out, channels, side, side).transpose(2, 3, 1, 0).reshape(-1, out)


_TRANSFORMS: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    # transform -> (rank the torch array must have, rearrangement)
    "conv": (4, lambda w: w.transpose(2, 3, 1, 0)),
    "linear": (2, lambda w: w.T),
    **{
        name: (2, functools.partial(_fc6_permute, channels=c, side=s))
        for name, (c, s) in FC6_INPUTS.items()
    },
    "copy": (1, lambda w: w),
}


def _listing(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _expected_shapes(arch: str, num_classes: int) -> dict[str, jax.ShapeDtypeStruct]:
    """'collection/.../leaf' -> shape/dtype of the jwsol model's `init` tree (traced, no FLOPs)."""
    if arch == "alexnet":
        model, size = AlexNet(num_classes=num_classes), 224
    elif arch == "vgg16":
        model, size = VGG16(num_classes=num_classes), 32  # any size: the avgpool makes 7x7
    else:
        model, size = ResNet(depth=RESNET_DEPTHS[arch], num_classes=num_classes), 64
    dummy = jnp.zeros((1, size, size, 3), jnp.float32)
    tree = jax.eval_shape(model.init, jax.random.key(0), dummy)
    return traverse_util.flatten_dict(tree, sep="/")


def _in_classifier(path: str, arch: str) -> bool:
    """Whether the flat path 'collection/module/.../leaf' belongs to `arch`'s classifier."""
    return path.startswith(CLASSIFIER[arch] + "/")


def port_state_dict(
    state_dict: Mapping[str, Any],
    table: Sequence[Row],
    expected: Mapping[str, jax.ShapeDtypeStruct],
    what: str,
) -> dict[str, Any]:
    """Applies a port table; checks every key used and every expected leaf filled.

    state_dict: torch key -> tensor/array. expected: Flax path -> shape/dtype (from `init`).
    what: names the source in error messages. Returns nested {'params': ..., ...} of NumPy arrays.
    """
    known = {row.torch_key for row in table}
    unexpected = sorted(k for k in state_dict if k not in known)
    missing = [
        r.torch_key for r in table if r.transform != "ignore" and r.torch_key not in state_dict
    ]
    if unexpected or missing:
        parts = [f"missing keys: {_listing(missing)}"] if missing else []
        parts += [f"unexpected keys: {_listing(unexpected)}"] if unexpected else []
        raise DataError(f"{what}: state_dict does not match the port table; " + "; ".join(parts))
    flat = {}
    for row in table:
        if row.transform == "ignore":
            continue
        value = store.to_numpy(state_dict[row.torch_key])
        rank, rearrange = _TRANSFORMS[row.transform]
        channels, side = FC6_INPUTS.get(row.transform, (0, 0))
        inputs = f" with {channels * side * side} inputs" if channels else ""
        if value.ndim != rank or (channels and value.shape[1] != channels * side * side):
            raise DataError(
                f"{what}: {row.torch_key} has shape {tuple(value.shape)}, expected a rank-{rank} "
                f"{row.transform} array{inputs}"
            )
        value = rearrange(value)
        if row.flax_path not in expected:
            raise DataError(f"{what}: {row.torch_key} maps to {row.flax_path}, not in the model")
        want = expected[row.flax_path]
        if tuple(value.shape) != tuple(want.shape):
            raise DataError(
                f"{what}: {row.torch_key} -> {row.flax_path} has shape {tuple(value.shape)} after "
                f"{row.transform}, the model wants {tuple(want.shape)}"
            )
        flat[row.flax_path] = np.ascontiguousarray(value, dtype=want.dtype)
    unfilled = sorted(p for p in expected if p not in flat)
    if unfilled:
        raise DataError(f"{what}: model leaves not filled by the table: {_listing(unfilled)}")
    return traverse_util.unflatten_dict(flat, sep="/")


def _port(
    state_dict: Mapping[str, Any],
    arch: str,
    table: Sequence[Row],
    classifier_key: str,
    drop_classifier: bool,
    what: str,
) -> dict[str, Any]:
    if drop_classifier:
        # The classifier keys become optional and unused; the model is built without them.
        table = [
            Row(r.torch_key, "", "ignore") if _in_classifier(r.flax_path, arch) else r
            for r in table
        ]
        num_classes = 1
    elif classifier_key in state_dict:
        num_classes = int(store.to_numpy(state_dict[classifier_key]).shape[0])
    else:
        num_classes = 1  # the key check in port_state_dict reports it missing
    expected = _expected_shapes(arch, num_classes)
    if drop_classifier:
        expected = {p: s for p, s in expected.items() if not _in_classifier(p, arch)}
    return port_state_dict(state_dict, table, expected, f"{what} ({arch})")


def alexnet_from_torch(
    state_dict: Mapping[str, Any], *, drop_classifier: bool = False, what: str = "state_dict"
) -> dict[str, Any]:
    """torchvision AlexNet state_dict -> variables of `jwsol.models.alexnet.AlexNet`.

    Returns {'params': {'features': {conv1..conv5}, 'fc67': {fc6, fc7}, 'fc8': ...}} (NumPy);
    num_classes of fc8 follows the checkpoint. drop_classifier: leave fc8 out (its keys are
    ignored), for a model with another number of classes or without fc8.
    """
    return _port(state_dict, "alexnet", ALEXNET_TABLE, "classifier.6.weight", drop_classifier, what)


def vgg16_from_torch(
    state_dict: Mapping[str, Any], *, drop_classifier: bool = False, what: str = "state_dict"
) -> dict[str, Any]:
    """torchvision vgg16 state_dict -> variables of `jwsol.models.vgg.VGG16`.

    Returns {'params': {'features': {conv1_1..conv5_3}, 'fc67': {fc6, fc7}, 'fc8': ...}} (NumPy);
    num_classes of fc8 follows the checkpoint. drop_classifier: leave fc8 out (its keys ignored).
    """
    return _port(state_dict, "vgg16", VGG16_TABLE, "classifier.6.weight", drop_classifier, what)


def resnet_from_torch(
    state_dict: Mapping[str, Any],
    depth: int,
    *,
    drop_classifier: bool = False,
    what: str = "state_dict",
) -> dict[str, Any]:
    """torchvision resnet{depth} state_dict -> variables of `ResNet(depth=depth)`.

    Returns {'params': ..., 'batch_stats': ...} (NumPy); fc follows the checkpoint's classes.
    drop_classifier: leave fc out (its keys are ignored).
    """
    table = resnet_table(depth)
    return _port(state_dict, f"resnet{depth}", table, "fc.weight", drop_classifier, what)


def from_torch(
    state_dict: Mapping[str, Any],
    arch: str,
    *,
    drop_classifier: bool = False,
    what: str = "state_dict",
) -> dict[str, Any]:
    """Dispatches on arch: 'alexnet', 'vgg16', 'resnet18', 'resnet34' or 'resnet50'."""
    if arch == "alexnet":
        return alexnet_from_torch(state_dict, drop_classifier=drop_classifier, what=what)
    if arch == "vgg16":
        return vgg16_from_torch(state_dict, drop_classifier=drop_classifier, what=what)
    if arch in RESNET_DEPTHS:
        depth = RESNET_DEPTHS[arch]
        return resnet_from_torch(state_dict, depth, drop_classifier=drop_classifier, what=what)
    raise UserError(f"arch {arch!r}: expected one of {', '.join(ARCHS)}")


def _num_classes(variables: Mapping[str, Any], arch: str) -> int | None:
    flat = traverse_util.flatten_dict(variables, sep="/")
    bias = flat.get(CLASSIFIER[arch] + "/bias")
    return None if bias is None else int(bias.shape[0])


def convert(pth: str, arch: str, out_dir: str, *, drop_classifier: bool = False) -> dict[str, Any]:
    """.pth -> out_dir (variables.msgpack + meta.json). Returns the meta written."""
    if arch not in URLS:
        raise UserError(f"--arch {arch!r}: expected one of {', '.join(ARCHS)}")
    state_dict, sha256 = store.load_torch_state_dict(pth)
    variables = from_torch(state_dict, arch, drop_classifier=drop_classifier, what=pth)
    leaves = jax.tree.leaves(variables)
    meta = {
        "format": store.FORMAT,
        "arch": arch,
        "num_classes": _num_classes(variables, arch),
        "source": os.path.basename(pth),
        "source_sha256": sha256,
        "num_arrays": len(leaves),
        "num_values": int(sum(leaf.size for leaf in leaves)),
    }
    store.save_variables(variables, out_dir, meta)
    return meta


def load_pretrained(path: str, arch: str, *, drop_classifier: bool = False) -> dict[str, Any]:
    """Reads a folder written by the conversion command (no torch needed) -> variables.

    path: the folder (or its variables.msgpack). Checks the arch recorded in meta.json and that
    every array has the shape of the jwsol model's `init`. drop_classifier: leave out fc8 / fc.
    Returns nested dicts of NumPy float32 arrays ({'params'[, 'batch_stats']}).
    """
    variables, meta, variables_path = store.load_variables(path, arch)
    flat = traverse_util.flatten_dict(variables, sep="/")
    num_classes = meta.get("num_classes")
    expected = _expected_shapes(arch, num_classes or 1)
    if num_classes is None or drop_classifier:
        expected = {p: s for p, s in expected.items() if not _in_classifier(p, arch)}
        flat = {p: v for p, v in flat.items() if not _in_classifier(p, arch)}
    wrong = [
        f"{p} {tuple(flat[p].shape) if p in flat else 'missing'} (want {tuple(s.shape)})"
        for p, s in expected.items()
        if p not in flat or tuple(flat[p].shape) != tuple(s.shape)
    ]
    wrong += [f"{p} (not in the model)" for p in flat if p not in expected]
    if wrong:
        raise DataError(f"{variables_path}: does not fit {arch}: {_listing(sorted(wrong))}")
    return traverse_util.unflatten_dict(flat, sep="/")


def main(argv: Sequence[str] | None = None) -> int:
    from jwsol import errors  # one-line failures, --verbose

    parser = errors.ArgumentParser(
        prog="python -m jwsol.weights.torchvision",
        description="Convert a torchvision .pth state_dict into a folder jwsol loads without torch.",
    )
    parser.add_argument("--arch", required=True, choices=ARCHS)
    parser.add_argument(
        "--pth", required=True, help="torchvision checkpoint, e.g. " + URLS["alexnet"]
    )
    parser.add_argument("--out", required=True, help="output folder (variables.msgpack, meta.json)")
    parser.add_argument("--drop-classifier", action="store_true", help="leave out fc8 / fc")
    args = parser.parse_args(argv)

    def body() -> None:
        meta = convert(args.pth, args.arch, args.out, drop_classifier=args.drop_classifier)
        print(
            f"wrote {os.path.join(args.out, VARIABLES_FILE)}: {args.arch}, "
            f"{meta['num_arrays']} arrays, {meta['num_values']:,} values, "
            f"num_classes={meta['num_classes']}"
        )

    return errors.run_main(body, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
