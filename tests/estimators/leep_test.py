"""LEEP, NCE and NLEEP against NumPy references from the papers' equations."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
import scipy.special

from fennec_jax import estimators


def reference_leep(probs, y):
  """Nguyen et al. 2020, Eq. (1)-(2), with explicit loops."""
  n, z = probs.shape
  c = y.max() + 1
  joint = np.zeros((c, z))
  for i in range(n):
    joint[y[i]] += probs[i] / n
  cond = joint / joint.sum(0, keepdims=True)
  return np.mean([np.log(np.dot(cond[y[i]], probs[i])) for i in range(n)])


def reference_nce(source, y):
  """-H(Y | Z) from the empirical joint distribution of (y, z)."""
  n = len(y)
  total = 0.0
  for z in np.unique(source):
    pz = np.mean(source == z)
    for c in np.unique(y):
      pyz = np.mean((source == z) & (y == c))
      if pyz > 0:
        total += pyz * np.log(pyz / pz)
  del n
  return total


def reference_nleep(f, y, ratio=5, fraction=0.8, max_dim=64, max_iter=100,
                    tol=1e-3, reg=1e-6, seed=0):
  """PCA (sklearn's 80 % rule) + diagonal GMM by EM + LEEP (Li et al. 2021)."""
  n = len(y)
  fc = f - f.mean(0)
  _, s, vt = np.linalg.svd(fc, full_matrices=False)
  var = s**2 / (n - 1)
  ratio_cum = np.cumsum(var) / var.sum()
  keep = min(int(np.sum(ratio_cum[:max_dim] <= fraction)) + 1, max_dim,
             len(s))
  x = fc @ vt[:keep].T
  k = min(ratio * (y.max() + 1), n)
  init = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
  dist = ((x[:, None, :] - x[init][None]) ** 2).sum(-1)
  resp = np.eye(k)[dist.argmin(1)]

  def m_step(resp):
    nk = resp.sum(0) + 10 * np.finfo(float).eps
    means = resp.T @ x / nk[:, None]
    var = np.maximum(resp.T @ x**2 / nk[:, None] - means**2, 0) + reg
    return nk / n, means, var

  def e_step(weights, means, var):
    logp = np.log(weights) - 0.5 * np.stack([
        np.sum(np.log(2 * np.pi * var[j]) + (x - means[j]) ** 2 / var[j], 1)
        for j in range(k)], 1)
    norm = scipy.special.logsumexp(logp, 1, keepdims=True)
    return np.exp(logp - norm), norm.mean()

  params, lower = m_step(resp), -np.inf
  for _ in range(max_iter):
    resp, new_lower = e_step(*params)
    params = m_step(resp)
    change, lower = new_lower - lower, new_lower
    if abs(change) < tol:
      break
  resp, _ = e_step(*params)
  return reference_leep(resp, y)


class LEEPTest(parameterized.TestCase):

  def test_leep_matches_reference(self):
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    probs = scipy.special.softmax(rng.normal(size=(60, 7)) * 2, axis=1)
    with jax.enable_x64(True):
      got = estimators.get_estimator('leep')(labels=y, source_probs=probs)
    self.assertAlmostEqual(got, reference_leep(probs, y), delta=1e-12)
    got32 = estimators.get_estimator('leep')(
        labels=y, source_probs=probs.astype(np.float32))
    np.testing.assert_allclose(got32, reference_leep(probs, y), rtol=1e-5)

  def test_leep_arguments_are_keyword_only_and_checked(self):
    leep = estimators.get_estimator('leep')
    y = np.arange(10) % 2
    probs = np.full((10, 4), 0.25)
    with self.assertRaises(TypeError):
      leep(y, probs)  # pylint: disable=too-many-function-args
    with self.assertRaisesRegex(ValueError, 'not logits'):
      leep(labels=y, source_probs=np.log(probs))

  def test_leep_informative_source_beats_uninformative(self):
    rng = np.random.default_rng(1)
    y = np.arange(60) % 3
    informative = scipy.special.softmax(
        3 * np.eye(3)[y] @ rng.normal(size=(3, 5)), axis=1)
    flat = np.full((60, 5), 0.2)
    scores = estimators.score_models('leep', np.stack([informative, flat]), y)
    self.assertGreater(scores[0], scores[1])
    self.assertAlmostEqual(scores[1], np.log(1 / 3), delta=1e-5)

  def test_nce_matches_reference_and_swapping_matters(self):
    rng = np.random.default_rng(2)
    y = np.arange(50) % 3
    source = (y + (rng.random(50) < 0.3) * rng.integers(0, 6, 50)) % 6
    nce = estimators.get_estimator('nce')
    with jax.enable_x64(True):
      got = nce(labels=y, source_labels=source)
    self.assertAlmostEqual(got, reference_nce(source, y), delta=1e-12)
    # -H(Y|Z) != -H(Z|Y): a swap of the arguments would change the value.
    self.assertNotAlmostEqual(got, reference_nce(y, source), delta=1e-3)
    perm = np.array([2, 0, 1])
    self.assertAlmostEqual(nce(labels=perm[y], source_labels=source), got,
                           delta=1e-5)

  def test_nleep_matches_reference(self):
    rng = np.random.default_rng(3)
    y = np.arange(40) % 2
    f = rng.normal(size=(2, 5))[y] * 0.5 + rng.normal(size=(40, 5))
    f[:, 3] *= 0.1  # Small-variance dims fall outside the 80 % cut.
    with jax.enable_x64(True):
      got = estimators.get_estimator('nleep')(f, y)
    self.assertAlmostEqual(got, reference_nleep(f, y), delta=1e-7)
    got32 = estimators.get_estimator('nleep')(f.astype(np.float32), y)
    self.assertLess(got, -0.05)  # Not the trivial all-pure-components case.
    np.testing.assert_allclose(got32, reference_nleep(f, y), rtol=1e-3)

  def test_nleep_separable_beats_shuffled(self):
    rng = np.random.default_rng(4)
    y = np.arange(40) % 2
    f = rng.normal(size=(2, 5))[y] * 3 + rng.normal(size=(40, 5))
    fn = estimators.get_estimator('nleep')
    self.assertGreater(fn(f, y), fn(f, rng.permutation(y)))
    self.assertAlmostEqual(fn(f, 1 - y), fn(f, y), delta=1e-5)


if __name__ == '__main__':
  absltest.main()
