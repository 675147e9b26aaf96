"""Registry of jobs: `config.task` names one of these."""

from __future__ import annotations

import importlib

from jwsol.errors import ConfigError
from jwsol.training import precision

TASKS = {
    "sliding_window": "jwsol.tasks.sliding_window:SlidingWindowTask",
    "localizer": "jwsol.tasks.localizer:LocalizerTask",
    "classification": "jwsol.tasks.classification:ClassificationTask",
    "multilabel": "jwsol.tasks.multilabel:MultiLabelTask",
    "wsddn": "jwsol.tasks.wsddn:WSDDNTask",
}


def build(config):
    """The task of `config` (a loaded job config), ready for `jwsol.training.loop.run`, its model
    computing in `config.train.dtype` (`jwsol.training.precision`)."""
    precision.compute_dtype(config.train.dtype)  # an unknown dtype fails before any data is read
    return precision.apply_to_task(get(config.task)(config), config.train.dtype)


def get(name: str):
    """The Task class registered under `name`."""
    if name not in TASKS:
        raise ConfigError(f"config.task={name!r} is unknown; known tasks: {sorted(TASKS)}.")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)
