"""GBC against a per-pair NumPy loop of the Bhattacharyya formulas."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from fennec_jax import estimators


def reference_gbc(f, y, gaussian_type):
  classes = np.unique(y)
  stats = []
  for c in classes:
    fc = f[y == c]
    var = np.maximum(fc.var(0), 1e-4)
    if gaussian_type == 'spherical':
      var = np.array([var.mean()])
    stats.append((fc.mean(0), var))
  total = 0.0
  for i in classes:
    for j in classes:
      if i == j:
        continue
      (mi, vi), (mj, vj) = stats[i], stats[j]
      v = (vi + vj) / 2
      db = np.sum((mi - mj) ** 2 / v) / 8 + 0.5 * (
          np.sum(np.log(v)) - 0.5 * np.sum(np.log(vi)) -
          0.5 * np.sum(np.log(vj)))
      total += np.exp(-db)
  return -total


def _data(n=48, d=6, c=4, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % c
  return rng.normal(size=(c, d))[labels] + rng.normal(size=(n, d)), labels


class GBCTest(parameterized.TestCase):

  @parameterized.parameters('diagonal', 'spherical')
  def test_matches_reference(self, gaussian_type):
    f, y = _data()
    want = reference_gbc(f, y, gaussian_type)
    fn = estimators.get_estimator('gbc')
    with jax.enable_x64(True):
      got = fn(f, y, gaussian_type=gaussian_type)
    self.assertAlmostEqual(got, want, delta=1e-10)
    np.testing.assert_allclose(
        fn(f.astype(np.float32), y, gaussian_type=gaussian_type), want,
        rtol=1e-4)

  def test_separable_beats_shuffled_and_permutation(self):
    f, y = _data(seed=1)
    fn = estimators.get_estimator('gbc')
    self.assertGreater(fn(f, y),
                       fn(f, np.random.default_rng(0).permutation(y)))
    perm = np.array([1, 3, 0, 2])
    np.testing.assert_allclose(fn(f, perm[y]), fn(f, y), rtol=1e-5)

  def test_pca_option_equals_reference_on_projected_features(self):
    f, y = _data(d=10)
    fc = f - f.mean(0)
    _, _, vt = np.linalg.svd(fc, full_matrices=False)
    projected = fc @ vt[:4].T  # Sign flips do not change GBC.
    with jax.enable_x64(True):
      got = estimators.get_estimator('gbc')(f, y, pca_dim=4)
    self.assertAlmostEqual(got, reference_gbc(projected, y, 'diagonal'),
                           delta=1e-9)


if __name__ == '__main__':
  absltest.main()
