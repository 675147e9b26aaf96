"""Weight files on disk: torchvision `.pth` downloads in, converted msgpack folders in and out.

A converted folder holds `variables.msgpack` (flax.serialization msgpack of {'params': ...,
'batch_stats': ...}, float32) and `meta.json` (format, arch, num_classes, source and its SHA-256).
torch is imported only to read a `.pth`, and lazily.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import flax.serialization
import jax
import numpy as np

from jwsol.errors import DataError, UserError
from jwsol.files import write_atomic

VARIABLES_FILE = "variables.msgpack"
META_FILE = "meta.json"
FORMAT = "flax.serialization.msgpack"

URLS = {
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
ARCHS = tuple(URLS)
TORCHVISION_FILES = {os.path.basename(url): arch for arch, url in URLS.items()}


def conversion_hint(arch: str, out: str) -> str:
    """Where to download `arch` and the command that converts it into the folder `out`."""
    url = URLS[arch]
    return (
        f"Download {url} on a machine with internet, then convert it once with "
        f"`python -m jwsol.weights.torchvision --arch {arch} --pth {os.path.basename(url)} "
        f"--out {out}` (needs torch; the converted folder loads without it)."
    )


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (without importing torch) or array-like -> NumPy."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # NumPy has no bfloat16; the Flax params are float32 anyway
        value = value.numpy()
    return np.asarray(value)


def load_torch_state_dict(path: str) -> tuple[dict[str, np.ndarray], str]:
    """Reads a .pth state_dict with torch (imported here only). Returns (state_dict, sha256).

    A file carrying a torchvision download name (e.g. resnet18-f37072fd.pth) must have the
    SHA-256 its name starts, so a truncated download is caught here.
    """
    if not os.path.isfile(path):
        arch = TORCHVISION_FILES.get(os.path.basename(path))
        hint = conversion_hint(arch, "DIR") if arch else "Get one from " + ", ".join(URLS.values())
        raise DataError(f"torch checkpoint {path} not found. {hint}")
    digest = sha256(path)
    name = os.path.basename(path)
    if name in TORCHVISION_FILES:
        # torchvision names embed the start of the file's SHA-256 (torch.hub's check_hash).
        expected = re.search(r"-([0-9a-f]{8,})\.pth$", name).group(1)
        if not digest.startswith(expected):
            raise DataError(
                f"{path}: SHA-256 {digest[:12]}... does not start with {expected} as the "
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
    return {k: to_numpy(v) for k, v in loaded.items()}, digest


def save_variables(variables: Mapping[str, Any], out_dir: str, meta: Mapping[str, Any]) -> None:
    """Writes out_dir/variables.msgpack and out_dir/meta.json (each atomically)."""
    os.makedirs(out_dir, exist_ok=True)
    host = jax.tree.map(np.asarray, dict(variables))
    for name, payload in (
        (VARIABLES_FILE, flax.serialization.msgpack_serialize(host)),
        (META_FILE, (json.dumps(dict(meta), indent=2, sort_keys=True) + "\n").encode()),
    ):
        write_atomic(os.path.join(out_dir, name), payload)


def load_variables(path: str, arch: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Reads a converted folder (or its variables.msgpack) holding `arch`, without torch.

    Returns (nested dicts of NumPy arrays, meta, the variables file's path). Checks only the
    files and the recorded arch; `torchvision.load_pretrained` checks the shapes.
    """
    if arch not in URLS:
        raise UserError(f"pretrained arch {arch!r}: expected one of {', '.join(ARCHS)}")
    folder = os.path.dirname(path) if path.endswith(VARIABLES_FILE) else path
    if path.endswith(".pth") and os.path.isfile(path):
        raise DataError(
            f"{path} is a torch checkpoint; convert it first. {conversion_hint(arch, 'DIR')}"
        )
    variables_path = os.path.join(folder, VARIABLES_FILE)
    meta_path = os.path.join(folder, META_FILE)
    if not os.path.isfile(variables_path) or not os.path.isfile(meta_path):
        raise DataError(
            f"pretrained {arch} weights not found: {folder} has no {VARIABLES_FILE} + {META_FILE}. "
            + conversion_hint(arch, folder)
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
    return variables, meta, variables_path
