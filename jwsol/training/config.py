"""Fields every job config shares; job configs (configs/*.py) start from `base_config()`."""

from __future__ import annotations

import ml_collections

from jwsol.training.schedules import default_optimizer_config


def base_config(task: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.task = task  # a name from jwsol.tasks.TASKS
    config.seed = 0  # initialisation, data order and augmentation all derive from it
    config.train = ml_collections.ConfigDict({
        "batch_size": 128,  # global: split over every device of every process
        "num_steps": 1000,
        "num_epochs": 0.0,  # > 0 overrides num_steps with epochs of the training set
        "log_every": 50,
        "eval_every": 0,  # 0: evaluate only at the end
        "checkpoint_every": 500,
        "keep_checkpoints": 3,
        "progress_bar": True,
    })  # fmt: skip
    config.eval = ml_collections.ConfigDict({
        "batch_size": 256,
        "step": -1,  # --mode=eval restores this step; -1: the latest
    })  # fmt: skip
    config.optimizer = default_optimizer_config()
    return config
