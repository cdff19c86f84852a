"""Meshes and array placement: the one place the package builds them.

Every jitted computation in the package runs on a mesh, even a one-device
one, and every array reaches a global sharding through
`jax.make_array_from_process_local_data`: each process hands over only the
rows it holds (or the whole array, for a replicated sharding), so the same code
runs as one process or as many (`jax.distributed`). A `jax.device_put` of a
host array onto a sharding that spans processes would instead require every
process to hold the whole array and is never used here.
"""

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

DATA_AXIS = 'data'
MODELS_AXIS = 'models'


def make_mesh(num_devices: int | None = None, axis: str = DATA_AXIS,
              devices: Sequence[Any] | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first `num_devices` devices (default: all, every host).

  Args:
    num_devices: how many of `devices` to use (None: all of them).
    axis: the mesh axis name.
    devices: the devices (default `jax.devices()`, in every process).

  Returns:
    The mesh, with an `Auto` axis type (shardings propagate through jit).

  Raises:
    ValueError: `num_devices` is not positive or exceeds the devices given.
  """
  devices = list(jax.devices() if devices is None else devices)
  if num_devices is None:
    num_devices = len(devices)
  if not 0 < num_devices <= len(devices):
    raise ValueError(f'num_devices={num_devices}, but {len(devices)} devices '
                     'are visible; choose 1..{len(devices)}.')
  return jax.make_mesh((num_devices,), (axis,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:num_devices])


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """The sharding that keeps a whole copy on every device of `mesh`."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def split(mesh: jax.sharding.Mesh, axis: str | None = None
          ) -> jax.sharding.NamedSharding:
  """The sharding that splits the leading dimension over `axis` (default: the
  mesh's only axis)."""
  axis = axis if axis is not None else mesh.axis_names[0]
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))


def num_shards(sharding: jax.sharding.NamedSharding) -> int:
  """How many pieces the leading dimension is cut into by `sharding`."""
  spec = sharding.spec
  if not spec or spec[0] is None:
    return 1
  names = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
  return int(np.prod([sharding.mesh.shape[n] for n in names]))


def padded_length(n: int, multiple: int) -> int:
  """`n` rounded up to a positive multiple of `multiple`."""
  return max(multiple, -(-n // multiple) * multiple)


def global_array(local: Any, sharding: jax.sharding.NamedSharding,
                 global_shape: tuple[int, ...] | None = None) -> jax.Array:
  """One array on `sharding` from this process's part of it.

  Args:
    local: the rows this process holds (the whole array if `sharding` is
      replicated or there is one process).
    sharding: the target sharding.
    global_shape: the full shape (default: inferred, assuming every process
      holds as many rows as this one).

  Returns:
    A global `jax.Array`.
  """
  local = np.asarray(local)
  if jax.process_count() == 1 and global_shape is None:
    global_shape = local.shape
  return jax.make_array_from_process_local_data(sharding, local, global_shape)


def put(tree: Any, sharding: jax.sharding.NamedSharding) -> Any:
  """`global_array` of every leaf of a pytree (jax arrays pass through host)."""
  return jax.tree.map(lambda a: global_array(np.asarray(a), sharding), tree)


def put_replicated(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Every leaf of `tree` replicated on `mesh` (each process holds it all)."""
  return put(tree, replicated(mesh))


def process_rows(n: int) -> slice:
  """The contiguous slice of n rows this process reads (equal parts, the last
  ones shorter only when n does not divide; callers pad to equal parts)."""
  per = -(-n // jax.process_count())
  start = min(n, jax.process_index() * per)
  return slice(start, min(n, start + per))
