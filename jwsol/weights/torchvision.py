"""torchvision state_dicts -> Flax variables for jwsol.models.alexnet / resnet, through explicit tables.

Each table row says which torch key fills which Flax path and how the array is rearranged:

    conv    Conv2d weight OIHW -> kernel HWIO            transpose(2, 3, 1, 0)
    linear  Linear weight [out, in] -> kernel [in, out]  transpose
    fc6     AlexNet classifier.1 weight, permuted once so an NHWC flatten of the 6x6x256 pool
            matches torch's NCHW flatten: W.reshape(4096, 256, 6, 6).transpose(2, 3, 1, 0)
            .reshape(9216, 4096)
    copy    biases, BatchNorm weight/bias -> params scale/bias, running_mean/var -> batch_stats
    ignore  BatchNorm num_batches_tracked (allowed to be absent, as in older checkpoints)

Every key of the state_dict must be used and every leaf of the model's `init` tree filled with
the same shape, otherwise a DataError names the key or path.

Convert once (needs torch, imported only here and lazily):

    python -m jwsol.weights.torchvision --arch resnet50 --pth resnet50-0676ba61.pth --out DIR

DIR then holds `variables.msgpack` (flax.serialization msgpack of {'params': ..., 'batch_stats':
...}, float32) and `meta.json`; `load_pretrained(DIR, arch)` reads them without torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jwsol.errors import DataError, UserError
from jwsol.models.alexnet import AlexNet
from jwsol.models.resnet import STAGE_SIZES, ResNet

VARIABLES_FILE = "variables.msgpack"
META_FILE = "meta.json"
FORMAT = "flax.serialization.msgpack"

# torchvision's pretrained models expect RGB in [0, 1] normalised with these (per channel).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

URLS = {
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}
ARCHS = tuple(URLS)
TORCHVISION_FILES = {os.path.basename(url): arch for arch, url in URLS.items()}
RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50}
# Flax subtree of each arch's classifier (dropped with drop_classifier=True).
CLASSIFIER = {"alexnet": "params/fc8", **{a: "params/fc" for a in RESNET_DEPTHS}}


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a port table: torch key -> Flax path ('collection/module/.../leaf')."""

    torch_key: str
    flax_path: str  # empty for 'ignore'
    transform: str  # 'conv' | 'linear' | 'fc6' | 'copy' | 'ignore'


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


def _fc6_permute(w: np.ndarray) -> np.ndarray:
    """torch fc6 [out, 256*6*6] (NCHW flatten) -> kernel [6*6*256, out] (NHWC flatten)."""
    out = w.shape[0]
    return w.reshape(out, 256, 6, 6).transpose(2, 3, 1, 0).reshape(256 * 6 * 6, out)


_TRANSFORMS: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    # transform -> (rank the torch array must have, rearrangement)
    "conv": (4, lambda w: w.transpose(2, 3, 1, 0)),
    "linear": (2, lambda w: w.T),
    "fc6": (2, _fc6_permute),
    "copy": (1, lambda w: w),
}


def _to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (without importing torch) or array-like -> NumPy."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # NumPy has no bfloat16; the Flax params are float32 anyway
        value = value.numpy()
    return np.asarray(value)


def _listing(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _expected_shapes(arch: str, num_classes: int) -> dict[str, jax.ShapeDtypeStruct]:
    """'collection/.../leaf' -> shape/dtype of the jwsol model's `init` tree (traced, no FLOPs)."""
    if arch == "alexnet":
        model, size = AlexNet(num_classes=num_classes), 224
    else:
        model, size = ResNet(depth=RESNET_DEPTHS[arch], num_classes=num_classes), 64
    dummy = jnp.zeros((1, size, size, 3), jnp.float32)
    tree = jax.eval_shape(model.init, jax.random.key(0), dummy)
    return traverse_util.flatten_dict(tree, sep="/")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


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
        value = _to_numpy(state_dict[row.torch_key])
        rank, rearrange = _TRANSFORMS[row.transform]
        if value.ndim != rank or (row.transform == "fc6" and value.shape[1] != 256 * 6 * 6):
            raise DataError(
                f"{what}: {row.torch_key} has shape {tuple(value.shape)}, expected a rank-{rank} "
                f"{row.transform} array" + (" with 9216 inputs" if row.transform == "fc6" else "")
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
    classifier = CLASSIFIER[arch]
    if drop_classifier:
        # The classifier keys become optional and unused; the model is built without them.
        table = [
            Row(r.torch_key, "", "ignore") if _under(r.flax_path, classifier) else r for r in table
        ]
        num_classes = 1
    elif classifier_key in state_dict:
        num_classes = int(_to_numpy(state_dict[classifier_key]).shape[0])
    else:
        num_classes = 1  # the key check in port_state_dict reports it missing
    expected = _expected_shapes(arch, num_classes)
    if drop_classifier:
        expected = {p: s for p, s in expected.items() if not _under(p, classifier)}
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
    """Dispatches on arch: 'alexnet', 'resnet18', 'resnet34' or 'resnet50'."""
    if arch == "alexnet":
        return alexnet_from_torch(state_dict, drop_classifier=drop_classifier, what=what)
    if arch in RESNET_DEPTHS:
        depth = RESNET_DEPTHS[arch]
        return resnet_from_torch(state_dict, depth, drop_classifier=drop_classifier, what=what)
    raise UserError(f"arch {arch!r}: expected one of {', '.join(ARCHS)}")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _conversion_hint(arch: str, out: str) -> str:
    url = URLS[arch]
    return (
        f"Download {url} on a machine with internet, then convert it once with "
        f"`python -m jwsol.weights.torchvision --arch {arch} --pth {os.path.basename(url)} "
        f"--out {out}` (needs torch; the converted folder loads without it)."
    )


def load_torch_state_dict(path: str) -> tuple[dict[str, np.ndarray], str]:
    """Reads a .pth state_dict with torch (imported here only). Returns (state_dict, sha256).

    A file carrying a torchvision download name (e.g. resnet18-f37072fd.pth) must have the
    SHA-256 its name starts, so a truncated download is caught here.
    """
    if not os.path.isfile(path):
        arch = TORCHVISION_FILES.get(os.path.basename(path))
        hint = _conversion_hint(arch, "DIR") if arch else "Get one from " + ", ".join(URLS.values())
        raise DataError(f"torch checkpoint {path} not found. {hint}")
    sha256 = _sha256(path)
    name = os.path.basename(path)
    if name in TORCHVISION_FILES:
        # torchvision names embed the start of the file's SHA-256 (torch.hub's check_hash).
        expected = re.search(r"-([0-9a-f]{8,})\.pth$", name).group(1)
        if not sha256.startswith(expected):
            raise DataError(
                f"{path}: SHA-256 {sha256[:12]}... does not start with {expected} as the "
                "torchvision file name says; the download is corrupt or incomplete, fetch it again"
            )
    try:
        import torch
    except ImportError as e:
        raise UserError(
            "converting a .pth needs torch (`pip install torch`, the CPU wheel is enough)"
        ) from e
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several unpickling error types
        raise DataError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(loaded, Mapping) or not all(hasattr(v, "detach") for v in loaded.values()):
        keys = list(loaded)[:8] if isinstance(loaded, Mapping) else type(loaded).__name__
        raise DataError(f"{path}: expected a state_dict of tensors, found {keys}")
    return {k: _to_numpy(v) for k, v in loaded.items()}, sha256


def _num_classes(variables: Mapping[str, Any], arch: str) -> int | None:
    flat = traverse_util.flatten_dict(variables, sep="/")
    bias = flat.get(CLASSIFIER[arch] + "/bias")
    return None if bias is None else int(bias.shape[0])


def save_variables(variables: Mapping[str, Any], out_dir: str, meta: Mapping[str, Any]) -> None:
    """Writes out_dir/variables.msgpack and out_dir/meta.json (each atomically)."""
    os.makedirs(out_dir, exist_ok=True)
    host = jax.tree.map(np.asarray, dict(variables))
    for name, payload in (
        (VARIABLES_FILE, flax.serialization.msgpack_serialize(host)),
        (META_FILE, (json.dumps(dict(meta), indent=2, sort_keys=True) + "\n").encode()),
    ):
        tmp = os.path.join(out_dir, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(payload)
        os.replace(tmp, os.path.join(out_dir, name))


def convert(pth: str, arch: str, out_dir: str, *, drop_classifier: bool = False) -> dict[str, Any]:
    """.pth -> out_dir (variables.msgpack + meta.json). Returns the meta written."""
    if arch not in URLS:
        raise UserError(f"--arch {arch!r}: expected one of {', '.join(ARCHS)}")
    state_dict, sha256 = load_torch_state_dict(pth)
    variables = from_torch(state_dict, arch, drop_classifier=drop_classifier, what=pth)
    leaves = jax.tree.leaves(variables)
    meta = {
        "format": FORMAT,
        "arch": arch,
        "num_classes": _num_classes(variables, arch),
        "source": os.path.basename(pth),
        "source_sha256": sha256,
        "num_arrays": len(leaves),
        "num_values": int(sum(leaf.size for leaf in leaves)),
    }
    save_variables(variables, out_dir, meta)
    return meta


def load_pretrained(path: str, arch: str, *, drop_classifier: bool = False) -> dict[str, Any]:
    """Reads a folder written by the conversion command (no torch needed) -> variables.

    path: the folder (or its variables.msgpack). Checks the arch recorded in meta.json and that
    every array has the shape of the jwsol model's `init`. drop_classifier: leave out fc8 / fc.
    Returns nested dicts of NumPy float32 arrays ({'params'[, 'batch_stats']}).
    """
    if arch not in URLS:
        raise UserError(f"pretrained arch {arch!r}: expected one of {', '.join(ARCHS)}")
    folder = os.path.dirname(path) if path.endswith(VARIABLES_FILE) else path
    if path.endswith(".pth") and os.path.isfile(path):
        raise DataError(
            f"{path} is a torch checkpoint; convert it first. {_conversion_hint(arch, 'DIR')}"
        )
    variables_path, meta_path = (
        os.path.join(folder, VARIABLES_FILE),
        os.path.join(folder, META_FILE),
    )
    if not os.path.isfile(variables_path) or not os.path.isfile(meta_path):
        raise DataError(
            f"pretrained {arch} weights not found: {folder} has no {VARIABLES_FILE} + {META_FILE}. "
            + _conversion_hint(arch, folder)
        )
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("arch") != arch or meta.get("format") != FORMAT:
        raise DataError(
            f"{meta_path}: holds arch={meta.get('arch')!r} format={meta.get('format')!r}, "
            f"expected arch={arch!r} format={FORMAT!r}"
        )
    with open(variables_path, "rb") as f:
        try:
            variables = flax.serialization.msgpack_restore(f.read())
        except Exception as e:  # msgpack raises several error types on a damaged file
            raise DataError(
                f"{variables_path}: unreadable ({type(e).__name__}: {e}); convert again"
            ) from e
    flat = traverse_util.flatten_dict(variables, sep="/")
    num_classes = meta.get("num_classes")
    expected = _expected_shapes(arch, num_classes or 1)
    classifier = CLASSIFIER[arch]
    if num_classes is None or drop_classifier:
        expected = {p: s for p, s in expected.items() if not _under(p, classifier)}
        flat = {p: v for p, v in flat.items() if not _under(p, classifier)}
    wrong = [
        f"{p} {tuple(flat[p].shape) if p in flat else 'missing'} (want {tuple(s.shape)})"
        for p, s in expected.items()
        if p not in flat or tuple(flat[p].shape) != tuple(s.shape)
    ]
    wrong += [f"{p} (not in the model)" for p in flat if p not in expected]
    if wrong:
        raise DataError(f"{variables_path}: does not fit {arch}: {_listing(sorted(wrong))}")
    return traverse_util.unflatten_dict(flat, sep="/")


@dataclasses.dataclass
class MergeReport:
    """Which subtrees ('collection/module/...', collapsed as far as possible) came from where."""

    loaded: list[str]  # target subtrees filled from the checkpoint
    kept_init: list[str]  # target subtrees that keep their fresh initialisation
    unused: list[str]  # checkpoint subtrees the target has no place for (or excluded)

    def __str__(self) -> str:
        return "\n".join(
            f"{title} ({len(items)}): {', '.join(items) or '-'}"
            for title, items in (
                ("from checkpoint", self.loaded),
                ("kept init", self.kept_init),
                ("unused checkpoint", self.unused),
            )
        )


def _collapse(chosen: set[str], all_paths: Sequence[str]) -> list[str]:
    """Smallest set of subtree prefixes covering exactly `chosen` among `all_paths` leaves."""
    total: dict[str, int] = {}
    hit: dict[str, int] = {}
    for path in all_paths:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            total[prefix] = total.get(prefix, 0) + 1
            hit[prefix] = hit.get(prefix, 0) + (path in chosen)
    full = {p for p in total if hit[p] == total[p] and hit[p] > 0}
    return sorted(p for p in full if "/" not in p or p.rsplit("/", 1)[0] not in full)


def _rename(path: str, rename: Mapping[str, str]) -> str:
    for old in sorted(rename, key=len, reverse=True):
        if _under(path, old):
            return rename[old] + path[len(old) :]
    return path


def merge_pretrained(
    init_variables: Mapping[str, Any],
    pretrained: Mapping[str, Any],
    *,
    exclude: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], MergeReport]:
    """Fills freshly initialised variables from a checkpoint where the paths match.

    init_variables: `model.init(...)` output. pretrained: e.g. `load_pretrained(...)`.
    rename: checkpoint path prefix -> target prefix, e.g. {'params': 'params/backbone',
      'batch_stats': 'batch_stats/backbone'} when the backbone is a submodule.
    exclude: target path prefixes that keep their init even if the checkpoint has them
      (e.g. 'params/fc8' for another number of classes).
    Leaves only in the target keep their init (new layers); leaves only in the checkpoint are
    reported unused. A matching path with another shape is a DataError. Returns (variables as
    nested dicts, report).
    """
    target = traverse_util.flatten_dict(init_variables, sep="/")
    source = traverse_util.flatten_dict(pretrained, sep="/")
    renamed = {_rename(p, rename or {}): p for p in source}
    merged, loaded, unused = dict(target), set(), set()
    for new_path, old_path in renamed.items():
        if new_path not in target or any(_under(new_path, e) for e in exclude):
            unused.add(old_path)
            continue
        value, init = source[old_path], target[new_path]
        if tuple(np.shape(value)) != tuple(init.shape):
            raise DataError(
                f"pretrained {old_path} has shape {tuple(np.shape(value))} but the model's "
                f"{new_path} is {tuple(init.shape)}; exclude it (exclude=['{new_path}']) or load "
                "with drop_classifier=True if it is the classifier"
            )
        merged[new_path] = jnp.asarray(value, dtype=init.dtype)
        loaded.add(new_path)
    report = MergeReport(
        loaded=_collapse(loaded, list(target)),
        kept_init=_collapse(set(target) - loaded, list(target)),
        unused=_collapse(unused, list(source)),
    )
    return traverse_util.unflatten_dict(merged, sep="/"), report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
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
    try:
        meta = convert(args.pth, args.arch, args.out, drop_classifier=args.drop_classifier)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {os.path.join(args.out, VARIABLES_FILE)}: {args.arch}, {meta['num_arrays']} arrays, "
        f"{meta['num_values']:,} values, num_classes={meta['num_classes']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
