r"""Draws image N of a split as a job's detection pipeline delivers it: true boxes and top
proposals.

  python -m jwsol.viz.show --config configs/wsddn.py:scenes --split test --index 3 --out scene.png
  python -m jwsol.viz.show --config configs/wsddn.py --config.data.voc_root=/data/VOCdevkit \
      --split test --index 0 --out voc.png

The job config's `config.data` is drawn (overrides as `--config.data.x=...`). The picture shows
the evaluation view (no flip, eval scale), boxes in the resized image's pixels, and the first
`--top` proposals (best score first, or the selective-search ranking when the source has no
scores): the exercise's Q0.3/Q0.4.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import app, flags
from ml_collections import ConfigDict, config_flags

from jwsol import errors
from jwsol.data import augment, detection, records
from jwsol.viz import data as viz_data

_CONFIG = config_flags.DEFINE_config_file("config", None, "job config file whose .data is drawn")
flags.mark_flag_as_required("config")
_SPLIT = flags.DEFINE_string("split", None, "split to draw from (default: data.eval_split)")
_INDEX = flags.DEFINE_integer("index", 0, "image index in the split")
_OUT = flags.DEFINE_string("out", "example.png", "output PNG")
_TOP = flags.DEFINE_integer("top", 10, "number of proposals drawn")
_VERBOSE = flags.DEFINE_bool("verbose", False, "print the full traceback of a failure")


def render(config_data: ConfigDict, split: str, index: int, out: str, top_n: int = 10) -> dict:
    """Writes the picture of image `index` of `split` to `out`; returns the batch drawn."""
    ds = detection.build(config_data, split, train=False, seed=0, batch_size=1, start_index=index)
    batch = next(ds.as_numpy_iterator())
    height, width = batch["image_size"][0]
    image = augment.denormalize(batch["image"][0])[:height, :width]
    names = records.class_names(config_data)
    gt_mask = batch["gt_mask"][0]
    gt_names = [
        names[c] + (" (difficult)" if d else "")
        for c, d in zip(
            batch["gt_classes"][0][gt_mask], batch["gt_difficult"][0][gt_mask], strict=True
        )
    ]
    proposals = batch["proposals"][0][batch["proposal_mask"][0]]
    image_id = batch["image_id"][0].decode()
    viz_data.save_example(
        out,
        image,
        batch["gt_boxes"][0][gt_mask],
        gt_names,
        proposals,
        top_n=top_n,
        title=f"{config_data.source} {split} #{index} ({image_id}), {int(np.sum(batch['proposal_mask']))} proposals",
    )
    return batch


def _draw() -> None:
    config_data = _CONFIG.value.data
    split = _SPLIT.value or config_data.eval_split
    render(config_data, split, _INDEX.value, _OUT.value, _TOP.value)
    print(f"wrote {_OUT.value}")


def main(argv):
    del argv
    status = errors.run_main(_draw, _VERBOSE.value)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    app.run(main, flags_parser=errors.parse_flags)
