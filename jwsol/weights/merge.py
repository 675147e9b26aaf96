"""Pretrained weights into freshly initialised variables: the generic tree merge (rename,
exclude, a report of what came from where) and `load_into`, the one entry point every job uses
for its `config.pretrained` section:

    arch          alexnet | vgg16 | resnet18 | resnet34 | resnet50
    path          folder written by `python -m jwsol.weights.torchvision` ('' = none)
    from_scratch  True: an empty path trains from scratch; False: an empty path is an error
    exclude       target path prefixes that keep their init, e.g. ('params/fc',)
    rename        'src=dst,...' checkpoint prefix -> model prefix
    make          '' or a recipe of `jwsol.weights.pretrain` ('fashion_mnist') that makes `path`
                  when it is missing (the offline scenes jobs' stand-in for ImageNet weights)
    recipe        that recipe's settings (only with make)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from jwsol.errors import ConfigError, DataError
from jwsol.weights import pretrain, store
from jwsol.weights.torchvision import load_pretrained


def under(path: str, prefix: str) -> bool:
    """Whether the flat path 'a/b/c' is `prefix` or lies below it."""
    return path == prefix or path.startswith(prefix + "/")


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
        if under(path, old):
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
        if new_path not in target or any(under(new_path, e) for e in exclude):
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


def require(pretrained: Any, arch: str | None = None) -> str | None:
    """The weights folder `config.pretrained` names (user home expanded), None for from scratch.

    The one "pretrained weights missing" error of every job: a ConfigError for an empty path
    without from_scratch, a DataError for a path that does not exist; both name the command
    that makes the folder. arch: the weights the model takes (e.g. 'resnet18'); another
    pretrained.arch with a path is a ConfigError. Cheap, so tasks call it before reading data,
    except with `pretrained.make`: then a missing folder is made here first (minutes, once).
    """
    p = pretrained
    if not p.path:
        if not p.from_scratch:
            raise ConfigError(
                f"pretrained.path is empty: give the folder of converted {p.arch} weights "
                f"(python -m jwsol.weights.torchvision --arch {p.arch} --pth FILE --out DIR; "
                f"see docs/weights.md), or train from scratch with "
                f"--config.pretrained.from_scratch=True."
            )
        return None
    if p.get("make"):
        pretrain.ensure(p)
    path = os.path.expanduser(p.path)
    if not os.path.exists(path):
        raise DataError(
            f"pretrained.path={path!r} does not exist. " + store.conversion_hint(p.arch, path)
        )
    if arch is not None and p.arch != arch:
        raise ConfigError(f"pretrained.arch={p.arch!r}, but the model takes {arch!r} weights.")
    return path


def load_into(
    variables: Mapping[str, Any], pretrained: Any, *, exclude_extra: Sequence[str] = ()
) -> dict[str, Any] | None:
    """`variables` with the weights of `config.pretrained` merged in; None when from scratch.

    The classifier is never loaded (each job has its own classes). exclude_extra: prefixes the
    task keeps at init beyond `pretrained.exclude` (e.g. a stem of another shape).
    Raises ConfigError when nothing matched (a wrong `rename`).
    """
    path = require(pretrained)
    if path is None:
        logging.info("training from scratch (pretrained.from_scratch=True)")
        return None
    p = pretrained
    if pretrain.made_by_recipe(path):
        # Not the full-size torchvision model, so merge_pretrained checks the shapes.
        weights, _, _ = store.load_variables(path, p.arch)
    else:
        weights = load_pretrained(path, p.arch, drop_classifier=True)
    rename = dict(item.split("=") for item in p.rename.split(",")) if p.rename else None
    merged, report = merge_pretrained(
        jax.tree.map(np.asarray, variables),
        weights,
        exclude=(*p.exclude, *exclude_extra),
        rename=rename,
    )
    logging.info("pretrained %s from %s:\n%s", p.arch, path, report)
    if not report.loaded:
        raise ConfigError(
            f"no weights from {path} matched the model; check pretrained.rename/exclude."
        )
    return merged
