"""One WSDDN training step at the course's VOC size: 2 images of 512x512 x 2000 proposals.

Full-width AlexNet (conv1-5, fc6/fc7 4096), RoI max pooling 6x6, both heads, image-level BCE,
SGD with momentum and weight decay: the step `configs/wsddn.py` jits, fed random weights and
boxes. Reported: step time (best of a few), its FLOPs from XLA's cost analysis as a fraction of
the machine's measured matmul GFLOP/s (the reference of this benchmark), XLA's compiled memory
(arguments + outputs + temporaries) and the process's peak resident memory around the step.
Results: a table in the pytest summary and benchmarks/results/wsddn_step.json.
"""

from __future__ import annotations

import resource

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jwsol import losses
from jwsol.models.wsddn import WSDDN

NUM_IMAGES = 2
NUM_PROPOSALS = 2000
IMAGE_SIZE = 512
NUM_CLASSES = 20


def _batch(seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, IMAGE_SIZE - 40, size=(NUM_IMAGES, NUM_PROPOSALS, 2))
    wh = rng.uniform(20, 400, size=(NUM_IMAGES, NUM_PROPOSALS, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, IMAGE_SIZE)], -1)
    labels = (rng.random((NUM_IMAGES, NUM_CLASSES)) < 0.15).astype(np.float32)
    return {
        "image": jnp.asarray(rng.normal(size=(NUM_IMAGES, IMAGE_SIZE, IMAGE_SIZE, 3)), jnp.float32),
        "proposals": jnp.asarray(boxes, jnp.float32),
        "proposal_mask": jnp.ones((NUM_IMAGES, NUM_PROPOSALS), bool),
        "labels": jnp.asarray(labels),
    }


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def test_wsddn_train_step(machine_info, write_results, report_table, format_table, best_time,
                          matmul_gflops):  # fmt: skip
    model = WSDDN(num_classes=NUM_CLASSES)
    batch = _batch()
    tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(1e-4, momentum=0.9))
    params = jax.jit(model.init)(
        jax.random.key(0), batch["image"][:1], batch["proposals"][:1], batch["proposal_mask"][:1]
    )["params"]
    opt_state = tx.init(params)

    def loss_fn(params, batch, rng):
        out = model.apply(
            {"params": params}, batch["image"], batch["proposals"], batch["proposal_mask"],
            train=True, rngs={"dropout": rng},
        )  # fmt: skip
        return losses.wsddn_loss(out["image_scores"], batch["labels"])[0]

    def step(params, opt_state, batch, rng):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rss_before = _peak_rss_gib()
    compiled = (
        jax.jit(step, donate_argnums=(0, 1))
        .lower(params, opt_state, batch, jax.random.key(1))
        .compile()
    )
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan")))

    state = {"params": params, "opt_state": opt_state}

    def run():
        p, o, loss = compiled(state["params"], state["opt_state"], batch, jax.random.key(2))
        loss.block_until_ready()
        state["params"], state["opt_state"] = p, o
        assert np.isfinite(float(loss))

    run()  # warm-up
    seconds = best_time(run, rounds=2)
    peak_rss = _peak_rss_gib()
    machine = matmul_gflops()["best"]
    gib = 2**30
    row = {
        "images": NUM_IMAGES,
        "proposals": NUM_PROPOSALS,
        "image_size": IMAGE_SIZE,
        "step_s": seconds,
        "step_gflop": flops / 1e9,
        "achieved_gflops": flops / seconds / 1e9,
        "machine_matmul_gflops": machine,
        "fraction_of_matmul_peak": flops / seconds / 1e9 / machine,
        "xla_argument_gib": memory.argument_size_in_bytes / gib,
        "xla_output_gib": memory.output_size_in_bytes / gib,
        "xla_temp_gib": memory.temp_size_in_bytes / gib,
        "peak_rss_gib": peak_rss,
        "peak_rss_before_compile_gib": rss_before,
    }
    write_results("wsddn_step", [row])
    report_table(
        f"WSDDN train step, {NUM_IMAGES} x {IMAGE_SIZE}px x {NUM_PROPOSALS} proposals (AlexNet, "
        f"fc 4096, roi_pool 6x6), load {machine_info['load_average_1_5_15']}",
        format_table(
            [row],
            [
                ("step_s", "step s", ".2f"),
                ("step_gflop", "GFLOP", ".0f"),
                ("achieved_gflops", "GFLOP/s", ".1f"),
                ("machine_matmul_gflops", "matmul GFLOP/s", ".1f"),
                ("fraction_of_matmul_peak", "of matmul", ".2f"),
                ("xla_temp_gib", "XLA temp GiB", ".2f"),
                ("xla_argument_gib", "XLA args GiB", ".2f"),
                ("peak_rss_gib", "peak RSS GiB", ".2f"),
            ],
        ),
    )
    assert seconds > 0 and memory.temp_size_in_bytes > 0
