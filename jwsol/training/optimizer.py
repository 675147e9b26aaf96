"""Optimizers and learning-rate schedules from `config.optimizer`, shared by every job."""

from __future__ import annotations

import jax
import ml_collections
import optax

from jwsol.errors import ConfigError


def learning_rate_schedule(
    cfg: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> optax.Schedule:
    """`cfg.schedule`: constant | cosine | step | onecycle (with optional linear warmup).

    step: multiply by `decay_factor` every `decay_epochs` epochs (or at `decay_steps` if given).
    onecycle: optax's one-cycle cosine schedule peaking at `learning_rate`.
    """
    lr, warmup = cfg.learning_rate, cfg.warmup_steps
    if cfg.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(
            lr, max(1, total_steps - warmup), alpha=cfg.final_fraction
        )
    elif cfg.schedule == "step":
        boundaries = list(cfg.decay_steps) or [
            int(e * steps_per_epoch) for e in range(cfg.decay_epochs, 10**6, cfg.decay_epochs)
            if e * steps_per_epoch < total_steps
        ]  # fmt: skip
        main = optax.piecewise_constant_schedule(
            lr, {max(1, b - warmup): cfg.decay_factor for b in boundaries}
        )
    elif cfg.schedule == "onecycle":
        return optax.cosine_onecycle_schedule(
            transition_steps=max(1, total_steps), peak_value=lr, pct_start=cfg.onecycle_pct_start,
            div_factor=cfg.onecycle_div_factor, final_div_factor=cfg.onecycle_final_div_factor,
        )  # fmt: skip
    else:
        raise ConfigError(
            f"optimizer.schedule={cfg.schedule!r} is unknown; use constant, cosine, step or onecycle."
        )
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(
    cfg: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`cfg.name`: sgd (momentum, nesterov) | adam | adamw; L2 `weight_decay` for sgd/adam
    (added to the gradient, as torch does), decoupled for adamw; optional `grad_clip_norm`."""
    schedule = learning_rate_schedule(cfg, total_steps, steps_per_epoch)
    parts = []
    if cfg.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    if cfg.name == "sgd":
        if cfg.weight_decay:
            parts.append(optax.add_decayed_weights(cfg.weight_decay))
        parts.append(optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
    elif cfg.name == "adam":
        if cfg.weight_decay:
            parts.append(optax.add_decayed_weights(cfg.weight_decay))
        parts.append(optax.adam(schedule, b1=cfg.beta1, b2=cfg.beta2))
    elif cfg.name == "adamw":
        parts.append(
            optax.adamw(schedule, b1=cfg.beta1, b2=cfg.beta2, weight_decay=cfg.weight_decay)
        )
    else:
        raise ConfigError(f"optimizer.name={cfg.name!r} is unknown; use sgd, adam or adamw.")
    multipliers = parse_lr_multipliers(cfg.get("lr_multipliers", ""))
    if multipliers:
        parts.append(scale_by_path(multipliers))
    return optax.chain(*parts), schedule


def parse_lr_multipliers(spec: str) -> dict[str, float]:
    """'refine=10,fc67=2' -> {'refine': 10.0, 'fc67': 2.0} (parameter path prefix -> factor)."""
    out = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        prefix, _, value = item.partition("=")
        try:
            out[prefix.strip()] = float(value)
        except ValueError:
            raise ConfigError(
                f"optimizer.lr_multipliers={spec!r}: expected 'prefix=factor,...', e.g. 'refine=10'."
            ) from None
    return out


def scale_by_path(multipliers: dict[str, float]) -> optax.GradientTransformation:
    """Multiplies the update of every parameter whose '/'-joined path starts with a prefix of
    `multipliers` by its factor (the first prefix that matches): a per-layer learning rate."""

    def factor(path) -> float:
        name = "/".join(str(getattr(key, "key", key)) for key in path)
        return next((v for prefix, v in multipliers.items() if name.startswith(prefix)), 1.0)

    def update(updates, state, params=None):
        del params
        scaled = jax.tree_util.tree_map_with_path(lambda p, u: u * factor(p), updates)
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
