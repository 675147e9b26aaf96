"""Run outputs: metrics.jsonl, TensorBoard events, figures/*.png, eval_metrics.json, config.json,
and, when asked (`--wandb`), the same scalars, images and config mirrored to Weights & Biases.

Only process 0 writes; the other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np

from jwsol.errors import UserError
from jwsol.files import write_atomic

WANDB_RUN_ID_FILE = "wandb_run_id.txt"  # a resumed run continues the same W&B run


def import_wandb():
    """The `wandb` module, or a UserError saying how to get it (it is not a dependency)."""
    try:
        import wandb
    except ImportError as e:
        raise UserError(
            "--wandb needs the wandb package, which is not installed: pip install wandb "
            "(WANDB_MODE=offline logs without a network), or drop --wandb."
        ) from e
    return wandb


def start_wandb(project: str, workdir: str):
    """A W&B run in `project` named after the workdir; its id is kept in the workdir so that a
    resumed training run logs into the same W&B run."""
    wandb = import_wandb()
    id_path = os.path.join(workdir, WANDB_RUN_ID_FILE)
    if os.path.exists(id_path):
        with open(id_path) as f:
            run_id = f.read().strip()
    else:
        run_id = wandb.util.generate_id()
        with open(id_path, "w") as f:
            f.write(run_id + "\n")
    name = os.path.basename(os.path.normpath(workdir))
    return wandb.init(project=project, dir=workdir, name=name, id=run_id, resume="allow")


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

    def __init__(self, workdir: str, wandb_project: str | None = None):
        self.workdir = workdir
        self.enabled = jax.process_index() == 0
        self._tb = self._wandb = None
        if self.enabled:
            os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
            from flax.metrics import tensorboard

            self._tb = tensorboard.SummaryWriter(workdir)
            if wandb_project:
                self._wandb = start_wandb(wandb_project, workdir)

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
        if self._wandb is not None:
            self._wandb.log({k: float(v) for k, v in row.items() if k != "step"}, step=int(step))

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
        write_atomic(path, "".join(rows).encode())  # a kill leaves the old or the new file

    def images(self, step: int, images: dict[str, np.ndarray]) -> None:
        """`images`: name -> uint8 [H, W, 3]; TensorBoard and figures/NAME.png."""
        if not self.enabled:
            return
        from PIL import Image

        for name, image in images.items():
            self._tb.image(name, image, step)
            Image.fromarray(image).save(os.path.join(self.workdir, "figures", f"{name}.png"))
        self._tb.flush()
        if self._wandb is not None and images:
            wandb = import_wandb()
            self._wandb.log({k: wandb.Image(v) for k, v in images.items()}, step=int(step))

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
            if self._wandb is not None and name == "config.json":
                self._wandb.config.update(obj, allow_val_change=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
