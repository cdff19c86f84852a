"""Ranking metrics against SciPy and NumPy references from the definitions."""

import warnings

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import numpy as np
from scipy import stats

from fennec_jax import metrics

# SciPy references (defaults everywhere: weightedtau is hyperbolic, rank=True).
_SCIPY = {
    'pearson': lambda x, y: stats.pearsonr(x, y).statistic,
    'spearman': lambda x, y: stats.spearmanr(x, y).statistic,
    'kendall_tau': lambda x, y: stats.kendalltau(x, y).statistic,
    'weighted_tau': lambda x, y: stats.weightedtau(x, y).statistic,
}
_OURS = {
    'pearson': metrics.pearson,
    'spearman': metrics.spearman,
    'kendall_tau': metrics.kendall_tau,
    'weighted_tau': metrics.weighted_tau,
}


def _scipy(name, x, y):
  with warnings.catch_warnings():
    # Constant inputs: SciPy warns and returns NaN; the NaN is what we check.
    warnings.simplefilter('ignore')
    return float(_SCIPY[name](x, y))


def _inputs(rng, n, ties):
  if ties:   # few distinct values: many ties in each and joint ties
    return (rng.integers(0, 4, n).astype(np.float64),
            rng.integers(0, 3, n).astype(np.float64))
  x = rng.normal(size=n)
  return x, 0.5 * x + rng.normal(size=n)


def _top_k_reference(pred, true, k):
  """Sort-based: stable order by decreasing pred (lower index first on ties)."""
  order = sorted(range(len(pred)), key=lambda i: (-pred[i], i))
  best_top = max(true[i] for i in order[:k])
  return max(true) - best_top, best_top / max(true)


class CorrelationTest(parameterized.TestCase):

  @parameterized.product(name=sorted(_OURS), ties=[False, True])
  def test_matches_scipy_float64(self, name, ties):
    # One static shape [60]; smaller problems are masks of it (one compile).
    rng = np.random.default_rng(len(name) + 10 * ties)
    with jax.enable_x64(True):
      fn = jax.jit(_OURS[name])
      x, y = _inputs(rng, 60, ties)
      self.assertAlmostEqual(float(fn(x, y)), _scipy(name, x, y), delta=1e-9)
      for n in (2, 3, 5, 17, 60, 60, 60):
        x, y = _inputs(rng, 60, ties)
        mask = np.zeros(60, bool)
        mask[rng.permutation(60)[:n]] = True
        # Garbage outside the mask must not matter.
        x_bad = np.where(mask, x, np.nan)
        y_bad = np.where(mask, y, 1e30)
        expected = _scipy(name, x[mask], y[mask])
        got = float(fn(x_bad, y_bad, mask))
        if np.isnan(expected):
          self.assertTrue(np.isnan(got), (name, x[mask], y[mask], got))
        else:
          self.assertAlmostEqual(got, expected, delta=1e-9,
                                 msg=(x[mask], y[mask]))

  def test_weighted_tau_weights_the_top(self):
    # A wrong "unweighted" implementation would give 0 here; scipy does not.
    x = np.array([5., 4., 3., 2., 1.])
    y = np.array([1., 4., 3., 2., 5.])  # top element misplaced, rest agree
    with jax.enable_x64(True):
      got = float(jax.jit(metrics.weighted_tau)(x, y))
    self.assertAlmostEqual(got, _scipy('weighted_tau', x, y), delta=1e-12)
    self.assertNotAlmostEqual(got, _scipy('kendall_tau', x, y), delta=1e-3)

  @parameterized.parameters(sorted(_OURS))
  def test_float32_precision(self, name):
    # The documented float32 accuracy (1e-6; measured ~1e-7).
    rng = np.random.default_rng(3)
    x, y = _inputs(rng, 200, ties=False)
    got = jax.jit(_OURS[name])(x.astype(np.float32), y.astype(np.float32))
    self.assertEqual(got.dtype, np.float32)
    self.assertAlmostEqual(float(got), _scipy(name, x, y), delta=1e-6)

  @parameterized.parameters(sorted(_OURS))
  def test_undefined_is_nan(self, name):
    fn = jax.jit(_OURS[name])
    self.assertTrue(np.isnan(fn(np.ones(5), np.arange(5.))))   # constant pred
    self.assertTrue(np.isnan(
        fn(np.arange(5.), np.arange(5.), np.array([1, 0, 0, 0, 0], bool))))

  def test_average_ranks_match_scipy_rankdata(self):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 30).astype(np.float64)
    mask = rng.random(30) < 0.7
    with jax.enable_x64(True):
      got = np.asarray(metrics.average_ranks(x, mask))
    np.testing.assert_allclose(got[mask], stats.rankdata(x[mask]))
    np.testing.assert_array_equal(got[~mask], 0)


class TopKTest(parameterized.TestCase):

  @parameterized.product(k=[1, 3, 5], ties=[False, True])
  def test_matches_sort_reference(self, k, ties):
    rng = np.random.default_rng(k + 10 * ties)
    both = jax.jit(lambda p, t, m: (metrics.top_k_regret(p, t, k, m),
                                    metrics.rel_at_k(p, t, k, m)))
    for _ in range(10):
      pred, true = _inputs(rng, 12, ties)
      true = true + 10   # positive, for rel@k
      mask = rng.random(12) < 0.7
      mask[:2] = True
      regret, rel = _top_k_reference(list(pred[mask]), list(true[mask]),
                                     min(k, int(mask.sum())))
      with jax.enable_x64(True):
        got = both(pred, true, mask)
      self.assertAlmostEqual(float(got[0]), regret, delta=1e-12)
      self.assertAlmostEqual(float(got[1]), rel, delta=1e-12)

  def test_properties(self):
    true = np.array([0.3, 0.9, 0.5, 0.7])
    self.assertEqual(float(metrics.top_k_regret(true, true)), 0)
    self.assertEqual(float(metrics.rel_at_k(true, true)), 1)
    worst = -true
    self.assertAlmostEqual(float(metrics.top_k_regret(worst, true)), 0.6,
                           places=6)
    self.assertEqual(float(metrics.top_k_regret(worst, true, k=4)), 0)
    # The best model is hidden by the mask: regret is over the subset only.
    mask = np.array([True, False, True, True])
    self.assertAlmostEqual(
        float(metrics.top_k_regret(np.array([0., 9., 1., 0.]), true, 1, mask)),
        0.2, places=6)

  def test_bad_k(self):
    with self.assertRaisesRegex(ValueError, 'k=5 exceeds'):
      metrics.top_k_regret(np.zeros(4), np.zeros(4), k=5)
    with self.assertRaisesRegex(ValueError, 'positive int'):
      metrics.rel_at_k(np.zeros(4), np.zeros(4), k=0)

  def test_shape_errors(self):
    with self.assertRaisesRegex(ValueError, 'same shape'):
      metrics.pearson(np.zeros(4), np.zeros(5))
    with self.assertRaisesRegex(ValueError, 'mask'):
      metrics.pearson(np.zeros(4), np.zeros(4), np.ones(3, bool))


class BatchTest(chex.TestCase):

  def test_vmap_over_tasks_equals_loop_and_compiles_once(self):
    rng = np.random.default_rng(0)
    t, n = 4, 25
    pred = rng.normal(size=(t, n)).astype(np.float32)
    true = np.round(pred + rng.normal(size=(t, n)), 1).astype(np.float32)
    mask = rng.random((t, n)) < 0.7

    @jax.jit
    @chex.assert_max_traces(n=1)
    def batched(p, y, m):
      return jax.vmap(lambda a, b, c: metrics.ranking_metrics(
          a, b, c, ks=(1, 3)))(p, y, m)

    got = batched(pred, true, mask)
    # A second batch with different masks reuses the compiled function.
    batched(pred, true, ~mask)
    single = jax.jit(lambda a, b, c: metrics.ranking_metrics(a, b, c, (1, 3)))
    for j in range(t):
      one = single(pred[j], true[j], mask[j])
      for key, value in one.items():
        self.assertAlmostEqual(float(got[key][j]), float(value), delta=1e-6,
                               msg=(key, j))
      self.assertAlmostEqual(
          float(got['weighted_tau'][j]),
          _scipy('weighted_tau', pred[j][mask[j]], true[j][mask[j]]),
          delta=2e-6)


if __name__ == '__main__':
  absltest.main()
