"""Tests of the NumPy random forest against a naive CART and its properties."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from fennec_jax import forest


def _naive_tree(x, y, min_leaf=1):
  """Brute-force CART (every feature, every midpoint), as nested tuples."""
  if len(x) < 2 * min_leaf or np.all(y == y[0]):
    return ('leaf', y.mean(0))
  best = None
  for f in range(x.shape[1]):
    values = np.unique(x[:, f])
    for a, b in zip(values[:-1], values[1:]):
      thr = 0.5 * (a + b)
      left = x[:, f] <= thr
      if left.sum() < min_leaf or (~left).sum() < min_leaf:
        continue
      sse = (((y[left] - y[left].mean(0)) ** 2).sum()
             + ((y[~left] - y[~left].mean(0)) ** 2).sum())
      if best is None or sse < best[0] - 1e-12:
        best = (sse, f, thr, left)
  if best is None:
    return ('leaf', y.mean(0))
  _, f, thr, left = best
  return ('split', f, thr, _naive_tree(x[left], y[left], min_leaf),
          _naive_tree(x[~left], y[~left], min_leaf))


def _naive_predict(node, row):
  while node[0] == 'split':
    node = node[3] if row[node[1]] <= node[2] else node[4]
  return node[1]


class ForestTest(parameterized.TestCase):

  @parameterized.parameters(1, 3)
  def test_single_tree_equals_naive_cart(self, min_leaf):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = np.stack([np.sin(2 * x[:, 0]) + x[:, 1], x[:, 2] ** 2], 1)
    tree = forest.fit_tree(x, y, min_samples_leaf=min_leaf)
    ref = _naive_tree(x, y, min_leaf)
    test = rng.normal(size=(60, 3))
    want = np.stack([_naive_predict(ref, r) for r in test])
    np.testing.assert_allclose(tree.predict(test), want, rtol=1e-12)

  def test_presorted_and_per_node_sorting_agree(self):
    rng = np.random.default_rng(6)
    x = np.round(rng.normal(size=(120, 4)), 1)  # Many ties in x.
    y = rng.normal(size=(120, 3))
    a = forest.fit_tree(x, y, presort=True)
    b = forest.fit_tree(x, y, presort=False)
    np.testing.assert_array_equal(a.feature, b.feature)
    np.testing.assert_array_equal(a.threshold, b.threshold)
    np.testing.assert_allclose(a.value, b.value, rtol=1e-12)

  def test_hand_computed_stump(self):
    # x = [0, 1, 2, 3], y = [0, 0, 10, 12]: best split x <= 1.5 (SSE 2).
    x = np.array([[0.], [1.], [2.], [3.]])
    y = np.array([[0.], [0.], [10.], [12.]])
    tree = forest.fit_tree(x, y, max_depth=1)
    self.assertEqual(tree.feature[0], 0)
    self.assertEqual(tree.threshold[0], 1.5)
    np.testing.assert_allclose(tree.predict(np.array([[1.4], [1.6]])),
                               [[0.], [11.]])

  def test_fits_piecewise_constant_target_exactly(self):
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(200, 4))
    y = np.stack([np.floor(4 * x[:, 0]) + 10 * (x[:, 1] > 0.3),
                  np.floor(3 * x[:, 2])], 1)
    f = forest.RandomForestRegressor(forest.ForestConfig(
        num_trees=3, max_features='sqrt', bootstrap=False)).fit(x, y)
    np.testing.assert_array_equal(f.predict(x), y)

  def test_out_of_sample_beats_the_mean(self):
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(400, 5))
    target = lambda a: np.sin(3 * a[:, 0]) + a[:, 1] ** 2
    y = target(x) + 0.05 * rng.normal(size=400)
    f = forest.RandomForestRegressor(forest.ForestConfig(
        num_trees=10, seed=0)).fit(x, y)
    xt = rng.uniform(-1, 1, size=(300, 5))
    mse = np.mean((f.predict(xt) - target(xt)) ** 2)
    self.assertLess(mse, 0.2 * np.var(target(xt)))

  def test_deterministic_by_seed(self):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(80, 6)), rng.normal(size=(80, 2))
    make = lambda s: forest.RandomForestRegressor(forest.ForestConfig(
        num_trees=4, max_features=2, seed=s)).fit(x, y).predict(x)
    np.testing.assert_array_equal(make(0), make(0))
    self.assertFalse(np.array_equal(make(0), make(1)))

  def test_duplicated_output_equals_single_output(self):
    # The criterion sums the outputs' squared errors, so [y, y] splits
    # exactly like y (a per-output or unweighted bug would differ).
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(100, 5)), rng.normal(size=100)
    config = forest.ForestConfig(num_trees=3, max_features=2, seed=7)
    single = forest.RandomForestRegressor(config).fit(x, y).predict(x)
    double = forest.RandomForestRegressor(config).fit(
        x, np.stack([y, y], 1)).predict(x)
    np.testing.assert_array_equal(double, np.stack([single, single], 1))

  def test_array_round_trip(self):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    f = forest.RandomForestRegressor(forest.ForestConfig(num_trees=3)).fit(
        x, y)
    arrays = f.to_arrays()
    g = forest.RandomForestRegressor.from_arrays(arrays)
    np.testing.assert_array_equal(f.predict(x), g.predict(x))
    with self.assertRaisesRegex(ValueError, r"lack \['value'\]"):
      forest.RandomForestRegressor.from_arrays(
          {k: v for k, v in arrays.items() if k != 'value'})
    with self.assertRaisesRegex(ValueError, r"give \d+ nodes.*'threshold'"):
      forest.RandomForestRegressor.from_arrays(
          dict(arrays, threshold=arrays['threshold'][:-1]))
    with self.assertRaisesRegex(ValueError, 'offsets must rise from 0'):
      forest.RandomForestRegressor.from_arrays(
          dict(arrays, offsets=arrays['offsets'][::-1]))

  def test_bad_input(self):
    f = forest.RandomForestRegressor(forest.ForestConfig(num_trees=1))
    with self.assertRaisesRegex(ValueError, 'not fitted'):
      f.predict(np.zeros((1, 2)))
    with self.assertRaisesRegex(ValueError, 'same n'):
      f.fit(np.zeros((3, 2)), np.zeros(4))
    with self.assertRaisesRegex(ValueError, 'non-finite.*row 1'):
      f.fit(np.array([[0.], [np.nan]]), np.zeros(2))
    with self.assertRaisesRegex(ValueError, 'max_features'):
      forest.RandomForestRegressor(forest.ForestConfig(max_features='half'))
    f.fit(np.zeros((3, 2)), np.zeros(3))
    with self.assertRaisesRegex(ValueError, r'\[n, 2\]'):
      f.predict(np.zeros((1, 3)))


if __name__ == '__main__':
  absltest.main()
