"""PARC and kNN against NumPy/SciPy references."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
import scipy.stats

from fennec_jax import estimators
from fennec_jax.estimators import parc


def reference_parc(f, y):
  """Bolya et al. 2021: Spearman between the lower triangles of two RDMs."""
  std = f.std(0)
  x = (f - f.mean(0)) / np.where(std > 0, std, 1)
  c = y.max() + 1
  rdm_f = 1 - np.corrcoef(x)
  rdm_y = 1 - np.corrcoef(np.eye(c)[y])
  lower = np.tril_indices(len(y), -1)
  return 100 * scipy.stats.spearmanr(rdm_f[lower], rdm_y[lower]).correlation


def reference_knn(f, y, k):
  """Leave-one-out majority vote; ties to the class whose voters are nearer."""
  n = len(y)
  correct = 0
  for i in range(n):
    d = np.sum((f - f[i]) ** 2, 1)
    d[i] = np.inf
    order = np.argsort(d, kind='stable')[:k]
    votes = {}
    for rank, j in enumerate(order):
      count, closeness = votes.get(y[j], (0, 0.0))
      votes[y[j]] = (count + 1, closeness + (k - rank))
    best = max(votes.items(), key=lambda kv: kv[1])[0]
    correct += best == y[i]
  return correct / n


def _data(n=40, d=6, c=4, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % c
  return rng.normal(size=(c, d))[labels] + rng.normal(size=(n, d)), labels


class PARCTest(parameterized.TestCase):

  def test_matches_reference(self):
    f, y = _data()
    fn = estimators.get_estimator('parc')
    with jax.enable_x64(True):
      self.assertAlmostEqual(fn(f, y), reference_parc(f, y), delta=1e-9)
    np.testing.assert_allclose(fn(f.astype(np.float32), y),
                               reference_parc(f, y), rtol=1e-4)

  def test_ranks_average_ties_like_scipy(self):
    values = np.array([3.0, 1.0, 3.0, 2.0, 1.0, 3.0])
    np.testing.assert_allclose(parc.average_ranks(values),
                               scipy.stats.rankdata(values))

  def test_invariances(self):
    f, y = _data(seed=1)
    fn = estimators.get_estimator('parc')
    base = fn(f, y)
    scale = np.array([1.0, 10.0, 0.1, 3.0, 5.0, 0.5])
    np.testing.assert_allclose(fn(f * scale, y), base, rtol=1e-4)
    np.testing.assert_allclose(fn(f, np.array([3, 2, 1, 0])[y]), base,
                               rtol=1e-5)
    self.assertGreater(base, fn(f, np.random.default_rng(0).permutation(y)))


class KNNTest(parameterized.TestCase):

  @parameterized.parameters(1, 4)
  def test_matches_reference(self, k):
    f, y = _data(seed=2)
    with jax.enable_x64(True):
      got = estimators.get_estimator('knn')(f, y, k=k)
    self.assertAlmostEqual(got, reference_knn(f, y, k), delta=1e-12)
    got32 = estimators.get_estimator('knn')(f.astype(np.float32), y, k=k)
    self.assertAlmostEqual(got32, reference_knn(f, y, k), delta=1e-6)

  def test_invariances(self):
    f, y = _data(seed=3)
    fn = estimators.get_estimator('knn')
    base = fn(f, y)
    self.assertAlmostEqual(fn(4.0 * f, y), base)
    self.assertAlmostEqual(fn(f, np.array([1, 2, 3, 0])[y]), base)
    self.assertGreater(base, fn(f, np.random.default_rng(0).permutation(y)))


if __name__ == '__main__':
  absltest.main()
