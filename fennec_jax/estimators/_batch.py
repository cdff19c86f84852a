"""The machinery that runs one estimator core over many models in one call.

An estimator is a `Spec`: a host-side `prepare` (validates labels and options,
returns static options and label-derived arrays shared by every model) and a
pure jnp `core(x, **arrays, **static) -> scalar` for ONE model. `run` stacks
the models, places them on a mesh (on accelerators the model axis is sharded
when the device count divides it), and calls `jit(vmap(core))` once;
`batch_size` switches to `jax.lax.map(..., batch_size=k)` (still one jitted
call) to bound memory.
Compiled functions are cached per (estimator, static options). The number of
classes is not a static option: `prepare` passes it as data next to the labels
and sizes class axes by a static bound (`max_classes`, see
`_common.class_bound`), so targets with different class counts (same n, d and
bound) reuse one compilation. `trace_count(name)` says how often an estimator
was traced, which is how tests prove it.
"""

import collections
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import sharding
from fennec_jax.estimators import _common
from fennec_jax.estimators import preprocess


class Spec(NamedTuple):
  """One estimator: its name, host-side `prepare` and per-model `core`.

  `kind` says what the stacked input holds (and how it is checked):
  'features' ([m, n, d] floats), 'source_probs' ([m, n, c_src]
  probabilities) or 'source_labels' ([m, n] integer source-class
  predictions).
  """
  name: str
  core: Callable[..., jnp.ndarray]
  prepare: Callable[..., tuple[dict[str, Any], dict[str, Any]]]
  kind: str = 'features'
  doc: str = ''
  default_batch_size: int | None = None


def _with_pca(core: Callable, pca: tuple[int, str, int]) -> Callable:
  """Wraps a core so it first projects the features on their top PCs."""
  dim, method, seed = pca

  def fn(x, **kwargs):
    key = jax.random.key(seed) if method == 'randomized' else None
    return core(preprocess.pca(x, dim, method=method, key=key), **kwargs)

  return fn


def input_is_valid(kind: str, x: jnp.ndarray) -> jnp.ndarray:
  """Device-side check of one model's input (see `Spec.kind`)."""
  if kind == 'source_labels':
    return jnp.all(x >= 0)
  ok = jnp.all(jnp.isfinite(x))
  if kind == 'source_probs':
    ok &= jnp.all(x >= 0) & jnp.all(jnp.abs(x.sum(-1) - 1.0) <= 1e-3)
  return ok


_TRACES: collections.Counter = collections.Counter()


def trace_count(name: str) -> int:
  """How many times estimator `name` has been traced (compiled) so far."""
  return _TRACES[name]


@functools.lru_cache(maxsize=256)
def _compiled(name: str, kind: str, core: Callable, static: tuple,
              batch_size: int | None, sharded: bool,
              pca: tuple[int, str, int] | None = None):
  if pca is not None:
    core = _with_pca(core, pca)
  fn = functools.partial(core, **dict(static))

  def batched(stack, arrays):
    _TRACES[name] += 1  # Runs once per trace, not per call.
    # Input checks run on the device, fused with the scoring: a host-side
    # pass over a [64, 2000, 768] stack would cost more than the scores.
    valid = jax.vmap(functools.partial(input_is_valid, kind))(stack)
    if batch_size is None:
      return jax.vmap(lambda x: fn(x, **arrays))(stack), valid
    return jax.lax.map(lambda x: fn(x, **arrays), stack,
                       batch_size=batch_size), valid

  if not sharded:
    return jax.jit(batched)
  mesh = sharding.make_mesh(axis=sharding.MODELS_AXIS)
  model_sharding = sharding.split(mesh)
  replicated = sharding.replicated(mesh)
  return jax.jit(batched, in_shardings=(model_sharding, replicated),
                 out_shardings=(model_sharding, model_sharding))


def _name_models(model_ids: Sequence[str], positions: np.ndarray) -> str:
  """'a, b, c' for the models at `positions` (the first 20, then a count)."""
  names = ', '.join(str(model_ids[i]) for i in positions[:20])
  more = positions.size - 20
  return names + (f' and {more} more' if more > 0 else '')


def run(spec: Spec, stack: np.ndarray, labels: np.ndarray,
        options: dict[str, Any], *, shard_on_cpu: bool = False,
        explain_invalid: Callable[[np.ndarray], Any] | None = None,
        model_ids: Sequence[str] | None = None) -> np.ndarray:
  """Scores m models whose inputs are stacked in `stack` ([m, n, ...]).

  Args:
    spec: the estimator.
    stack: [m, n, d] features (or [m, n, c] source probabilities, or [m, n]
      source labels), already validated.
    labels: [n] target labels (validated by `spec.prepare`).
    options: estimator options; `batch_size` (models per vmapped chunk) is
      consumed here.
    shard_on_cpu: also shard over several CPU devices. Off by default:
      with 2 CPU devices on a 2-core host, a sharded 8 x 2000 x 768 LogME call
      did not finish in 300 s (unsharded: 2 s), so CPU runs stay on one
      device; accelerators shard whenever the device count divides m.
    explain_invalid: host-side validator called on the models whose input
      failed the device-side check; it should raise a descriptive
      ValueError.
    model_ids: one name per stacked model, used in errors and warnings
      (default: `#i`, the model's position in `stack`).

  Returns:
    [m] float64 NumPy scores.

  Raises:
    ValueError: when a model's input holds NaN/inf (or, for source
      probabilities, negative values or rows not summing to 1).
  """
  options = dict(options)
  batch_size = options.pop('batch_size', spec.default_batch_size)
  pca = options.pop('pca', None)
  if pca is not None:
    pca = dict(pca) if isinstance(pca, dict) else dict(dim=int(pca))
    unknown = set(pca) - {'dim', 'method', 'seed'}
    if spec.kind != 'features' or unknown or 'dim' not in pca:
      raise ValueError(
          f"{spec.name}: pca must be an int or {{'dim', 'method', 'seed'}} "
          f'and applies to feature-based estimators; got {pca}.')
    pca = (int(pca['dim']), str(pca.get('method', 'exact')),
           int(pca.get('seed', 0)))
    if pca[1] not in ('exact', 'randomized'):
      raise ValueError(f"pca method must be 'exact' or 'randomized', got "
                       f'{pca[1]!r}.')
  # prepare() only reads shapes/dtype; with PCA it must see the projected
  # width (a zero-copy broadcast view stands in for the projected stack).
  shape_view = stack if pca is None else np.broadcast_to(
      np.zeros((), stack.dtype),
      stack.shape[:2] + (min(pca[0], stack.shape[1], stack.shape[2]),))
  static, arrays = spec.prepare(shape_view, labels, **options)
  m = stack.shape[0]
  sharded = (jax.device_count() > 1 and m % jax.device_count() == 0 and
             (shard_on_cpu or jax.default_backend() != 'cpu'))
  fn = _compiled(spec.name, spec.kind, spec.core,
                 tuple(sorted(static.items())),
                 None if batch_size is None else int(batch_size), sharded, pca)
  scores, valid = jax.device_get(fn(jnp.asarray(stack), arrays))
  if model_ids is None:
    model_ids = [f'#{i}' for i in range(m)]
  elif len(model_ids) != m:
    raise ValueError(f'{spec.name}: {len(model_ids)} model ids for {m} '
                     'stacked models.')
  invalid = np.flatnonzero(~np.asarray(valid))
  if invalid.size:
    if explain_invalid is not None:
      try:
        explain_invalid(stack[invalid])
      except ValueError as e:
        raise ValueError(f'{spec.name}: model(s) '
                         f'{_name_models(model_ids, invalid)}: {e}') from None
    raise ValueError(f'{spec.name}: invalid {spec.kind} (NaN/inf) for '
                     f'model(s) {_name_models(model_ids, invalid)}.')
  scores = np.asarray(scores, dtype=np.float64)
  bad = np.flatnonzero(~np.isfinite(scores))
  if bad.size:
    logging.warning('%s: non-finite score for model(s) %s; see the '
                    'estimator docstring for its degenerate cases.',
                    spec.name, _name_models(model_ids, bad))
  _common.warn_if_all_equal(spec.name, scores)
  return scores
