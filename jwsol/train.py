"""Trains or evaluates a jwsol job (`jwsol-train`, `python train.py`, `python -m jwsol.train`):

    jwsol-train --config configs/NAME.py[:VARIANT] --workdir DIR [--mode eval] [--config.a.b=V]

It resolves the config's task (jwsol.tasks) and hands it to the one loop (jwsol.training.loop);
the logic lives there. Flags are defined when `main` runs, not on import, so importing this
module next to another absl program (jwsol.viz.show) does not redefine `--config`.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys

from absl import app, flags, logging

from jwsol import errors

FLAGS = flags.FLAGS
WANDB_DEFAULT_PROJECT = "jwsol"


def wandb_argv(argv: list[str]) -> list[str]:
    """argv with a bare `--wandb` (no project after it) written `--wandb=jwsol`, so that
    `--wandb [PROJECT]` parses as an absl string flag."""
    out = []
    for k, arg in enumerate(argv):
        follows = argv[k + 1] if k + 1 < len(argv) else "--"
        if arg == "--wandb" and follows.startswith("-"):
            arg = f"--wandb={WANDB_DEFAULT_PROJECT}"
        out.append(arg)
    return out


def _define_flags() -> None:
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        "config", None, "Job config file, configs/NAME.py[:VARIANT].", lock_config=True
    )
    flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, figures.")
    flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes if possible) or eval.")
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
    flags.DEFINE_string(
        "coordinator_address", None, "host:port of process 0 (implies --distributed; else auto)."
    )
    flags.DEFINE_integer(
        "num_processes", None, "Processes in the job (with --coordinator_address)."
    )
    flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
    flags.DEFINE_bool(
        "tune_malloc", True, "Let glibc keep freed memory (fewer page faults, faster CPU steps)."
    )
    flags.DEFINE_bool(
        "verbose", False, "On a failure, print the full traceback before the error line."
    )
    flags.DEFINE_string(
        "wandb",
        None,
        "Mirror the run's scalars, images and config to this Weights & Biases project "
        f"(bare --wandb: {WANDB_DEFAULT_PROJECT!r}); needs `pip install wandb`.",
    )
    flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries:
    """Drops INFO records from orbax (dozens per checkpoint); warnings still pass."""

    def filter(self, record) -> bool:
        return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def _run() -> None:
    if FLAGS.wandb:
        from jwsol.training.writer import import_wandb

        import_wandb()  # a missing package fails here, before any data or compilation
    import tensorflow as tf

    # NOTE: tf.data runs on the host; TensorFlow must not grab GPU memory that JAX needs.
    tf.config.set_visible_devices([], "GPU")
    from jwsol import tasks
    from jwsol.training import cpu, loop, sharding

    if FLAGS.tune_malloc:
        logging.info("glibc malloc tuned for reuse: %s", cpu.tune_malloc())
    sharding.maybe_initialize_distributed(
        FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
    )
    loop.run(tasks.build(FLAGS.config), FLAGS.workdir, FLAGS.mode, FLAGS.wandb)


def _main(argv) -> None:
    del argv
    logging.get_absl_logger().addFilter(_QuietLibraries())
    status = errors.run_main(_run, FLAGS.verbose)
    logging.flush()
    if status:
        sys.exit(status)


def main() -> None:
    """The command line: absl flags from sys.argv, one `error:` line on a failure."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow only feeds data; hush it
    _define_flags()
    sys.argv = wandb_argv(sys.argv)
    app.run(_main, flags_parser=errors.parse_flags)


if __name__ == "__main__":
    main()
