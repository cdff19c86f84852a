"""Ranking metrics for model recommendation, in JAX (jit- and vmap-able).

Every metric takes `pred` and `true` of shape [n] and an optional boolean
`mask` [n] that restricts it to a subset with a static shape, so one compiled
function serves many tasks with different observed models:

  jax.vmap(metrics.weighted_tau)(pred[T, n], true[T, n], mask[T, n])

Definitions (all follow SciPy where SciPy has the metric):
  * `pearson`: `scipy.stats.pearsonr(pred, true).statistic`.
  * `spearman`: Pearson of average ranks (ties share their mean rank), as
    `scipy.stats.spearmanr`.
  * `kendall_tau`: tau-b, as `scipy.stats.kendalltau` (default variant).
  * `weighted_tau`: `scipy.stats.weightedtau(pred, true)` with its defaults
    (hyperbolic weigher 1 / (1 + r), additive pair weights, rank=True), ties
    included. For a ranking r (0 = first) and w_i = 1 / (1 + r_i),
      tau_r = sum_{i<j} (w_i + w_j) sgn(x_i - x_j) sgn(y_i - y_j)
              / sqrt(sum_{i<j, x_i != x_j} (w_i + w_j)
                     * sum_{i<j, y_i != y_j} (w_i + w_j)),
    and rank=True averages tau over two rankings: by decreasing (x, y)
    lexicographically, and by decreasing (y, x). (The order inside joint ties
    does not change tau.) The result is clipped to [-1, 1].
  * `top_k_regret`: max(true) - max(true among the k highest pred).
  * `rel_at_k`: max(true among the k highest pred) / max(true); 1 is
    perfect. It assumes positive scores (accuracies); for other scores use
    `top_k_regret`.

Ties in `pred` for the top-k metrics are broken towards the lower index
(`jax.lax.top_k`), so a constant predictor is not rewarded by chance.

Undefined values are NaN: fewer than two masked entries, or a constant
`pred` or `true` for the correlations (SciPy also returns NaN there).

Cost and precision: the rank metrics are O(n^2) in time and memory (exact with
ties, fine for n up to a few thousand models). In float64 (enable x64) they
match SciPy to ~1e-12. In float32 (JAX's default) XLA's pairwise sums keep
them within 2e-7 of SciPy (measured for n = 50 to 1000 on random and rounded
inputs; the tests assert 1e-6); `pearson` also depends on the conditioning
of the data. The outputs take the floating dtype of the inputs (at least
float32).
"""

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def _prepare(pred: Any, true: Any, mask: Any) -> tuple[Array, Array, Array]:
  pred = jnp.asarray(pred)
  true = jnp.asarray(true)
  dtype = jnp.promote_types(jnp.result_type(pred, true), jnp.float32)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.float32
  pred = pred.astype(dtype)
  true = true.astype(dtype)
  if pred.ndim != 1 or pred.shape != true.shape:
    raise ValueError(f'pred {pred.shape} and true {true.shape} must be 1-D '
                     'with the same shape (vmap for batches of tasks).')
  if mask is None:
    mask = jnp.ones(pred.shape, bool)
  else:
    mask = jnp.asarray(mask)
    if mask.shape != pred.shape:
      raise ValueError(f'mask {mask.shape} must have shape {pred.shape}.')
    mask = mask.astype(bool)
  # Unmasked entries may hold NaN; make them harmless (they carry weight 0).
  pred = jnp.where(mask, pred, 0)
  true = jnp.where(mask, true, 0)
  return pred, true, mask


def _sign_matrix(x: Array) -> Array:
  """sgn(x_i - x_j) as an exact comparison (no subtraction overflow)."""
  xi, xj = x[:, None], x[None, :]
  return (xi > xj).astype(x.dtype) - (xi < xj).astype(x.dtype)


def _pair_mask(mask: Array) -> Array:
  """[n, n] True for pairs i < j with both entries masked."""
  n = mask.shape[0]
  upper = jnp.arange(n)[:, None] < jnp.arange(n)[None, :]
  return upper & mask[:, None] & mask[None, :]


def _pearson(x: Array, y: Array, mask: Array) -> Array:
  w = mask.astype(x.dtype)
  count = w.sum()
  safe = jnp.maximum(count, 1)
  dx = (x - (w * x).sum() / safe) * w
  dy = (y - (w * y).sum() / safe) * w
  sxx, syy, sxy = (dx * dx).sum(), (dy * dy).sum(), (dx * dy).sum()
  r = sxy / jnp.sqrt(sxx * syy)
  r = jnp.clip(r, -1, 1)
  return jnp.where((count >= 2) & (sxx > 0) & (syy > 0), r, jnp.nan)


def pearson(pred: Any, true: Any, mask: Any = None) -> Array:
  """Pearson correlation of `pred` and `true` over `mask` (NaN if undefined).

  Args:
    pred: [n] predicted scores.
    true: [n] true scores.
    mask: optional bool [n]; only True entries count.

  Returns:
    A scalar.
  """
  return _pearson(*_prepare(pred, true, mask))


def average_ranks(x: Any, mask: Any = None) -> Array:
  """1-based average ranks among the masked entries (0 where unmasked).

  Ties share their mean rank, as `scipy.stats.rankdata(method='average')`.

  Args:
    x: [n] values.
    mask: optional bool [n].

  Returns:
    [n] ranks in the dtype of `x` (at least float32).
  """
  x, _, mask = _prepare(x, x, mask)
  return _average_ranks(x, mask)


def _average_ranks(x: Array, mask: Array) -> Array:
  valid = mask[None, :]
  less = ((x[None, :] < x[:, None]) & valid).sum(axis=1)
  equal = ((x[None, :] == x[:, None]) & valid).sum(axis=1)   # counts itself
  ranks = less.astype(x.dtype) + (equal.astype(x.dtype) + 1) / 2
  return jnp.where(mask, ranks, 0)


def spearman(pred: Any, true: Any, mask: Any = None) -> Array:
  """Spearman rank correlation over `mask` (average ranks for ties).

  Args:
    pred: [n] predicted scores.
    true: [n] true scores.
    mask: optional bool [n].

  Returns:
    A scalar (NaN if undefined).
  """
  pred, true, mask = _prepare(pred, true, mask)
  return _pearson(_average_ranks(pred, mask), _average_ranks(true, mask), mask)


def kendall_tau(pred: Any, true: Any, mask: Any = None) -> Array:
  """Kendall's tau-b over `mask` (ties in either argument handled).

  tau_b = sum_{i<j} sgn(dx) sgn(dy) / sqrt(#pairs untied in x *
  #pairs untied in y), as `scipy.stats.kendalltau`.

  Args:
    pred: [n] predicted scores.
    true: [n] true scores.
    mask: optional bool [n].

  Returns:
    A scalar (NaN if undefined).
  """
  pred, true, mask = _prepare(pred, true, mask)
  pairs = _pair_mask(mask).astype(pred.dtype)
  sx, sy = _sign_matrix(pred), _sign_matrix(true)
  num = (pairs * sx * sy).sum()
  nx = (pairs * sx * sx).sum()
  ny = (pairs * sy * sy).sum()
  tau = jnp.clip(num / jnp.sqrt(nx * ny), -1, 1)
  return jnp.where((nx > 0) & (ny > 0), tau, jnp.nan)


def _lexicographic_ranks(x: Array, y: Array, mask: Array) -> Array:
  """0-based rank by decreasing x, then decreasing y, then index."""
  n = x.shape[0]
  xi, xj = x[:, None], x[None, :]
  yi, yj = y[:, None], y[None, :]
  before = (xj > xi) | ((xj == xi) & (yj > yi)) | (
      (xj == xi) & (yj == yi) &
      (jnp.arange(n)[None, :] < jnp.arange(n)[:, None]))
  return (before & mask[None, :]).sum(axis=1)


def _weighted_tau_one_ranking(x: Array, y: Array, mask: Array,
                              sx: Array, sy: Array, pairs: Array) -> Array:
  rank = _lexicographic_ranks(x, y, mask)
  w = 1 / (1 + rank.astype(x.dtype))
  weight = pairs * (w[:, None] + w[None, :])
  num = (weight * sx * sy).sum()
  wx = (weight * sx * sx).sum()
  wy = (weight * sy * sy).sum()
  return num / jnp.sqrt(wx * wy)


def weighted_tau(pred: Any, true: Any, mask: Any = None) -> Array:
  """`scipy.stats.weightedtau(pred, true)` (defaults) over `mask`.

  Hyperbolic weigher, additive pair weights, rank=True (the average of the
  two lexicographic rankings; see the module docstring), ties included.

  Args:
    pred: [n] predicted scores.
    true: [n] true scores.
    mask: optional bool [n].

  Returns:
    A scalar (NaN if `pred` or `true` is constant over the mask).
  """
  pred, true, mask = _prepare(pred, true, mask)
  pairs = _pair_mask(mask).astype(pred.dtype)
  sx, sy = _sign_matrix(pred), _sign_matrix(true)
  tau = (_weighted_tau_one_ranking(pred, true, mask, sx, sy, pairs) +
         _weighted_tau_one_ranking(true, pred, mask, sy, sx, pairs)) / 2
  defined = ((pairs * sx * sx).sum() > 0) & ((pairs * sy * sy).sum() > 0)
  return jnp.where(defined, jnp.clip(tau, -1, 1), jnp.nan)


def _top_k_true(pred: Array, true: Array, mask: Array, k: int
                ) -> tuple[Array, Array]:
  """(best true among the top-k predicted, best true), over the mask."""
  if not isinstance(k, int) or k < 1:
    raise ValueError(f'k must be a positive int, got {k!r}.')
  if k > pred.shape[0]:
    raise ValueError(f'k={k} exceeds the number of entries {pred.shape[0]}.')
  neg_inf = jnp.array(-jnp.inf, pred.dtype)
  _, top = jax.lax.top_k(jnp.where(mask, pred, neg_inf), k)
  best_of_top = jnp.where(mask[top], true[top], neg_inf).max()
  best = jnp.where(mask, true, neg_inf).max()
  defined = mask.any()
  return (jnp.where(defined, best_of_top, jnp.nan),
          jnp.where(defined, best, jnp.nan))


def top_k_regret(pred: Any, true: Any, k: int = 1, mask: Any = None) -> Array:
  """Best true score minus the best true score among the top-k predicted.

  0 means the best model is among the k recommended. Ties in `pred` are
  broken towards the lower index.

  Args:
    pred: [n] predicted scores.
    true: [n] true scores.
    k: how many top-predicted entries count (static).
    mask: optional bool [n]. If fewer than k entries are masked, all count.

  Returns:
    A scalar >= 0 (NaN if the mask is empty).

  Raises:
    ValueError: if k < 1 or k > n.
  """
  pred, true, mask = _prepare(pred, true, mask)
  best_of_top, best = _top_k_true(pred, true, mask, k)
  return best - best_of_top


def rel_at_k(pred: Any, true: Any, k: int = 1, mask: Any = None) -> Array:
  """Best true score among the top-k predicted divided by the best true score.

  1 is perfect; meant for positive scores such as accuracies.

  Args:
    pred: [n] predicted scores.
    true: [n] true scores.
    k: how many top-predicted entries count (static).
    mask: optional bool [n].

  Returns:
    A scalar (NaN if the mask is empty).

  Raises:
    ValueError: if k < 1 or k > n.
  """
  pred, true, mask = _prepare(pred, true, mask)
  best_of_top, best = _top_k_true(pred, true, mask, k)
  return best_of_top / best


def ranking_metrics(pred: Any, true: Any, mask: Any = None,
                    ks: tuple[int, ...] = (1,)) -> dict[str, Array]:
  """All metrics at once: a dict name -> scalar (vmap-able).

  Keys: pearson, spearman, kendall_tau, weighted_tau, top{k}_regret, rel@{k}.

  Args:
    pred: [n] predicted scores.
    true: [n] true scores.
    mask: optional bool [n].
    ks: the k values for top-k regret and rel@k.

  Returns:
    The metrics.
  """
  out = {
      'pearson': pearson(pred, true, mask),
      'spearman': spearman(pred, true, mask),
      'kendall_tau': kendall_tau(pred, true, mask),
      'weighted_tau': weighted_tau(pred, true, mask),
  }
  for k in ks:
    out[f'top{k}_regret'] = top_k_regret(pred, true, k, mask)
    out[f'rel@{k}'] = rel_at_k(pred, true, k, mask)
  return out
