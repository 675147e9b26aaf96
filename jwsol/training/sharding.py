"""Device mesh, shardings and host-batch -> global-array conversion (single and multi-host)."""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jwsol.errors import ConfigError

DATA_AXIS = "data"


def maybe_initialize_distributed(
    requested: bool,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Calls `jax.distributed.initialize()` when asked by flag, by JWSOL_DISTRIBUTED=1, or by
    giving a coordinator address.

    Without explicit values, the coordinator address comes from JAX_COORDINATOR_ADDRESS and the
    process count and id from the cluster's auto-detection (SLURM, Open MPI, Cloud TPU). CPU
    processes exchange collectives through gloo (several processes on one machine work too:
    tests/training/test_distributed.py).
    """
    explicit = coordinator_address is not None
    if not (requested or explicit or os.environ.get("JWSOL_DISTRIBUTED", "") == "1"):
        return
    if explicit and (num_processes is None or process_id is None):
        raise ConfigError("--coordinator_address needs --num_processes and --process_id as well.")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def make_mesh() -> Mesh:
    """A 1-D mesh over every device of every process; the batch is split along `data`."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh, the rest replicated."""
    return NamedSharding(mesh, P(DATA_AXIS))


def local_batch_size(global_batch_size: int, field: str = "train.batch_size") -> int:
    """The share of `global_batch_size` this process loads; checks it divides over the devices."""
    devices, processes = jax.device_count(), jax.process_count()
    if global_batch_size <= 0 or global_batch_size % devices:
        lower = max(devices, global_batch_size // devices * devices)
        raise ConfigError(
            f"{field}={global_batch_size} does not divide over {devices} devices; use a multiple "
            f"of {devices} (e.g. --config.{field}={lower})."
        )
    return global_batch_size // processes


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host-local batch (this process's slice, leading axis) -> global arrays sharded on `data`."""
    sharding = data_sharded(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }


def to_host(tree):
    """Global arrays -> NumPy on every host (gathers across processes when there are several)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def any_process(flag: bool) -> bool:
    """True if `flag` is true on some process (every process must call this together)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
