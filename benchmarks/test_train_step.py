"""The sliding-window train step on CPU: XLA's defaults against the settings train.py uses.

The step is the default config's (`configs/sliding_window.py`: net, batch 32, the conditional
loss; Adam, where the config has AdamW: one more elementwise term) on fixed random canvases
and targets. Five settings, each in a fresh process (glibc's malloc tuning cannot be undone
inside one):

- `xla`: `jax.jit` with XLA:CPU's defaults, glibc's default malloc (the reference);
- `eigen`: compiled with `jwsol.training.cpu.cpu_compiler_options()` (Eigen instead of YNNPACK);
- `malloc`: XLA defaults, `jwsol.training.cpu.tune_malloc()` first;
- `both`: what `train.py` runs; these four on whole 64x64 canvases;
- `crop`: `both` on the `data.train_crop` crops the default config trains on.

Reported per setting: ms per step (best of rounds of 20 steps), speed-up over `xla`, CPU time
in user and kernel mode and minor page faults per step. Results: a table in the pytest summary
and benchmarks/results/train_step.json. Run one setting by hand with
`python benchmarks/test_train_step.py both`.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "sliding_window.py")
SETTINGS = ("xla", "eigen", "malloc", "both", "crop")
STEPS_PER_ROUND = 20
ROUNDS = 5


def measure(setting: str) -> dict[str, float]:
    """Times the step under `setting` in this process; call in a fresh process."""
    from jwsol.training import cpu

    tuned = cpu.tune_malloc() if setting in ("malloc", "both", "crop") else False
    import jax
    import numpy as np
    import optax

    from jwsol import losses
    from jwsol.data import canvas
    from jwsol.models.sliding_window import SlidingWindowNet, parse_layers
    from jwsol.training.config import load

    config = load(CONFIG)
    batch = config.train.batch_size
    model = SlidingWindowNet(parse_layers(config.model.layers), batch_norm=config.model.batch_norm)
    size = config.data.train_crop if setting == "crop" else config.data.canvas_size
    geom = model.window_geometry(size)
    rng = np.random.default_rng(0)
    images = rng.random((batch, size, size, 1), np.float32)
    corner = rng.integers(0, size - 40, (batch, 2))
    boxes = np.concatenate([corner, corner + 36], axis=1)
    targets = canvas.window_targets(boxes, rng.integers(0, 10, batch), geom)
    variables = model.init(jax.random.key(0), images[:1])
    tx = optax.adam(config.optimizer.learning_rate)

    def step(params, batch_stats, opt_state):
        def loss_fn(params):
            out, state = model.apply(
                {"params": params, "batch_stats": batch_stats}, images, train=True,
                mutable=["batch_stats"],
            )  # fmt: skip
            loss = losses.sliding_window_loss(out, targets["y0"], targets["y1"], targets["box"])
            return loss[0], state["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    options = cpu.cpu_compiler_options() if setting in ("eigen", "both", "crop") else None
    step = jax.jit(step, donate_argnums=(0, 1, 2), compiler_options=options)
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
    for _ in range(5):  # compile and warm up (the allocator's heap grows here)
        *state, loss = step(*state)
    loss.block_until_ready()
    best, usage = float("inf"), None
    for _ in range(ROUNDS):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(STEPS_PER_ROUND):
            *state, loss = step(*state)
        loss.block_until_ready()
        seconds = (time.perf_counter() - start) / STEPS_PER_ROUND
        after = resource.getrusage(resource.RUSAGE_SELF)
        if seconds < best:
            best, usage = seconds, (before, after)
    before, after = usage
    assert np.isfinite(float(loss))
    return {
        "setting": setting,
        "malloc_tuned": tuned,
        "compiler_options": json.dumps(options),
        "batch_size": batch,
        "canvas": size,
        "step_ms": best * 1e3,
        "user_ms_per_step": (after.ru_utime - before.ru_utime) * 1e3 / STEPS_PER_ROUND,
        "sys_ms_per_step": (after.ru_stime - before.ru_stime) * 1e3 / STEPS_PER_ROUND,
        "page_faults_per_step": (after.ru_minflt - before.ru_minflt) / STEPS_PER_ROUND,
    }


def _run(setting: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, setting], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_train_step_settings(machine_info, write_results, report_table, format_table):
    rows = [_run(setting) for setting in SETTINGS]
    reference = rows[0]["step_ms"]
    for row in rows:
        row["speedup_vs_xla"] = reference / row["step_ms"]
    write_results("train_step", rows)
    report_table(
        f"Sliding-window train step, batch {rows[0]['batch_size']} (configs/sliding_window.py), "
        f"load {machine_info['load_average_1_5_15']}",
        format_table(
            rows,
            [
                ("setting", "setting", ""),
                ("canvas", "px", "d"),
                ("step_ms", "ms/step", ".1f"),
                ("speedup_vs_xla", "x xla", ".2f"),
                ("user_ms_per_step", "user ms", ".0f"),
                ("sys_ms_per_step", "sys ms", ".0f"),
                ("page_faults_per_step", "faults", ".0f"),
            ],
        ),
    )
    assert rows[3]["malloc_tuned"] and all(row["step_ms"] > 0 for row in rows)


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1])))
