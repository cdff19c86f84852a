"""Per-task normalization of observed scores, and the way back to raw scores.

Tasks score models on different scales (accuracy in [0, 1], a regression
loss, a task where half the fine-tunes failed), so the factorization works on
scores normalized within each task from that task's observed entries only.
Every normalization comes with a per-task affine map back, raw ~ loc + scale
* normalized (exact for 'none' and 'zscore', the least-squares line for
'rank' and 'robust'), which the fold-in uses to work in raw units, and, for
the nonlinear rules, with a population link (`population_link`) that restores
the shape of a typical task's raw scores.
"""

import numpy as np
import scipy.special

NORMALIZATIONS = ('none', 'zscore', 'rank', 'robust')
# Soft winsorizing bound c of the 'robust' normalization c tanh(z / c), in
# robust standard units.
ROBUST_CLIP = 2.0
# MAD -> standard deviation of a normal distribution.
_MAD_TO_STD = 1.482602218505602


def normalize_entries(cols: np.ndarray, values: np.ndarray, num_tasks: int,
                      method: str
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-task normalization of observed entries given as (column, value).

  Args:
    cols: [N] task index of each observed entry.
    values: [N] raw scores.
    num_tasks: T.
    method: 'none', 'zscore', 'rank' or 'robust'.

  Returns:
    (normalized [N], loc [T], scale [T]) such that raw ~ loc + scale *
    normalized (exact for 'none' and 'zscore'; the least-squares line for
    'rank' and 'robust'). A task with constant scores gets scale 1.

  Raises:
    ValueError: for an unknown method.
  """
  if method not in NORMALIZATIONS:
    raise ValueError(f'normalization={method!r}; valid: {NORMALIZATIONS}.')
  values = np.asarray(values, np.float64)
  if method == 'none':
    return values, np.zeros(num_tasks), np.ones(num_tasks)
  num = np.maximum(np.bincount(cols, minlength=num_tasks), 1)
  mean = np.bincount(cols, values, num_tasks) / num
  centered = values - mean[cols]
  std = np.sqrt(np.bincount(cols, centered ** 2, num_tasks) / num)
  if method == 'zscore':
    scale = np.where(std > 0, std, 1.0)
    return centered / scale[cols], mean, scale
  starts = np.concatenate([[0], np.cumsum(num)[:-1]])
  if method == 'robust':
    med = _group_median(cols, values, num, starts)
    mad = _MAD_TO_STD * _group_median(cols, np.abs(values - med[cols]), num,
                                      starts)
    # A task with MAD 0 (over half its scores tied) falls back to its
    # standard deviation, then to 1.
    spread = np.where(mad > 0, mad, np.where(std > 0, std, 1.0))
    # Soft winsorizing: c tanh(z / c) is ~z in the bulk, bounded by c, and
    # strictly increasing, so the order within the tail (a failed
    # fine-tune below a poor one) survives, which Pearson on heavy-tailed
    # tasks needs (a hard clip at 2 cost 0.1 Pearson on TransferGraph text).
    normed = ROBUST_CLIP * np.tanh((values - med[cols])
                                   / (ROBUST_CLIP * spread[cols]))
    return (normed,) + _affine_back(cols, normed, centered, mean, num_tasks,
                                    num)
  # Average ranks within each task (ties share their mean rank), then
  # van der Waerden normal scores.
  order = np.lexsort((values, cols))
  c_sorted, v_sorted = cols[order], values[order]
  position = np.arange(len(order)) - starts[c_sorted] + 1.0
  new_group = np.ones(len(order), bool)
  new_group[1:] = (c_sorted[1:] != c_sorted[:-1]) | (v_sorted[1:]
                                                     != v_sorted[:-1])
  group = np.cumsum(new_group) - 1
  avg_rank = (np.bincount(group, position) / np.bincount(group))[group]
  normed = np.empty(len(order))
  normed[order] = scipy.special.ndtri((avg_rank - 0.5) / num[c_sorted])
  return (normed,) + _affine_back(cols, normed, centered, mean, num_tasks,
                                  num)


def _group_median(cols, values, num, starts):
  """Median of `values` within each column group (0 for an empty group)."""
  order = np.lexsort((values, cols))
  v_sorted = values[order]
  n = np.maximum(num, 1)
  lo = np.minimum(starts + (n - 1) // 2, max(len(values) - 1, 0))
  hi = np.minimum(starts + n // 2, max(len(values) - 1, 0))
  if not len(values):
    return np.zeros(len(num))
  return np.where(np.bincount(cols, minlength=len(num)) > 0,
                  0.5 * (v_sorted[lo] + v_sorted[hi]), 0.0)


def _affine_back(cols, normed, centered, mean, num_tasks, num):
  """Least-squares affine map back: raw ~ loc + scale * normed."""
  nmean = np.bincount(cols, normed, num_tasks) / num
  ncent = normed - nmean[cols]
  var = np.bincount(cols, ncent ** 2, num_tasks)
  cov = np.bincount(cols, ncent * centered, num_tasks)
  scale = np.where(var > 0, cov / np.where(var > 0, var, 1.0), 1.0)
  scale = np.where(scale > 0, scale, 1.0)
  return mean - scale * nmean, scale


def normalize(scores: np.ndarray, mask: np.ndarray, method: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`normalize_entries` on a dense [M, T] matrix (0 where unobserved).

  Args:
    scores: [M, T] raw scores (anything where not observed).
    mask: [M, T] bool.
    method: 'none', 'zscore', 'rank' or 'robust'.

  Returns:
    (normalized [M, T], loc [T], scale [T]).
  """
  mask = np.asarray(mask, bool)
  rows, cols = np.nonzero(mask)
  normed_entries, loc, scale = normalize_entries(
      cols, np.asarray(scores)[rows, cols], mask.shape[1], method)
  normed = np.zeros(mask.shape)
  normed[rows, cols] = normed_entries
  return normed, loc, scale


def population_link(cols: np.ndarray, raw: np.ndarray, loc: np.ndarray,
                    scale: np.ndarray, size: int = 256) -> np.ndarray:
  """The mean over tasks of the quantile function of (raw - loc) / scale.

  Args:
    cols: [N] task index of each observed entry (every task has one).
    raw: [N] raw scores.
    loc: [T] per-task location of the affine map back.
    scale: [T] its scale.
    size: how many probabilities, (i + 0.5) / size.

  Returns:
    [size] the population's standardized quantile function.
  """
  probs = (np.arange(size) + 0.5) / size
  standardized = (raw - loc[cols]) / scale[cols]
  order = np.argsort(cols, kind='stable')
  groups = np.split(standardized[order],
                    np.cumsum(np.bincount(cols, minlength=len(loc)))[:-1])
  return np.mean([np.quantile(g, probs) for g in groups], axis=0)
