"""Starting `jax.distributed` before any JAX backend is used.

On a TPU VM (or a cluster JAX knows: SLURM, Kubernetes) `initialize()`
finds the coordinator, the process count and this process's id by itself.
On one CPU host, `initialize(coordinator='127.0.0.1:PORT', num_processes=N,
process_id=i, cpu_devices=2)` makes N processes of 2 fake CPU devices each
that exchange arrays over gloo (`jax_cpu_collectives_implementation`), so
the multi-process code paths run here exactly as across TPU hosts.
"""

import socket

from absl import logging
import jax
from jax.experimental import multihost_utils


def free_port() -> int:
  """A TCP port free on localhost now (for the coordinator)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return int(s.getsockname()[1])


def initialize(coordinator: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None,
               cpu_devices: int | None = None) -> None:
  """Joins this process to the run's JAX processes.

  Args:
    coordinator: 'host:port' of process 0 (None: detected, e.g. on a TPU
      VM).
    num_processes: the number of processes (None: detected).
    process_id: this process's index (None: detected).
    cpu_devices: fake CPU devices of this process (CPU runs only; uses gloo
      collectives).

  Raises:
    RuntimeError: called after JAX's backend is already in use.
  """
  if cpu_devices:
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_num_cpu_devices', int(cpu_devices))
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator,
                             num_processes=num_processes,
                             process_id=process_id)
  if jax.process_count() > 1:
    # The first collective sets up the CPU collectives (gloo), which waits
    # only 30 s for the other processes: done now, while they start
    # together, not at a barrier that one reaches minutes after another.
    multihost_utils.sync_global_devices('fennec: processes started')
  logging.info('jax.distributed: process %d of %d, %d local / %d global '
               'devices', jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
