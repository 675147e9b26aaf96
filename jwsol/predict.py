"""Runs a trained job on your own images:
python -m jwsol.predict --workdir RUN --images PATH... [--out DIR] (docs/predict.md).

Restores the run's saved config (RUN/config.json) and its newest (or --step) checkpoint, reads
the JPEG/PNG files and folders given, prepares them as the job's config says (proposals
computed and cached where the model needs them), runs `Task.final_predict` jitted in batches (the
last one padded) and writes OUT/predictions.json (one record per image; detections in the COCO
results format, boxes [x, y, w, h] in original pixels) and OUT/pictures/<image>.png. What each
job predicts: its `Task.predictor` (jwsol/training/task.py).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import ml_collections
import numpy as np

from jwsol import errors
from jwsol.errors import UserError

OUTPUT_NAME = "predictions.json"


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run saved (workdir/config.json); UserError naming what is missing."""
    if not os.path.isdir(workdir):
        raise UserError(
            f"--workdir {workdir}: no such folder; pass the --workdir of a training run."
        )
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UserError(
            f"{path} does not exist: {workdir} is not a training run's folder (train.py writes "
            f"config.json when it starts)."
        )
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); rerun training to rewrite it.") from e


def _target(directory: str, step: int):
    """The saved tree of checkpoint `step` as ShapeDtypeStructs on this process's first device:
    a run saved on other devices (8 CPUs, a GPU) restores here whole."""
    import jax
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(directory, item_handlers=ocp.StandardCheckpointHandler())
    try:
        metadata = manager.item_metadata(step)
    except Exception:  # noqa: BLE001  a damaged step: restore() then names it and walks back
        return None
    finally:
        manager.close()
    if metadata is None:
        return None
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata.tree
    )


def restore_variables(workdir: str, step: int | None) -> tuple[dict, int]:
    """({'params': ..., **model_state}, step) of the newest checkpoint that restores (or `step`)."""
    from jwsol.training import checkpoint

    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    # Checked first: the checkpointer would create the folder.
    steps = [n for n in os.listdir(directory) if n.isdigit()] if os.path.isdir(directory) else []
    if not steps:
        raise UserError(
            f"no checkpoint in {directory}; train first (train.py with this --workdir) or "
            f"pass the folder of a run that saved one."
        )
    checkpointer = checkpoint.Checkpointer(workdir, keep=1, writable=False)
    steps = checkpointer.all_steps()
    # Every step of a run has the same tree; the optimizer state comes along, unused.
    shape_step = step if step in steps else (steps[-1] if steps else None)
    target = _target(checkpointer.directory, shape_step) if shape_step is not None else None
    state = checkpointer.restore(target, step)
    checkpointer.close()
    return {"params": state["params"], **state["model_state"]}, int(state["step"])


def picture_names(files: Sequence[str]) -> list[str]:
    """A distinct PNG name per file: its stem, with the position added where stems repeat."""
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    return [
        f"{stem}.png" if stems.count(stem) == 1 else f"{stem}_{i}.png"
        for i, stem in enumerate(stems)
    ]


def _run_batches(task, predictor, variables, image_set, out: str, batch_size: int, progress: bool):
    """One record per image, in order, each picture written as its batch is done (so heatmaps
    never pile up): batches padded to `batch_size` for one jitted shape."""
    import jax
    from PIL import Image
    from tqdm import tqdm

    from jwsol.training.loop import _numeric, _pad

    predict = jax.jit(predictor.predict or task.final_predict)
    names = picture_names(image_set.files)
    batches = predictor.batches(image_set.images, image_set.files, batch_size)
    records = []
    with tqdm(
        total=len(image_set.files), desc="predict", unit="image", disable=not progress
    ) as bar:
        for batch in batches:
            n = len(next(iter(batch.values())))
            padded = _pad(_numeric(batch), batch_size)
            padded["_valid"] = np.arange(batch_size) < n
            outputs = jax.device_get(predict(variables, padded))
            outputs = {k: np.asarray(v)[:n] for k, v in outputs.items()}
            for record in predictor.records(batch, outputs):
                i = len(records)
                record["image_id"] = i + 1
                picture = predictor.picture(image_set.images[i], record)
                Image.fromarray(picture).save(os.path.join(out, "pictures", names[i]))
                # Keys with a leading '_' (e.g. heatmaps) are for the picture only.
                records.append({k: v for k, v in record.items() if not k.startswith("_")})
            bar.update(n)
    return records


def predict(
    workdir: str,
    paths: Sequence[str],
    out: str = "",
    *,
    step: int | None = None,
    options=None,
    batch_size: int = 0,
    progress: bool = True,
) -> dict:
    """Predicts on the images under `paths` with the run in `workdir`; writes OUT/predictions.json
    and OUT/pictures/*.png (OUT defaults to workdir/predictions) and returns the JSON document."""
    from jwsol import tasks
    from jwsol.data import images
    from jwsol.training.task import PredictOptions

    config = load_run_config(workdir)
    task = tasks.build(config)
    predictor = task.predictor(options or PredictOptions())
    if predictor is None:
        raise UserError(f"task {config.task!r} of {workdir} has no prediction on new images.")
    variables, restored = restore_variables(workdir, step)
    image_set = images.load(paths)
    out = out or os.path.join(workdir, "predictions")
    os.makedirs(os.path.join(out, "pictures"), exist_ok=True)
    # No padding beyond the images there are: a few photos need not fill an eval batch of 50.
    batch_size = batch_size or min(int(config.eval.batch_size), len(image_set.files))
    records = _run_batches(task, predictor, variables, image_set, out, batch_size, progress)
    names = picture_names(image_set.files)
    listed = [
        {"id": i + 1, "file_name": path, "height": image.shape[0], "width": image.shape[1],
         "picture": names[i]}
        for i, (path, image) in enumerate(zip(image_set.files, image_set.images))
    ]  # fmt: skip
    document = {
        "workdir": os.path.abspath(workdir),
        "task": config.task,
        "step": restored,
        "images": listed,
        **predictor.document(records),
        "skipped": [{"file_name": f, "reason": why} for f, why in image_set.skipped],
    }
    with open(os.path.join(out, OUTPUT_NAME), "w") as f:
        json.dump(document, f, indent=1)
    return document


def _parser() -> errors.ArgumentParser:
    p = errors.ArgumentParser(
        prog="jwsol-predict", description="Run a trained jwsol job on your own JPEG/PNG images."
    )
    p.add_argument(
        "--workdir", required=True, help="the training run's folder (train.py --workdir)"
    )
    p.add_argument("--images", required=True, nargs="+", help="JPEG/PNG files or folders")
    p.add_argument("--out", default="", help="output folder (default: WORKDIR/predictions)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    p.add_argument(
        "--score-threshold", type=float, default=None,
        help="keep detections scoring above this (default: the run's eval.score_threshold)",
    )  # fmt: skip
    p.add_argument("--max-per-image", type=int, default=100, help="detections kept per image")
    p.add_argument("--top-k", type=int, default=5, help="classes listed per image (classifiers)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="default: the run's eval.batch_size (at most the number of images)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `jwsol-predict`; returns the exit status (0, or 2 for a user error)."""
    args = _parser().parse_args(argv)

    def body():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        from jwsol.training.task import PredictOptions

        tf.config.set_visible_devices([], "GPU")  # TensorFlow only reads data; JAX has the GPU
        options = PredictOptions(args.score_threshold, args.max_per_image, args.top_k)
        document = predict(
            args.workdir, args.images, args.out, step=args.step, options=options,
            batch_size=args.batch_size,
        )  # fmt: skip
        out = args.out or os.path.join(args.workdir, "predictions")
        skipped = len(document["skipped"])
        print(
            f"{len(document['images'])} image(s) predicted, {skipped} skipped: "
            f"{os.path.join(out, OUTPUT_NAME)} and {os.path.join(out, 'pictures')}/"
        )

    return errors.run_main(body, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
