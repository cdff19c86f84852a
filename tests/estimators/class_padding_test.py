"""Class counts as data: padded class axes change no score, compile once."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
import scipy.special

from fennec_jax import estimators
from fennec_jax.estimators import _batch

ALL = estimators.list_estimators()


def _inputs(name, n, c, d=6, m=2, seed=0, source_classes=7):
  """Stacked inputs of `name` for m models and labels with c classes."""
  rng = np.random.default_rng(seed)
  y = np.arange(n) % c
  feats = rng.normal(size=(m, n, d)) + rng.normal(size=(m, c, d))[:, y]
  if name == 'leep':
    logits = rng.normal(size=(m, n, source_classes))
    logits[:, np.arange(n), y % source_classes] += 2.0
    return scipy.special.softmax(logits, -1), y
  if name == 'nce':
    noise = rng.integers(0, source_classes, (m, n)) * (rng.random((m, n)) < .3)
    return (y[None] + noise) % source_classes, y
  return feats, y


def reference_hscore(f, y):
  g = np.zeros_like(f)
  for c in np.unique(y):
    g[y == c] = f[y == c].mean(0)
  return np.trace(np.linalg.pinv(np.cov(f, rowvar=False)) @ np.cov(
      g, rowvar=False))


def reference_transrate(f, y, eps=1e-4):
  def rate(z):
    n, d = z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]
  z = f - f.mean(0)
  classes = np.unique(y)
  return rate(z) - sum(rate(z[y == c]) for c in classes) / len(classes)


class PaddingTest(parameterized.TestCase):

  @parameterized.product(name=ALL, num_classes=(5, 6))
  def test_padded_equals_unpadded(self, name, num_classes):
    # max_classes=C is the unpadded computation (class axis of exactly C,
    # the path the reference tests check); 8 and 64 pad 2..59 classes.
    data, y = _inputs(name, 60, num_classes)
    with jax.enable_x64(True):
      unpadded = estimators.score_models(name, data, y,
                                         max_classes=num_classes)
      for bound in (None, 64):
        padded = estimators.score_models(name, data, y, max_classes=bound)
        np.testing.assert_allclose(padded, unpadded, rtol=1e-10, atol=1e-12,
                                   err_msg=f'{name}, max_classes={bound}')
    self.assertTrue(np.all(np.isfinite(unpadded)))

  def test_padded_equals_numpy_reference(self):
    feats, y = _inputs('hscore', 60, 5)
    with jax.enable_x64(True):
      for name, ref in (('hscore', reference_hscore),
                        ('transrate', reference_transrate)):
        got = estimators.score_models(name, feats, y, max_classes=64)
        want = [ref(f, y) for f in feats]
        np.testing.assert_allclose(got, want, rtol=1e-9, err_msg=name)

  def test_label_at_or_above_bound(self):
    f = np.random.default_rng(0).normal(size=(12, 3))
    y = np.arange(12) % 6
    with self.assertRaisesRegex(ValueError,
                                r'class id 5 >= max_classes=4'):
      estimators.get_estimator('logme')(f, y, max_classes=4)
    with self.assertRaisesRegex(ValueError, r'class id 1 >= max_classes=1'):
      estimators.score_models('nce', np.zeros((1, 12), np.int32), y % 2,
                              max_classes=1)

  def test_missing_class_is_still_an_error_under_a_bound(self):
    # Padding classes are the ones above C; a gap below C is a labelling
    # error, not padding.
    f = np.random.default_rng(0).normal(size=(6, 3))
    with self.assertRaisesRegex(ValueError, r'class id\(s\) \[1\] have no'):
      estimators.get_estimator('sfda')(f, np.array([0, 2] * 3),
                                       max_classes=8)


class CompileOnceTest(parameterized.TestCase):

  @parameterized.parameters(*ALL)
  def test_one_trace_for_every_class_count(self, name):
    # n = 74 is used by no other test, so the first target traces afresh.
    class_counts = (2, 5, 10, 37)
    before = _batch.trace_count(name)
    for c in class_counts:
      data, y = _inputs(name, 74, c, seed=c)
      scores = estimators.score_models(name, data, y, max_classes=64)
      self.assertTrue(np.all(np.isfinite(scores)), f'{name}, C={c}')
    traces = _batch.trace_count(name) - before
    if name == 'transrate':
      # Its per-class tables are [K, next power of two >= largest class]:
      # 37, 15, 8 and 2 rows give 64, 16, 8 and 2.
      self.assertEqual(traces, 4)
    else:
      self.assertEqual(traces, 1)


if __name__ == '__main__':
  absltest.main()
