"""The one training/evaluation loop every job runs.

config -> task -> host batches -> sharded global arrays -> jit step (donated, replicated state)
-> metrics -> writer / checkpoint. The loop never looks inside a batch or the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from tqdm import tqdm

from jwsol.errors import ConfigError, UserError
from jwsol.training import checkpoint, cpu, lock, memory, sharding
from jwsol.training import writer as run_writer
from jwsol.training.optimizer import make_optimizer
from jwsol.training.task import Batch, EvalContext, Task


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    model_state: Any  # non-trained collections, e.g. {'batch_stats': ...}; {} if none
    opt_state: Any

    def variables(self) -> dict:
        return {"params": self.params, **self.model_state}


@dataclasses.dataclass(frozen=True)
class Durations:
    """Every period of a run in steps: the one place where epochs become steps."""

    total_steps: int
    steps_per_epoch: int
    log_every: int
    eval_every: int  # 0: only the final evaluation
    checkpoint_every: int

    @property
    def eval_schedule(self) -> tuple[int, ...]:
        """Every step the run evaluates at: each multiple of eval_every, then the last step."""
        periodic = (
            range(self.eval_every, self.total_steps, self.eval_every) if self.eval_every else ()
        )
        return (*periodic, self.total_steps)


def resolve_durations(train: ml_collections.ConfigDict, num_train_examples: int) -> Durations:
    """`train.num_steps` / `num_epochs` and each `X_every` / `X_every_epochs` (an `_epochs` value
    > 0 wins) in steps, an epoch being `num_train_examples // batch_size` steps."""
    steps_per_epoch = max(1, num_train_examples // train.batch_size)

    def steps(name: str, epochs_name: str, smallest: int) -> int:
        epochs, count = float(train[epochs_name]), int(train[name])
        value = max(1, round(epochs * steps_per_epoch)) if epochs > 0 else count
        if epochs < 0 or value < smallest:
            raise ConfigError(
                f"train.{name}={count}, train.{epochs_name}={epochs:g}: need {name} >= {smallest} "
                f"or {epochs_name} > 0."
            )
        return value

    if train.num_epochs > 0:
        total = math.ceil(train.num_epochs * steps_per_epoch)
    else:
        total = steps("num_steps", "num_epochs", 1)
    return Durations(
        total_steps=total,
        steps_per_epoch=steps_per_epoch,
        log_every=steps("log_every", "log_every_epochs", 1),
        eval_every=steps("eval_every", "eval_every_epochs", 0),
        checkpoint_every=steps("checkpoint_every", "checkpoint_every_epochs", 1),
    )


def _numeric(batch: Batch) -> Batch:
    return {k: v for k, v in batch.items() if np.asarray(v).dtype.kind in "biuf"}


def _pad(batch: Batch, size: int) -> Batch:
    def pad(v):
        v = np.asarray(v)
        widths = [(0, size - v.shape[0])] + [(0, 0)] * (v.ndim - 1)
        return np.pad(v, widths)

    return {k: pad(v) for k, v in batch.items()}


def train_step(task: Task, tx, schedule, state: TrainState, batch: Batch, rng: jax.Array):
    """One optimizer step of `task` with the optax `tx` (learning rate `schedule`):
    (state, batch, rng) -> (state, scalar metrics, gradient histograms). Pure; the loop jits it
    (and so does benchmarks/memory_table.py)."""
    rng = jax.random.fold_in(rng, state.step)
    grad_fn = jax.value_and_grad(task.loss, has_aux=True)
    (loss, (model_state, metrics)), grads = grad_fn(state.params, state.model_state, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(
        metrics,
        loss=loss,
        grad_norm=optax.tree.norm(grads),
        param_norm=optax.tree.norm(params),
        learning_rate=schedule(state.step),
    )
    hists = {f"hist/{k}": v for k, v in task.grad_histograms(grads).items()}
    new_state = state.replace(
        step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state
    )
    return new_state, metrics, hists


# Where train.cpu_kernels='auto' keeps its choice (jwsol.training.cpu), in the workdir.
CPU_KERNELS_FILE = "cpu_kernels.json"


def _from_process_0(value: int) -> int:
    """Process 0's `value` on every process."""
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


class Runner:
    """Holds what train and eval share: task, mesh, jitted functions, checkpointer, writer."""

    def __init__(
        self, task: Task, workdir: str, mode: str = "train", wandb_project: str | None = None
    ):
        config = task.config
        self.config, self.workdir, self.task = config, workdir, task
        self.mesh = sharding.make_mesh()
        self.repl = sharding.replicated(self.mesh)
        self.data = sharding.data_sharded(self.mesh)
        self.local_train_batch = sharding.local_batch_size(config.train.batch_size)
        self.local_eval_batch = sharding.local_batch_size(config.eval.batch_size, "eval.batch_size")
        self.durations = resolve_durations(config.train, task.num_train_examples)
        self.total_steps = self.durations.total_steps
        self.tx, self.schedule = make_optimizer(
            config.optimizer, self.total_steps, self.durations.steps_per_epoch
        )
        self.checkpointer = checkpoint.Checkpointer(
            workdir, config.train.keep_checkpoints, writable=mode == "train"
        )
        self.writer = run_writer.Writer(workdir, wandb_project)
        self._data_counts: dict[str, float] = {}  # for the first metrics row of a fresh run
        # On CPU, YNNPACK or Eigen kernels (jwsol.training.cpu); 'auto' picks when training starts.
        kernels = config.train.cpu_kernels
        if kernels not in cpu.KERNELS:
            raise ConfigError(f"train.cpu_kernels={kernels!r}; expected one of {cpu.KERNELS}.")
        if kernels != "auto":
            self.compiler_options = cpu.kernel_options(kernels)
        else:  # a choice saved by an earlier run here; else chosen when training starts
            saved = self._saved_kernels() if jax.process_count() == 1 else None
            self.compiler_options = None if saved is None else cpu.kernel_options(saved)
            if saved is not None:
                logging.info(
                    "train.cpu_kernels=auto: %s (as chosen before for this workdir)", saved
                )
        # Steps over it are refused before they run (jwsol.training.memory); None: no check.
        self.memory_budget = memory.budget_bytes(
            config.train.memory_budget_gib, jax.local_devices()[0]
        )
        self._predict_checked: set[tuple] = set()  # (final, batch shapes) that fit the budget
        self._jit_predicts()

    def _jit_predicts(self) -> None:
        self.predict, self.final_predict = (
            jax.jit(
                fn,
                in_shardings=(self.repl, self.data),
                out_shardings=self.data,
                compiler_options=self.compiler_options,
            )
            for fn in (self.task.predict, self.task.final_predict)
        )

    # State ------------------------------------------------------------------------------------
    def _init_state(self, rng: jax.Array, batch: Batch) -> TrainState:
        variables = self.task.init_variables(rng, batch)
        params = variables["params"]
        model_state = {k: v for k, v in variables.items() if k != "params"}
        return TrainState(jnp.zeros((), jnp.int32), params, model_state, self.tx.init(params))

    def create_state(self, batch: Batch) -> TrainState:
        """Initialises the state directly replicated over the mesh, pretrained weights merged in."""
        rng = jax.random.PRNGKey(self.config.seed)
        small = {k: v[:1] for k, v in _numeric(batch).items()}
        state = jax.jit(self._init_state, out_shardings=self.repl)(rng, small)
        variables = self.task.load_pretrained(jax.device_get(state.variables()))
        if variables is not None:
            params = variables["params"]
            model_state = {k: v for k, v in variables.items() if k != "params"}
            state = jax.device_put(
                TrainState(state.step, params, model_state, self.tx.init(params)), self.repl
            )
        return state

    def abstract_state(self, batch: Batch) -> TrainState:
        rng = jax.random.PRNGKey(self.config.seed)
        small = {k: v[:1] for k, v in _numeric(batch).items()}
        shapes = jax.eval_shape(self._init_state, rng, small)
        return checkpoint.abstract_with_sharding(shapes, self.repl)

    # Steps ------------------------------------------------------------------------------------
    def _train_step(self, state: TrainState, batch: Batch, rng: jax.Array):
        return train_step(self.task, self.tx, self.schedule, state, batch, rng)

    def _predictions(self, variables, batches, final: bool = False):
        """(host batch, outputs) of each batch, padded to the eval batch for the jitted predict
        and trimmed again: padded examples never reach an evaluator.

        With several processes a short split can leave one process without its last batches:
        it then runs empty batches shaped like its first, so that all call `predict` together.
        """
        batches, template = iter(batches), None
        while True:
            batch = next(batches, None)
            if not sharding.any_process(batch is not None):
                return
            if batch is None:
                if template is None:
                    raise ConfigError(
                        f"process {jax.process_index()} got no evaluation examples; use fewer "
                        f"processes or a larger evaluation split."
                    )
                batch = {k: v[:0] for k, v in template.items()}
            template = template or batch
            n = len(next(iter(batch.values())))
            numeric = _pad(_numeric(batch), self.local_eval_batch)
            numeric["_valid"] = np.arange(self.local_eval_batch) < n
            global_batch = sharding.to_global(numeric, self.mesh)
            predict = self.final_predict if final else self.predict
            self._check_predict_memory(predict, variables, global_batch, final)
            outputs = sharding.to_host(predict(variables, global_batch))
            if jax.process_count() == 1:
                host_batch = {k: np.asarray(v)[:n] for k, v in batch.items()}
                outputs = {k: v[:n] for k, v in outputs.items()}
            else:
                gathered = sharding.to_host(global_batch)
                valid = gathered.pop("_valid")
                host_batch = {k: v[valid] for k, v in gathered.items()}
                outputs = {k: v[valid] for k, v in outputs.items()}
            yield host_batch, outputs

    def evaluate(
        self, state: TrainState, ctx: EvalContext
    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """One pass over the eval split (then the task's figure and training-split batches) for
        evaluation `ctx`."""
        evaluator = self.task.evaluator(ctx)
        variables = state.variables()
        where = (self.config.eval.batch_size, jax.process_index(), jax.process_count())
        final = ctx.final
        for batch, outputs in self._predictions(variables, self.task.eval_batches(*where), final):
            evaluator.add(batch, outputs)
        figure_batches = self.task.figure_batches(ctx, *where)
        for batch, outputs in self._predictions(variables, figure_batches, final):
            evaluator.add_figure_batch(batch, outputs)
        train = self.task.train_eval_batches(ctx, *where)
        for batch, outputs in self._predictions(variables, train, final):
            evaluator.add_train_batch(batch, outputs)
        result = evaluator.result()
        self.documents = evaluator.documents() if ctx.final else {}  # written by _write_eval
        return result

    def _context(self, step: int, final: bool) -> EvalContext:
        d = self.durations
        return EvalContext(step, final, d.eval_schedule, step / d.steps_per_epoch)

    def _write_eval(self, step: int, final: bool, state: TrainState) -> dict[str, float]:
        start = time.time()
        metrics, figures = self.evaluate(state, self._context(step, final))
        metrics = {k: float(v) for k, v in metrics.items()}
        logging.info(
            "eval at step %d (%.1fs): %s",
            step,
            time.time() - start,
            json.dumps({k: round(v, 4) for k, v in metrics.items()}),
        )
        self.writer.scalars(step, metrics, prefix="eval/")
        self.writer.images(step, figures)
        if final:
            self.writer.json("eval_metrics.json", dict(metrics, step=step))
            for name, document in self.documents.items():
                self.writer.json(name, document)
            if self.writer.enabled:
                from jwsol.viz.curves import write_curves

                # figures/curves.png: train and eval metrics by step
                write_curves(self.workdir, self.task.curve_panels)
        return metrics

    # Modes ------------------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        config = self.config
        self.writer.json("config.json", json.loads(config.to_json_best_effort()))
        where = (config.train.batch_size, jax.process_index(), jax.process_count())
        start_step = self.checkpointer.latest_step() or 0
        batches = self.task.train_batches(start_step, *where)
        first = next(batches)
        if start_step:
            # The newest checkpoint that restores: damaged newer ones are skipped with a warning.
            state = self.checkpointer.restore(self.abstract_state(first))
            if int(state.step) != start_step:
                start_step = int(state.step)
                batches = self.task.train_batches(start_step, *where)
                first = next(batches)
            logging.info("resumed from step %d in %s", start_step, self.checkpointer.directory)
        else:
            state = self.create_state(first)
        eval_steps = set(self.durations.eval_schedule)  # the last one runs after the loop
        # What a killed run logged after its checkpoint is recomputed: drop it, so metrics.jsonl
        # ends as an uninterrupted run's; an evaluation at the resumed step may have been cut.
        self.writer.rewind(start_step, drop_eval_at_step=start_step in eval_steps)
        # A fresh run's first metrics row also carries the data loader's skip counts.
        self._data_counts = self.task.data_counts() if start_step == 0 else {}
        if self._data_counts:
            logging.info("data: %s", json.dumps(self._data_counts))
        if start_step in eval_steps and start_step < self.total_steps:
            self._write_eval(start_step, final=False, state=state)
        rng = jax.device_put(jax.random.PRNGKey(config.seed + 1), self.repl)
        if config.train.cpu_kernels == "auto":
            self._choose_kernels(state, first, rng, self.total_steps - start_step)
        train_step = self._jit_train_step(self.compiler_options, donate=True)
        self._check_memory(train_step, state, first, rng)
        log_every, checkpoint_every = self.durations.log_every, self.durations.checkpoint_every
        pending: list[dict] = []
        bar = tqdm(
            total=self.total_steps,
            initial=start_step,
            desc=config.task,
            unit="step",
            disable=jax.process_index() != 0 or not config.train.progress_bar,
            dynamic_ncols=True,
        )
        clock, seen = time.time(), 0
        batch = first
        for step in range(start_step, self.total_steps):
            if step > start_step:
                batch = next(batches)
            state, metrics, hists = train_step(
                state, sharding.to_global(_numeric(batch), self.mesh), rng
            )
            pending.append(metrics)
            seen += config.train.batch_size
            bar.update(1)
            done = step + 1
            last = done == self.total_steps
            if done % log_every == 0 or last or done % checkpoint_every == 0:
                mean = self._flush(done, pending, clock, seen)
                if done % log_every == 0 or last:
                    self.writer.histograms(done, jax.device_get(hists))
                bar.set_postfix(loss=f"{mean['loss']:.4f}", ex_s=f"{mean['examples_per_sec']:.0f}")
                pending, clock, seen = [], time.time(), 0
            if done % checkpoint_every == 0 or last:
                self.checkpointer.save(done, state)
            if done in eval_steps and not last:
                self._write_eval(done, final=False, state=state)
        bar.close()
        self.checkpointer.wait()
        metrics = self._write_eval(self.total_steps, final=True, state=state)
        self.close()
        return metrics

    def _jit_train_step(self, compiler_options, donate: bool):
        return jax.jit(
            self._train_step,
            in_shardings=(self.repl, self.data, self.repl),
            out_shardings=(self.repl, self.repl, self.repl),
            donate_argnums=0 if donate else (),
            compiler_options=compiler_options,
        )

    def _saved_kernels(self) -> str | None:
        """The kernels 'auto' chose for this workdir before (CPU_KERNELS_FILE), or None."""
        try:
            with open(os.path.join(self.workdir, CPU_KERNELS_FILE)) as f:
                kernels = json.load(f)["kernels"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return kernels if kernels in cpu.KERNELS[1:] else None

    def _choose_kernels(self, state: TrainState, batch: Batch, rng: jax.Array, steps: int) -> None:
        """train.cpu_kernels='auto': the faster of YNNPACK and Eigen on this run's train step (a
        few steps of each on the first batch, results dropped), for the run's steps and its
        evaluations. The choice is saved in the workdir (CPU_KERNELS_FILE), so that a resumed
        run and --mode=eval compile the same programs. Runs shorter than cpu.AUTO_MIN_STEPS keep
        XLA's default; several processes take process 0's choice (they must run one program)."""
        names = (None, *cpu.KERNELS[1:])
        kernels = self._saved_kernels()
        if jax.process_count() == 1 and kernels is not None:
            return  # the runner applied it when it was made
        if jax.process_count() > 1:
            kernels = names[_from_process_0(names.index(kernels))]
        how = "as chosen before for this workdir"
        if kernels is None:
            if steps < cpu.AUTO_MIN_STEPS:
                return
            args = (state, sharding.to_global(_numeric(batch), self.mesh), rng)
            chosen = cpu.choose_kernels(lambda options: self._jit_train_step(options, False), args)
            if chosen is None:  # not CPU, or an XLA without the option
                return
            kernels, seconds = chosen
            if jax.process_count() > 1:
                kernels = names[_from_process_0(names.index(kernels))]
            how = "train step " + ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in seconds.items())
            self.writer.json(
                CPU_KERNELS_FILE,
                {"kernels": kernels, "train_step_ms": {k: 1e3 * v for k, v in seconds.items()}},
            )
        logging.info("train.cpu_kernels=auto: %s (%s)", kernels, how)
        self.compiler_options = cpu.kernel_options(kernels)
        self._jit_predicts()

    def _check_memory(self, train_step, state: TrainState, batch: Batch, rng: jax.Array) -> None:
        """Compiles the train step ahead of its first call (which reuses the executable) and
        refuses it if its peak memory exceeds train.memory_budget_gib (`jwsol.training.memory`)."""
        if self.memory_budget is None:
            return
        train = self.config.train
        compiled = train_step.lower(
            state, sharding.to_global(_numeric(batch), self.mesh), rng
        ).compile()
        memory.check_step(
            compiled, self.memory_budget, "train step", "train.batch_size", train.batch_size,
            train.dtype,
        )  # fmt: skip

    def _check_predict_memory(self, predict, variables, batch: Batch, final: bool) -> None:
        """The same for the jitted predict (or final_predict), once per batch shape."""
        shapes = (final,) + tuple((k, v.shape) for k, v in sorted(batch.items()))
        if self.memory_budget is None or shapes in self._predict_checked:
            return
        compiled = predict.lower(variables, batch).compile()
        memory.check_step(
            compiled, self.memory_budget, "evaluation step (predict)", "eval.batch_size",
            self.config.eval.batch_size, self.config.train.dtype,
        )  # fmt: skip
        self._predict_checked.add(shapes)

    def _flush(self, step: int, pending: list[dict], since: float, seen: int) -> dict:
        """Averages the pending step metrics, checks the loss is finite, and writes them."""
        host = jax.device_get(pending)  # waits for the steps to finish: timing is honest
        seconds = time.time() - since
        losses = np.array([m["loss"] for m in host])
        if not np.all(np.isfinite(losses)):
            bad = step - len(host) + int(np.argmax(~np.isfinite(losses))) + 1
            latest = self.checkpointer.latest_step()
            where = (
                f"the last checkpoint, step {latest} in {self.checkpointer.directory}, was saved "
                f"before it: a rerun resumes there"
                if latest is not None
                else f"there is no checkpoint yet (the first is due at step "
                f"{self.durations.checkpoint_every}): a rerun starts over"
            )
            raise NonFiniteLossError(
                f"training loss became {losses[~np.isfinite(losses)][0]} at step {bad}. Lower "
                f"--config.optimizer.learning_rate (now {self.config.optimizer.learning_rate}) or "
                f"check the data; {where}."
            )
        mean = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        mean["examples_per_sec"] = seen / max(seconds, 1e-9)
        mean["learning_rate"] = float(host[-1]["learning_rate"])
        self.writer.scalars(step, {**mean, **self._data_counts})
        self._data_counts = {}
        return mean

    def eval_only(self) -> dict[str, float]:
        """Restores the latest checkpoint (or `eval.step`) and evaluates; no training."""
        first = next(iter(self.task.eval_batches(
            self.config.eval.batch_size, jax.process_index(), jax.process_count()
        )))  # fmt: skip
        step = self.config.eval.step
        state = self.checkpointer.restore(self.abstract_state(first), step if step >= 0 else None)
        metrics = self._write_eval(int(state.step), final=True, state=state)
        self.close()
        return metrics

    def close(self) -> None:
        self.checkpointer.close()
        self.writer.close()


def run(
    task: Task, workdir: str, mode: str = "train", wandb_project: str | None = None
) -> dict[str, float]:
    """Trains `task` (resuming from the newest checkpoint in `workdir` that restores) or evaluates
    it, holding the workdir's lock; returns the final metrics. `jwsol.tasks.build(config)` makes the task of a config.
    wandb_project: also mirror the run's scalars, images and config to this W&B project."""
    if mode not in ("train", "eval"):
        raise UserError(f"--mode={mode!r} is unknown; use train or eval.")
    lock.prepare_workdir(workdir)
    # One writer per workdir; with several processes, process 0 writes for all of them.
    held = lock.hold(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with held:
        runner = Runner(task, workdir, mode, wandb_project)
        return runner.train() if mode == "train" else runner.eval_only()
