"""H-score, regularised H-score and TransRate against NumPy references."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from fennec_jax import estimators


def reference_hscore(f, y):
  """tr(pinv(cov f) cov g), g_i = mean of f over y_i's class (Bao et al.)."""
  g = np.zeros_like(f)
  for c in np.unique(y):
    g[y == c] = f[y == c].mean(0)
  return np.trace(np.linalg.pinv(np.cov(f, rowvar=False)) @ np.cov(
      g, rowvar=False))


def reference_ledoit_wolf(x):
  """Ledoit & Wolf (2004): a = min(b2, d2) / d2 on centred x (per sample)."""
  n, d = x.shape
  s = x.T @ x / n
  mu = np.trace(s) / d
  d2 = np.sum((s - mu * np.eye(d)) ** 2)
  b2 = sum(np.sum((np.outer(xi, xi) - s) ** 2) for xi in x) / n**2
  a = min(b2, d2) / d2
  return (1 - a) * s + a * mu * np.eye(d), a


def reference_reg_hscore(f, y):
  f = f - f.mean(0)
  cov, a = reference_ledoit_wolf(f)
  g = np.zeros_like(f)
  for c in np.unique(y):
    g[y == c] = f[y == c].mean(0)
  return np.trace(np.linalg.inv(cov) @ ((1 - a) * np.cov(g, rowvar=False)))


def reference_transrate(f, y, eps=1e-4):
  """R(Z) - mean_c R(Z_c), R(Z) = 1/2 logdet(I + Z'Z / (n eps))."""
  def rate(z):
    n, d = z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]
  z = f - f.mean(0)
  classes = np.unique(y)
  return rate(z) - sum(rate(z[y == c]) for c in classes) / len(classes)


def _data(n=48, d=6, c=4, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % c
  return rng.normal(size=(c, d))[labels] * 1.5 + rng.normal(size=(n, d)), labels


_REFS = dict(hscore=reference_hscore, reg_hscore=reference_reg_hscore,
             transrate=reference_transrate)


class CovarianceScoresTest(parameterized.TestCase):

  @parameterized.parameters('hscore', 'reg_hscore', 'transrate')
  def test_matches_reference(self, name):
    f, y = _data()
    want = _REFS[name](f, y)
    with jax.enable_x64(True):
      got64 = estimators.get_estimator(name)(f, y)
    self.assertAlmostEqual(got64, want, delta=1e-9 * max(1, abs(want)))
    got32 = estimators.get_estimator(name)(f.astype(np.float32), y)
    np.testing.assert_allclose(got32, want, rtol=1e-3)

  @parameterized.parameters('hscore', 'reg_hscore', 'transrate')
  def test_n_less_than_d(self, name):
    f, y = _data(n=10, d=16, c=2, seed=3)
    with jax.enable_x64(True):
      got = estimators.get_estimator(name)(f, y)
    self.assertTrue(np.isfinite(got))
    if name != 'hscore':  # pinv cutoffs differ in the rank-deficient case.
      np.testing.assert_allclose(got, _REFS[name](f, y), rtol=1e-8)

  @parameterized.parameters('hscore', 'reg_hscore', 'transrate')
  def test_separable_beats_shuffled_and_permutation(self, name):
    f, y = _data(seed=1)
    fn = estimators.get_estimator(name)
    shuffled = np.random.default_rng(0).permutation(y)
    self.assertGreater(fn(f, y), fn(f, shuffled))
    perm = np.array([3, 1, 0, 2])
    np.testing.assert_allclose(fn(f, perm[y]), fn(f, y), rtol=1e-4)

  def test_scale_invariance(self):
    f, y = _data(seed=2)
    for name in ('hscore', 'reg_hscore'):
      fn = estimators.get_estimator(name)
      np.testing.assert_allclose(fn(100.0 * f, y), fn(f, y), rtol=1e-4)
    # H-score is invariant to any invertible linear map, not just scale.
    a = np.random.default_rng(0).normal(size=(6, 6))
    fn = estimators.get_estimator('hscore')
    with jax.enable_x64(True):
      np.testing.assert_allclose(fn(f @ a, y), fn(f, y), rtol=1e-8)


if __name__ == '__main__':
  absltest.main()
