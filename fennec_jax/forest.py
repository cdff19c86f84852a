"""A multi-output random-forest regressor in NumPy (CART + bagging).

Fennec's released code maps a proxy image embedding to its task's vector with
scikit-learn's `RandomForestRegressor(n_estimators=25)`; scikit-learn is not a
dependency of this project, so this module implements the same model:

* each tree is fit on a bootstrap sample (n draws with replacement) of the
  training rows, seeded per tree from one root seed;
* a node is split on the (feature, threshold) that maximizes the decrease of
  the summed squared error over all outputs (variance reduction, sklearn's
  'squared_error' criterion, which sums the per-output impurities), searched
  over `max_features` features drawn without replacement at that node; the
  threshold is the midpoint between consecutive distinct sorted values;
* a node becomes a leaf when it is pure (zero squared error), has fewer than
  `min_samples_split` rows, is at `max_depth`, or no drawn feature has a
  split leaving `min_samples_leaf` rows on both sides (sklearn would go on
  drawing features past constant ones; here such a node is a leaf — with
  `max_features=None` this makes no difference);
* the leaf value is the mean target of its rows; the forest predicts the
  mean over trees.

The split search is vectorized per node: the node's rows are sorted on all
drawn features at once and the left/right sums of the targets come from one
cumulative sum, so a node costs O(n_node * f * (log n_node + outputs)). With
all features (`max_features=None`), every feature is sorted once per tree
and the sorted orders are partitioned at each split instead (no log factor).
"""

import dataclasses
from typing import Any

import numpy as np

_LEAF = -1
# The keys of `RandomForestRegressor.to_arrays`, offsets first, shape last.
_ARRAY_KEYS = ('offsets', 'feature', 'threshold', 'left', 'right', 'value',
               'shape')


@dataclasses.dataclass(frozen=True)
class Tree:
  """A fitted regression tree as flat arrays (node 0 is the root).

  Attributes:
    feature: [nodes] split feature, -1 at leaves.
    threshold: [nodes] go left when x[feature] <= threshold.
    left: [nodes] left child, -1 at leaves.
    right: [nodes] right child, -1 at leaves.
    value: [nodes, outputs] mean target of the node's training rows.
  """
  feature: np.ndarray
  threshold: np.ndarray
  left: np.ndarray
  right: np.ndarray
  value: np.ndarray

  @property
  def num_nodes(self) -> int:
    return int(self.feature.shape[0])

  @property
  def depth(self) -> int:
    depth = np.zeros(self.num_nodes, np.int64)
    for i in range(self.num_nodes):  # Children always follow their parent.
      if self.left[i] != _LEAF:
        depth[self.left[i]] = depth[self.right[i]] = depth[i] + 1
    return int(depth.max())

  def predict(self, x: np.ndarray) -> np.ndarray:
    """[n, outputs] predictions for rows x [n, d] (all rows descend at once)."""
    node = np.zeros(x.shape[0], np.int64)
    rows = np.arange(x.shape[0])
    while True:
      inner = self.left[node] != _LEAF
      if not inner.any():
        return self.value[node]
      r, nd = rows[inner], node[inner]
      go_left = x[r, self.feature[nd]] <= self.threshold[nd]
      node[r] = np.where(go_left, self.left[nd], self.right[nd])


def _num_features(max_features: Any, d: int) -> int:
  if max_features is None:
    return d
  if isinstance(max_features, str):
    if max_features == 'sqrt':
      return max(1, int(np.sqrt(d)))
    if max_features == 'log2':
      return max(1, int(np.log2(d)))
    raise ValueError(f"max_features={max_features!r}; valid: None, 'sqrt', "
                     "'log2', an int >= 1 or a float in (0, 1].")
  if isinstance(max_features, (float, np.floating)):
    if not 0.0 < max_features <= 1.0:
      raise ValueError(f'max_features={max_features} as a fraction must be '
                       'in (0, 1].')
    return max(1, int(max_features * d))
  if int(max_features) != max_features or max_features < 1:
    raise ValueError(f'max_features={max_features!r} must be an int >= 1.')
  return min(int(max_features), d)


def _scan(xs: np.ndarray, order: np.ndarray, y: np.ndarray,
          mean: np.ndarray, min_leaf: int) -> tuple[int, float, float] | None:
  """Best (row of xs, threshold, gain) of a node, or None.

  Args:
    xs: [f, n] each candidate feature's values over the node, sorted.
    order: [f, n] the rows of `y` in that order.
    y: [*, outputs] targets indexed by `order`.
    mean: [outputs] the node's mean target.
    min_leaf: the fewest rows a child may keep.

  With targets centred at the node mean, the decrease of the squared error
  of a split with n_l rows on the left is
  gain = n / (n_l (n - n_l)) * sum_o L_o^2, L_o the left sum of output o.
  (Ties in x may be sorted in any order: only positions between distinct
  values are candidates, and the left sums there do not depend on it.)
  """
  n = xs.shape[1]
  score = np.zeros((xs.shape[0], n - 1))
  for o in range(y.shape[1]):  # Rows stay contiguous along n.
    centred = y[:, o][order[:, :-1]] - mean[o]             # [f, n-1]
    left_sum = np.cumsum(centred, axis=1)
    score += left_sum * left_sum
  n_left = np.arange(1, n, dtype=np.float64)
  score *= n / (n_left * (n - n_left))
  valid = xs[:, 1:] > xs[:, :-1]                           # [f, n-1]
  if min_leaf > 1:
    pos = np.arange(1, n)
    valid &= ((pos >= min_leaf) & (pos <= n - min_leaf))[None]
  if not valid.any():
    return None
  score = np.where(valid, score, -np.inf)
  # Ties (e.g. two rows that every feature separates) go to the lowest
  # feature, then the lowest threshold; rounding-level differences count as
  # ties so the choice does not depend on the summation order.
  best = score.max()
  near = score >= best - 1e-12 * max(abs(best), 1.0)       # [f, n-1]
  f, i = divmod(int(np.argmax(near)), near.shape[1])
  gain = score[f, i]
  threshold = 0.5 * (xs[f, i] + xs[f, i + 1])
  if threshold >= xs[f, i + 1]:  # Midpoint rounded up to the right value.
    threshold = xs[f, i]
  return f, float(threshold), float(gain)


def fit_tree(x: np.ndarray, y: np.ndarray, *, max_features: Any = None,
             max_depth: int | None = None, min_samples_split: int = 2,
             min_samples_leaf: int = 1,
             rng: np.random.Generator | None = None,
             presort: bool | None = None) -> Tree:
  """Fits one CART regression tree on all rows of (x, y) (no bootstrap).

  Args:
    x: [n, d] float inputs.
    y: [n, outputs] float targets.
    max_features: features drawn per node: None (all), 'sqrt', 'log2', an
      int, or a fraction of d.
    max_depth: None grows until the leaves are pure or too small.
    min_samples_split: a node with fewer rows is a leaf.
    min_samples_leaf: each child keeps at least this many rows.
    rng: draws the features per node (needed unless all are used).
    presort: sort every feature once at the root and partition the sorted
      orders at each split (O(n d) per node instead of O(n d log n));
      None = when all features are used (the only case it supports).

  Returns:
    The fitted `Tree`.
  """
  n, d = x.shape
  k = _num_features(max_features, d)
  if k < d and rng is None:
    raise ValueError('fit_tree needs an rng to draw feature subsets.')
  presort = k == d if presort is None else presort
  if presort and k < d:
    raise ValueError('presort needs all features (max_features=None).')
  feature, threshold, left, right, value = [], [], [], [], []

  def new_node(rows):
    feature.append(_LEAF)
    threshold.append(0.0)
    left.append(_LEAF)
    right.append(_LEAF)
    value.append(y[rows].mean(0))
    return len(feature) - 1

  xt = np.ascontiguousarray(x.T)                           # [d, n]
  root = None
  if presort:  # (rows sorted per feature, their values) [d, n] each.
    order = np.argsort(xt, axis=1)
    root = (order, np.take_along_axis(xt, order, axis=1))
  stack = [(new_node(np.arange(n)), np.arange(n), 0, root)]
  while stack:
    node, rows, depth, sorted_ = stack.pop()
    yn = y[rows]
    if (rows.size < max(min_samples_split, 2 * min_samples_leaf)
        or (max_depth is not None and depth >= max_depth)
        or np.all(yn == yn[0])):
      continue
    if presort:
      feats = np.arange(d)
      best = _scan(sorted_[1], sorted_[0], y, yn.mean(0), min_samples_leaf)
    else:
      feats = (np.arange(d) if k == d
               else np.sort(rng.choice(d, size=k, replace=False)))
      xn = xt[np.ix_(feats, rows)]                         # [k, n_node]
      local = np.argsort(xn, axis=1)
      best = _scan(np.take_along_axis(xn, local, axis=1), local, yn,
                   yn.mean(0), min_samples_leaf)
    if best is None:
      continue
    col, thr, _ = best
    f = int(feats[col])
    go_left = xt[f, rows] <= thr
    feature[node], threshold[node] = f, thr
    lrows, rrows = rows[go_left], rows[~go_left]
    lsorted = rsorted = None
    if presort:  # Stable partition keeps each child's rows sorted.
      in_left = np.zeros(n, bool)
      in_left[lrows] = True
      goes = in_left[sorted_[0]]                           # [d, n_node]
      lsorted = tuple(a[goes].reshape(d, -1) for a in sorted_)
      rsorted = tuple(a[~goes].reshape(d, -1) for a in sorted_)
    del sorted_
    left[node] = new_node(lrows)
    right[node] = new_node(rrows)
    stack.append((right[node], rrows, depth + 1, rsorted))
    stack.append((left[node], lrows, depth + 1, lsorted))
  return Tree(feature=np.asarray(feature, np.int64),
              threshold=np.asarray(threshold, np.float64),
              left=np.asarray(left, np.int64),
              right=np.asarray(right, np.int64),
              value=np.asarray(value, np.float64).reshape(len(feature), -1))


@dataclasses.dataclass(frozen=True)
class ForestConfig:
  """Hyperparameters (sklearn `RandomForestRegressor` names and defaults).

  Attributes:
    num_trees: number of trees (`n_estimators`; Fennec's code uses 25).
    max_features: features drawn per split; None = all (sklearn's regression
      default, 1.0), 'sqrt', 'log2', an int or a fraction.
    max_depth: None grows full trees.
    min_samples_split: see `fit_tree`.
    min_samples_leaf: see `fit_tree`.
    bootstrap: fit each tree on a bootstrap sample (else on all rows).
    seed: root seed; tree t uses `np.random.default_rng([seed, t])`.
  """
  num_trees: int = 100
  max_features: Any = None
  max_depth: int | None = None
  min_samples_split: int = 2
  min_samples_leaf: int = 1
  bootstrap: bool = True
  seed: int = 0

  def validate(self) -> None:
    """Raises ValueError naming the bad field."""
    if int(self.num_trees) != self.num_trees or self.num_trees < 1:
      raise ValueError(f'num_trees must be an int >= 1, got '
                       f'{self.num_trees!r}.')
    if self.max_depth is not None and self.max_depth < 0:
      raise ValueError(f'max_depth must be None or >= 0, got '
                       f'{self.max_depth!r}.')
    if self.min_samples_split < 2:
      raise ValueError(f'min_samples_split must be >= 2, got '
                       f'{self.min_samples_split!r}.')
    if self.min_samples_leaf < 1:
      raise ValueError(f'min_samples_leaf must be >= 1, got '
                       f'{self.min_samples_leaf!r}.')
    _num_features(self.max_features, 1)


class RandomForestRegressor:
  """Bagged CART trees with a multi-output squared-error criterion.

  Example:
    forest = RandomForestRegressor(ForestConfig(num_trees=25)).fit(x, y)
    y_hat = forest.predict(x_new)   # [n, outputs]
  """

  def __init__(self, config: ForestConfig = ForestConfig()):
    config.validate()
    self.config = config
    self.trees: list[Tree] = []
    self.num_features: int | None = None
    self.num_outputs: int | None = None
    self._squeeze = False

  def fit(self, x: Any, y: Any) -> 'RandomForestRegressor':
    """Fits the forest.

    Args:
      x: [n, d] finite inputs.
      y: [n] or [n, outputs] finite targets.

    Returns:
      self.

    Raises:
      ValueError: on shapes that disagree, no rows, or non-finite values.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    self._squeeze = y.ndim == 1
    if y.ndim == 1:
      y = y[:, None]
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
      raise ValueError(f'x must be [n, d] and y [n] or [n, outputs] with the '
                       f'same n; got x {x.shape}, y {y.shape}.')
    if x.shape[0] < 1:
      raise ValueError('cannot fit a forest on 0 rows.')
    for name, a in (('x', x), ('y', y)):
      if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f'{name} has non-finite values, e.g. row {bad[0]}: '
                         f'{a[tuple(bad)]}.')
    c = self.config
    n = x.shape[0]
    self.trees = []
    for t in range(c.num_trees):
      rng = np.random.default_rng([c.seed, t])
      rows = rng.integers(0, n, size=n) if c.bootstrap else np.arange(n)
      self.trees.append(fit_tree(
          x[rows], y[rows], max_features=c.max_features,
          max_depth=c.max_depth, min_samples_split=c.min_samples_split,
          min_samples_leaf=c.min_samples_leaf, rng=rng))
    self.num_features, self.num_outputs = x.shape[1], y.shape[1]
    return self

  def predict(self, x: Any) -> np.ndarray:
    """Mean prediction of the trees: [n, outputs] (or [n] if fit on [n]).

    Raises:
      ValueError: if not fitted or x is not finite [n, num_features].
    """
    if not self.trees:
      raise ValueError('the forest is not fitted: call fit() first.')
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] != self.num_features:
      raise ValueError(f'x must be [n, {self.num_features}], got '
                       f'{x.shape}.')
    if not np.isfinite(x).all():
      raise ValueError('x has non-finite values.')
    out = np.mean([tree.predict(x) for tree in self.trees], axis=0)
    return out[:, 0] if self._squeeze else out

  # -- persistence as flat arrays (for a fennec_jax.checkpoint) ----------------

  def to_arrays(self) -> dict[str, np.ndarray]:
    """The trees concatenated into flat arrays plus per-tree node offsets.

    Returns:
      `offsets` [trees + 1]; `feature`, `threshold`, `left`, `right`
      [nodes]; `value` [nodes, outputs]; `shape` (num_features,
      num_outputs, fit on 1-D targets).

    Raises:
      ValueError: if not fitted.
    """
    if not self.trees:
      raise ValueError('the forest is not fitted: call fit() first.')
    sizes = np.asarray([t.num_nodes for t in self.trees], np.int64)
    return {
        'offsets': np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        'feature': np.concatenate([t.feature for t in self.trees]),
        'threshold': np.concatenate([t.threshold for t in self.trees]),
        'left': np.concatenate([t.left for t in self.trees]),
        'right': np.concatenate([t.right for t in self.trees]),
        'value': np.concatenate([t.value for t in self.trees]),
        'shape': np.asarray([self.num_features, self.num_outputs,
                             int(self._squeeze)], np.int64),
    }

  @classmethod
  def from_arrays(cls, arrays: dict[str, Any],
                  config: ForestConfig = ForestConfig()
                  ) -> 'RandomForestRegressor':
    """Inverse of `to_arrays`.

    Args:
      arrays: what `to_arrays` returned.
      config: the forest's configuration (not stored in the arrays).

    Returns:
      The fitted forest.

    Raises:
      ValueError: a key is missing or the node arrays disagree with the
        offsets.
    """
    missing = sorted(set(_ARRAY_KEYS) - set(arrays))
    if missing:
      raise ValueError(f'forest arrays lack {missing}; expected the keys '
                       f'{list(_ARRAY_KEYS)} of to_arrays().')
    out = cls(config)
    off = np.asarray(arrays['offsets'], np.int64)
    if (off.ndim != 1 or off.size < 2 or off[0] != 0
        or (np.diff(off) < 1).any()):
      raise ValueError('forest arrays: offsets must rise from 0 by >= 1 node '
                       f'per tree, got {off[:6].tolist()}.')
    nodes = int(off[-1])
    bad = {k: len(arrays[k]) for k in _ARRAY_KEYS[1:-1]
           if len(arrays[k]) != nodes}
    if bad:
      raise ValueError(f'forest arrays: the offsets give {nodes} nodes, but '
                       f'the lengths are {bad}.')
    for a, b in zip(off[:-1], off[1:]):
      out.trees.append(Tree(
          feature=np.asarray(arrays['feature'][a:b], np.int64),
          threshold=np.asarray(arrays['threshold'][a:b], np.float64),
          left=np.asarray(arrays['left'][a:b], np.int64),
          right=np.asarray(arrays['right'][a:b], np.int64),
          value=np.asarray(arrays['value'][a:b], np.float64)))
    shape = np.asarray(arrays['shape'], np.int64)
    out.num_features, out.num_outputs = int(shape[0]), int(shape[1])
    out._squeeze = bool(shape[2])  # pylint: disable=protected-access
    return out
