"""Run outputs: metrics.jsonl, TensorBoard events, figures/*.png, eval_metrics.json, config.json.

Only process 0 writes; the other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np


def _jsonable(value):
    value = np.asarray(value)
    if value.size != 1:
        return None
    value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class Writer:
    """Writes scalars, images and histograms to TensorBoard and JSONL, figures to PNG."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.enabled = jax.process_index() == 0
        self._tb = None
        if self.enabled:
            os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
            from flax.metrics import tensorboard

            self._tb = tensorboard.SummaryWriter(workdir)

    def scalars(self, step: int, metrics: dict, prefix: str = "") -> None:
        if not self.enabled:
            return
        row = {"step": int(step)}
        for name, value in metrics.items():
            v = _jsonable(value)
            if v is None or isinstance(v, str) and v not in ("nan", "inf", "-inf"):
                continue
            row[prefix + name] = v
            self._tb.scalar(prefix + name, float(v), step)
        with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
        self._tb.flush()

    def rewind(self, step: int, drop_eval_at_step: bool) -> None:
        """Drops metrics.jsonl rows after `step` (and its evaluation row if asked): a run resumed
        from the checkpoint at `step` writes them again."""
        path = os.path.join(self.workdir, "metrics.jsonl")
        if not self.enabled or not os.path.exists(path):
            return
        with open(path) as f:
            lines = [line for line in f if line.strip()]

        def kept(row: dict) -> bool:
            at_eval = row["step"] == step and any(k.startswith("eval/") for k in row)
            if row["step"] != step:
                return row["step"] < step
            return not (drop_eval_at_step and at_eval)

        rows = [line for line in lines if kept(json.loads(line))]
        if len(rows) == len(lines):
            return
        with open(path + ".tmp", "w") as f:
            f.writelines(rows)
        os.replace(path + ".tmp", path)  # a kill here leaves the old or the new file, whole

    def images(self, step: int, images: dict[str, np.ndarray]) -> None:
        """`images`: name -> uint8 [H, W, 3]; TensorBoard and figures/NAME.png."""
        if not self.enabled:
            return
        from PIL import Image

        for name, image in images.items():
            self._tb.image(name, image, step)
            Image.fromarray(image).save(os.path.join(self.workdir, "figures", f"{name}.png"))
        self._tb.flush()

    def histograms(self, step: int, values: dict[str, np.ndarray]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self._tb.histogram(name, np.asarray(value).ravel(), step)
        self._tb.flush()

    def json(self, name: str, obj) -> None:
        if self.enabled:
            with open(os.path.join(self.workdir, name), "w") as f:
                json.dump(obj, f, indent=2, sort_keys=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
