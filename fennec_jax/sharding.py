"""Meshes and array placement: the one place the package builds them.

Every jitted computation in the package runs on a mesh, even a one-device
one, and every array reaches a global sharding through
`jax.make_array_from_process_local_data`: each process hands over only the
rows it holds (or the whole array, for a replicated sharding), so the same code
runs as one process or as many (`jax.distributed`). A `jax.device_put` of a
host array onto a sharding that spans processes would instead require every
process to hold the whole array and is never used here.

Host-sized work that every process repeats on identical inputs (the
leave-one-task-out evaluation of a multi-process run) runs inside
`default_devices(...)`: meshes built without explicit devices use the given
(local) ones, so each process computes alone and no array spans processes.
"""

from collections.abc import Iterator, Sequence
import contextlib
from typing import Any

import jax
import numpy as np

DATA_AXIS = 'data'
MODELS_AXIS = 'models'

_default_devices: list[Any] | None = None  # None: `jax.devices()`.


@contextlib.contextmanager
def default_devices(devices: Sequence[Any]) -> Iterator[None]:
  """Inside the block, `make_mesh()` without `devices` uses `devices`.

  Process-wide (not per thread). E.g. `default_devices(jax.local_devices()
  [:1])`: work every process repeats runs on one device of its own.

  Raises:
    ValueError: an empty device list, or a device of another process.
  """
  global _default_devices
  devices = list(devices)
  if not devices:
    raise ValueError('default_devices needs at least one device.')
  foreign = [d for d in devices if d.process_index != jax.process_index()]
  if foreign:
    raise ValueError(f'default_devices: {foreign[:2]} belong to another '
                     'process; pass devices of this one (jax.local_devices()).')
  saved, _default_devices = _default_devices, devices
  try:
    yield
  finally:
    _default_devices = saved


def make_mesh(num_devices: int | None = None, axis: str = DATA_AXIS,
              devices: Sequence[Any] | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first `num_devices` devices (default: all of them).

  Args:
    num_devices: how many of `devices` to use (None: all of them).
    axis: the mesh axis name.
    devices: the devices, in mesh order (default `jax.devices()`: every
      process's; inside `default_devices`, those).

  Returns:
    The mesh, with an `Auto` axis type (shardings propagate through jit).

  Raises:
    ValueError: `num_devices` is not an int in 1..len(devices).
  """
  if devices is None:
    devices = (_default_devices if _default_devices is not None
               else jax.devices())
  devices = list(devices)
  if num_devices is None:
    num_devices = len(devices)
  if (isinstance(num_devices, bool)
      or not isinstance(num_devices, (int, np.integer))
      or not 0 < num_devices <= len(devices)):
    raise ValueError(f'num_devices={num_devices!r}, but {len(devices)} '
                     f'devices are visible; choose an int in '
                     f'1..{len(devices)}.')
  return jax.make_mesh((num_devices,), (axis,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:num_devices])


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """The sharding that keeps a whole copy on every device of `mesh`."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def split(mesh: jax.sharding.Mesh, axis: str | None = None
          ) -> jax.sharding.NamedSharding:
  """The sharding that splits the leading dimension over a mesh axis.

  Args:
    mesh: the mesh.
    axis: the axis to split over (default: the mesh's first axis).

  Returns:
    A `NamedSharding` with `PartitionSpec(axis)`.
  """
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
  """`n` rounded up to a positive multiple of `multiple`.

  Args:
    n: a length >= 0 (0 gives `multiple`: shapes are never empty).
    multiple: e.g. the number of shards of the leading dimension.

  Returns:
    The smallest multiple of `multiple` that is >= max(n, 1).

  Raises:
    ValueError: `n` < 0 or `multiple` < 1.
  """
  if n < 0 or multiple < 1:
    raise ValueError(f'padded_length needs n >= 0 and multiple >= 1, got '
                     f'n={n}, multiple={multiple}.')
  return max(multiple, -(-n // multiple) * multiple)


def global_array(local: Any, sharding: jax.sharding.NamedSharding,
                 global_shape: tuple[int, ...] | None = None) -> jax.Array:
  """One array on `sharding` from this process's part of it.

  Args:
    local: the rows this process holds (the whole array if `sharding` is
      replicated or on this process's devices alone).
    sharding: the target sharding.
    global_shape: the full shape (default: inferred, assuming every process
      holds as many rows as this one).

  Returns:
    A global `jax.Array`.

  Raises:
    ValueError: the leading dimension does not divide into the shards
      (pad it to `padded_length(n, num_shards(sharding))`).
  """
  local = np.asarray(local)
  if global_shape is None and (jax.process_count() == 1
                               or sharding.is_fully_addressable):
    global_shape = local.shape
  shards = num_shards(sharding)
  if global_shape is not None and shards > 1 and (
      not global_shape or global_shape[0] % shards):
    raise ValueError(f'global_array: shape {tuple(global_shape)} cannot be '
                     f'split into {shards} shards along its first dimension; '
                     'pad it to padded_length(n, num_shards(sharding)) rows.')
  return jax.make_array_from_process_local_data(sharding, local, global_shape)


def put(tree: Any, sharding: jax.sharding.NamedSharding) -> Any:
  """Every leaf of a pytree, held whole by every process, onto `sharding`.

  Where `sharding` splits the leading dimension, each process hands over
  only its own rows (`process_rows`); jax arrays go through the host.
  """
  def one(a):
    a = np.asarray(a)
    if num_shards(sharding) == 1 or sharding.is_fully_addressable:
      return global_array(a, sharding, a.shape)  # This process holds all.
    return global_array(a[process_rows(a.shape[0])], sharding, a.shape)
  return jax.tree.map(one, tree)


def put_replicated(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Every leaf of `tree` replicated on `mesh` (each process holds it all)."""
  return put(tree, replicated(mesh))


def process_rows(n: int) -> slice:
  """The contiguous slice of `n` rows this process reads.

  The processes take equal parts in process order, the last ones shorter
  only when `n` does not divide (callers pad to equal parts).

  Args:
    n: the number of rows of the global array.

  Returns:
    This process's slice (all of `range(n)` in a single process).
  """
  per = -(-n // jax.process_count())
  start = min(n, jax.process_index() * per)
  return slice(start, min(n, start + per))
