"""Registry of jobs: `config.task` names one of these."""

from __future__ import annotations

import importlib

from jwsol.errors import ConfigError

TASKS = {
    "sliding_window": "jwsol.tasks.sliding_window:SlidingWindowTask",
    "localizer": "jwsol.tasks.localizer:LocalizerTask",
    "classification": "jwsol.tasks.classification:ClassificationTask",
    "multilabel": "jwsol.tasks.multilabel:MultiLabelTask",
    "wsddn": "jwsol.tasks.wsddn:WSDDNTask",
}


def build(config):
    """The task of `config` (a loaded job config), ready for `jwsol.training.loop.run`."""
    return get(config.task)(config)


def get(name: str):
    """The Task class registered under `name`."""
    if name not in TASKS:
        raise ConfigError(f"config.task={name!r} is unknown; known tasks: {sorted(TASKS)}.")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)
