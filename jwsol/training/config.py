"""Fields every job config shares; job configs (configs/*.py) start from `base_config()`."""

from __future__ import annotations

import ml_collections

from jwsol.training.optimizer import default_optimizer_config


def base_config(task: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.task = task  # a name from jwsol.tasks.TASKS
    config.seed = 0  # initialisation, data order and augmentation all derive from it
    config.train = ml_collections.ConfigDict({
        "batch_size": 128,  # global: split over every device of every process
        "num_steps": 1000,
        "num_epochs": 0.0,  # > 0 overrides num_steps with epochs of the training set
        # Periods in steps, or in epochs with the `_epochs` field (> 0 wins); the loop turns
        # epochs into steps from the task's number of training examples.
        "log_every": 50,
        "log_every_epochs": 0.0,
        "eval_every": 0,  # 0: evaluate only at the end
        "eval_every_epochs": 0.0,
        "checkpoint_every": 500,
        "checkpoint_every_epochs": 0.0,
        "keep_checkpoints": 3,
        "progress_bar": True,
        # On CPU, compile steps with jwsol.training.cpu.cpu_compiler_options() (Eigen, not YNNPACK):
        # 1.2x faster for the sliding-window net, 1.5x slower for WSDDN, so opt in per job.
        "cpu_eigen": False,
    })  # fmt: skip
    config.eval = ml_collections.ConfigDict({
        "batch_size": 256,
        "step": -1,  # --mode=eval restores this step; -1: the latest
    })  # fmt: skip
    config.optimizer = default_optimizer_config()
    return config


def load(spec: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """Loads 'configs/NAME.py[:VARIANT]' as train.py does (locked), with dotted overrides.

    For notebooks and tests: `load('configs/sliding_window.py:smoke', {'data.folder': d})`.
    """
    import importlib.util
    import os

    from jwsol.errors import ConfigError

    path, _, variant = spec.partition(":")
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist; see configs/.")
    module_spec = importlib.util.spec_from_file_location("_jwsol_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(variant or None)
    config.lock()
    for key, value in (overrides or {}).items():
        node = config
        *parents, leaf = key.split(".")
        try:
            for p in parents:
                node = node[p]
            node[leaf] = value
        except (KeyError, AttributeError) as e:
            raise ConfigError(f"unknown config field {key!r} ({e}).") from e
    return config
