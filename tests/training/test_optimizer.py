"""Per-layer learning rates (optimizer.lr_multipliers) against plain SGD steps by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from jwsol.errors import ConfigError
from jwsol.training.optimizer import make_optimizer, parse_lr_multipliers


def test_multiplied_layers_take_scaled_sgd_steps():
    cfg = common.optimizer()
    cfg.name, cfg.learning_rate, cfg.schedule, cfg.momentum = "sgd", 0.1, "constant", 0.0
    cfg.lr_multipliers = "refine=10"
    tx, _ = make_optimizer(cfg, total_steps=10, steps_per_epoch=10)
    params = {"refine1": {"kernel": jnp.ones(2)}, "fc67": {"kernel": jnp.ones(2)}}
    grads = {"refine1": {"kernel": jnp.full(2, 0.5)}, "fc67": {"kernel": jnp.full(2, 0.5)}}
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["refine1"]["kernel"], -0.1 * 10 * 0.5)
    np.testing.assert_allclose(updates["fc67"]["kernel"], -0.1 * 0.5)


def test_bad_multiplier_spec_names_the_field():
    assert parse_lr_multipliers(" refine=10, fc67=0.5 ") == {"refine": 10.0, "fc67": 0.5}
    assert parse_lr_multipliers("") == {}
    with pytest.raises(ConfigError, match="optimizer.lr_multipliers='refine'"):
        parse_lr_multipliers("refine")
