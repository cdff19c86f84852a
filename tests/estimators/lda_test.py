"""SFDA and FDA against NumPy/SciPy references from the papers' equations."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
import scipy.linalg
import scipy.special
import scipy.stats

from fennec_jax import estimators


def _power_top_eigenvalue(a, iters=3):
  x = a.sum(1)
  for _ in range(iters):
    y = a @ x / np.linalg.norm(a @ x)
    x = a @ y / np.linalg.norm(a @ y)
  return x @ a @ y


def _shrunk(cov, a):
  d = cov.shape[0]
  return (1 - a) * cov + a * np.trace(cov) / d * np.eye(d)


def _sfda_fit(x, y, shrinkage=None):
  """Fisher space fit as in Shao et al.: generalised eigenproblem (S_b, S)."""
  n, d = x.shape
  classes = np.unique(y)
  priors = np.array([np.mean(y == c) for c in classes])
  means = np.stack([x[y == c].mean(0) for c in classes])
  sw = sum(p * np.cov(x[y == c], rowvar=False, bias=True)
           for p, c in zip(priors, classes))
  if shrinkage is None:
    shrinkage = max(np.exp(-5 * _power_top_eigenvalue(sw)), 1e-10)
  st = _shrunk(np.cov(x, rowvar=False, bias=True), shrinkage)
  sw_shrunk = _shrunk(sw, shrinkage)
  _, evecs = scipy.linalg.eigh(st - sw_shrunk, sw_shrunk)
  coef = means @ evecs @ evecs.T
  intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
  return scipy.special.softmax(x @ coef.T + intercept, axis=1), shrinkage


def reference_sfda(x, y):
  x = x.astype(np.float64).copy()
  n = len(y)
  c = y.max() + 1
  prob, shrinkage = _sfda_fit(x, y)
  prob = scipy.special.softmax(prob, axis=1)
  means = np.stack([x[y == k].mean(0) for k in range(c)])
  for k in range(c):
    others = (means.sum(0) - means[k]) / (c - 1)
    p = prob[y == k, k][:, None]
    x[y == k] = p * x[y == k] + (1 - p) * others
  prob, _ = _sfda_fit(x, y, shrinkage)
  return prob[np.arange(n), y].mean()


def reference_fda(f, y, dim=32):
  """PCA to `dim`, Gaussian class-conditionals with the pooled covariance."""
  fc = f - f.mean(0)
  _, _, vt = np.linalg.svd(fc, full_matrices=False)
  x = fc @ vt[:dim].T
  n, k = x.shape
  classes = np.unique(y)
  means = np.stack([x[y == c].mean(0) for c in classes])
  resid = x - means[y]
  sw = resid.T @ resid / (n - len(classes))
  ridge = 1e-6 * max(np.trace(sw) / k, np.sum(x * x) / (n * k))
  cov = sw + ridge * np.eye(k)
  loglik = np.stack([
      scipy.stats.multivariate_normal.logpdf(x, means[c], cov) +
      np.log(np.mean(y == c)) for c in classes], 1)
  post = np.exp(loglik - scipy.special.logsumexp(loglik, 1, keepdims=True))
  return post[np.arange(n), y].mean()


def _data(n=48, d=6, c=4, seed=0, signal=1.0):
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % c
  return (rng.normal(size=(c, d))[labels] * signal +
          rng.normal(size=(n, d))), labels


class SFDATest(parameterized.TestCase):

  def test_matches_reference(self):
    f, y = _data(signal=0.7)
    fn = estimators.get_estimator('sfda')
    want = reference_sfda(f, y)
    with jax.enable_x64(True):
      self.assertAlmostEqual(fn(f, y, guard=False), want, delta=1e-9)
      # n - C >= d here, so the automatic guard is off.
      self.assertAlmostEqual(fn(f, y), want, delta=1e-9)
    np.testing.assert_allclose(fn(f.astype(np.float32), y, guard=False), want,
                               rtol=1e-4)

  def test_small_top_eigenvalue_uses_large_shrinkage(self):
    f, y = _data(signal=0.7)
    f = 0.1 * f  # lambda_max < 1: exp(-5 lambda) is far from the 1e-10 floor.
    with jax.enable_x64(True):
      got = estimators.get_estimator('sfda')(f, y, guard=False)
    self.assertAlmostEqual(got, reference_sfda(f, y), delta=1e-9)

  def test_degeneracy_guard(self):
    # n = 40 samples, d = 64 dims: in float64 (what users' NumPy code runs)
    # the unguarded score is 1.0 for every model, including pure-noise ones;
    # the guard restores a ranking in float64 and float32 alike.
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    models = 3.0 * rng.normal(size=(4, 40, 64))
    models[0] += 3.0 * rng.normal(size=(4, 64))[y]
    with jax.enable_x64(True):
      with self.assertLogs('absl', level='WARNING') as logs:
        raw = estimators.score_models('sfda', models, y, guard=False)
      guarded64 = estimators.score_models('sfda', models, y)
    self.assertTrue(any('same score' in m for m in logs.output))
    np.testing.assert_allclose(raw, 1.0, atol=1e-6)
    guarded = estimators.score_models('sfda', models.astype(np.float32), y)
    np.testing.assert_allclose(guarded, guarded64, rtol=1e-4)
    self.assertLess(np.max(guarded[1:]), 0.9)
    self.assertGreater(guarded[0], np.max(guarded[1:]) + 0.1)

  def test_separable_beats_shuffled_and_permutation(self):
    f, y = _data(seed=1)
    fn = estimators.get_estimator('sfda')
    self.assertGreater(fn(f, y),
                       fn(f, np.random.default_rng(0).permutation(y)))
    perm = np.array([2, 3, 1, 0])
    np.testing.assert_allclose(fn(f, perm[y]), fn(f, y), rtol=1e-5)


class FDATest(parameterized.TestCase):

  @parameterized.named_parameters(
      dict(testcase_name='pca_cuts', d=12, dim=5),
      dict(testcase_name='dim_above_d', d=6, dim=32),
  )
  def test_matches_reference(self, d, dim):
    f, y = _data(d=d, seed=2)
    fn = estimators.get_estimator('fda')
    want = reference_fda(f, y, dim)
    with jax.enable_x64(True):
      self.assertAlmostEqual(fn(f, y, dim=dim), want, delta=1e-9)
    np.testing.assert_allclose(fn(f.astype(np.float32), y, dim=dim), want,
                               rtol=1e-4)

  def test_randomized_pca_close_to_exact(self):
    f, y = _data(d=12, seed=2)
    fn = estimators.get_estimator('fda')
    with jax.enable_x64(True):
      exact = fn(f, y, dim=5)
      randomized = fn(f, y, dim=5, pca_method='randomized')
    self.assertAlmostEqual(exact, randomized, delta=1e-6)

  def test_invariances(self):
    f, y = _data(seed=3)
    fn = estimators.get_estimator('fda')
    with jax.enable_x64(True):
      base = fn(f, y)
      self.assertAlmostEqual(fn(37.0 * f, y), base, delta=1e-9)
      q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))
      self.assertAlmostEqual(fn(f @ q, y), base, delta=1e-9)
      perm = np.array([1, 0, 3, 2])
      self.assertAlmostEqual(fn(f, perm[y]), base, delta=1e-9)
      self.assertGreater(base,
                         fn(f, np.random.default_rng(0).permutation(y)))


if __name__ == '__main__':
  absltest.main()
