"""Loading job configs (configs/*.py; their shared fields live in configs/common.py)."""

from __future__ import annotations

import ml_collections


def load(spec: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """Loads 'configs/NAME.py[:VARIANT]' as train.py does (locked), with dotted overrides.

    For notebooks and tests: `load('configs/sliding_window.py:smoke', {'train.num_steps': 20})`.
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
