"""Registry, batching over models, shared PCA and bad-input behaviour."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import estimators
from fennec_jax.estimators import _batch
from fennec_jax.estimators import preprocess

FEATURE_ESTIMATORS = [n for n in estimators.list_estimators()
                      if n not in ('leep', 'nce')]


def _models(m=3, n=36, d=5, c=3, seed=0):
  rng = np.random.default_rng(seed)
  y = np.arange(n) % c
  stack = rng.normal(size=(m, n, d))
  stack[0] += 2.0 * rng.normal(size=(c, d))[y]
  return stack.astype(np.float32), y


class RegistryTest(parameterized.TestCase):

  def test_unknown_name_lists_valid_names(self):
    with self.assertRaisesRegex(ValueError, 'valid: .*logme.*sfda'):
      estimators.get_estimator('logmee')
    with self.assertRaisesRegex(ValueError, 'unknown estimator'):
      estimators.score_models('nope', np.zeros((1, 4, 2)), np.arange(4) % 2)

  def test_all_issue_estimators_registered(self):
    self.assertContainsSubset(
        ['logme', 'leep', 'nleep', 'nce', 'hscore', 'reg_hscore', 'transrate',
         'gbc', 'sfda', 'fda', 'parc', 'knn', 'linear_probe'],
        estimators.list_estimators())

  @parameterized.parameters(*FEATURE_ESTIMATORS)
  def test_batched_equals_per_model(self, name):
    stack, y = _models()
    batched = estimators.score_models(name, stack, y)
    single = [estimators.get_estimator(name)(f, y) for f in stack]
    np.testing.assert_allclose(batched, single, rtol=2e-5, atol=1e-6)
    # The class-separating model ranks first for every estimator.
    self.assertEqual(int(np.argmax(batched)), 0)

  def test_models_of_different_widths_are_grouped(self):
    stack, y = _models(m=2, d=5)
    wide = np.random.default_rng(1).normal(size=(36, 7)).astype(np.float32)
    models = [stack[0], wide, stack[1]]
    got = estimators.score_models('hscore', models, y)
    want = [estimators.get_estimator('hscore')(f, y) for f in models]
    np.testing.assert_allclose(got, want, rtol=1e-5)

  def test_sharded_batch_equals_unsharded(self):
    # 8 models on the 8 test devices are sharded along the model axis.
    stack, y = _models(m=8)
    got = estimators.score_models('logme', stack, y, shard_on_cpu=True)
    want = estimators.score_models('logme', stack[:3], y)
    # LogME's evidence is a float32 sum of O(1) terms: a score near zero
    # (-0.08 here) carries ~1e-6 absolute rounding from the summation order
    # of another device layout, above 1e-5 relative to itself.
    np.testing.assert_allclose(got[:3], want, rtol=1e-5, atol=2e-6)

  def test_shared_pca_option_equals_projected_features(self):
    stack, y = _models(m=2, d=5)
    got = estimators.score_models('sfda', stack, y, pca=3)
    projected = [np.asarray(preprocess.pca(f, 3)) for f in stack]
    want = estimators.score_models('sfda', np.stack(projected), y)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    with self.assertRaisesRegex(ValueError, 'pca must be'):
      estimators.score_models('sfda', stack, y, pca=dict(width=3))

  def test_warns_when_all_models_score_equal(self):
    stack, y = _models(m=1)
    with self.assertLogs('absl', level='WARNING') as logs:
      estimators.score_models('fda', np.repeat(stack, 3, 0), y)
    self.assertTrue(any('same score' in m for m in logs.output))

  def test_invalid_input_names_the_model(self):
    stack, y = _models(m=2)
    wide = np.random.default_rng(1).normal(size=(stack.shape[1], 7))
    bad = stack[1].copy()
    bad[4, 1] = np.nan
    models = [stack[0], bad, wide]
    with self.assertRaisesRegex(ValueError, r'fda: model\(s\) noisy: .*row: 4'):
      estimators.score_models('fda', models, y,
                              model_ids=['good', 'noisy', 'wide'])
    # Without ids a model is named by its position among all the models, not
    # within its width group ('#2', the first of the 7-wide group).
    wide_bad = wide.copy()
    wide_bad[0, 0] = np.inf
    with self.assertRaisesRegex(ValueError, r'fda: model\(s\) #2: '):
      estimators.score_models('fda', [stack[0], stack[1], wide_bad], y)
    with self.assertRaisesRegex(ValueError, '2 model_ids for 3 models'):
      estimators.score_models('fda', models, y, model_ids=['a', 'b'])

  def test_non_finite_score_warning_names_the_model(self):
    spec = _batch.Spec(
        name='test_inf_when_first_feature_positive',
        core=lambda x: jnp.where(x[0, 0] > 0, jnp.inf, x[0, 0]),
        prepare=lambda stack, labels: ({}, {}))
    stack = np.array([[[-1.0]], [[2.0]], [[-3.0]]], np.float32)
    with self.assertLogs('absl', level='WARNING') as logs:
      scores = _batch.run(spec, stack, np.zeros(1, int), {},
                          model_ids=['a', 'b', 'c'])
    np.testing.assert_array_equal(scores, [-1.0, np.inf, -3.0])
    self.assertIn('non-finite score for model(s) b;', '\n'.join(logs.output))


class PCATest(absltest.TestCase):

  def test_exact_matches_svd_and_randomized_matches_exact(self):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(50, 8)) @ np.diag([9, 7, 5, 3, 1, .5, .2, .1])
    fc = f - f.mean(0)
    _, s, vt = np.linalg.svd(fc, full_matrices=False)
    with jax.enable_x64(True):
      comp, var = preprocess.pca_basis(f, 3)
      np.testing.assert_allclose(np.abs(comp.T @ vt[:3].T), np.eye(3),
                                 atol=1e-10)
      np.testing.assert_allclose(var, s[:3] ** 2 / 49, rtol=1e-10)
      rcomp, rvar = preprocess.pca_basis(f, 3, method='randomized',
                                         key=jax.random.key(0))
      np.testing.assert_allclose(np.abs(rcomp.T @ comp), np.eye(3),
                                 atol=1e-6)
      np.testing.assert_allclose(rvar, var, rtol=1e-6)
      # n < d goes through the n x n Gram matrix.
      wide = rng.normal(size=(6, 20))
      comp_w, _ = preprocess.pca_basis(wide, 4)
      _, _, vt_w = np.linalg.svd(wide - wide.mean(0), full_matrices=False)
      np.testing.assert_allclose(np.abs(comp_w.T @ vt_w[:4].T), np.eye(4),
                                 atol=1e-10)

  def test_unknown_method(self):
    with self.assertRaisesRegex(ValueError, 'randomized'):
      preprocess.pca(np.zeros((4, 3)), 2, method='svd')


class BadInputTest(parameterized.TestCase):

  @parameterized.parameters(*FEATURE_ESTIMATORS)
  def test_finite_result_on_degenerate_features(self, name):
    rng = np.random.default_rng(0)
    # n < d, all-constant and duplicated features (one batched call) ...
    y = np.arange(12) % 3
    base = rng.normal(size=(12, 10)) + np.eye(3, 10)[y]
    wide = np.stack([rng.normal(size=(12, 20)) + np.eye(3, 20)[y],
                     np.full((12, 20), 3.0),
                     np.concatenate([base, base], 1)])
    # ... and the same with n > d and a class holding a single sample.
    y_single = np.concatenate([np.arange(23) % 2, [2]])
    base = rng.normal(size=(24, 3)) + np.eye(2, 3)[y_single % 2]
    tall = np.stack([np.concatenate([base, base], 1),
                     np.full((24, 6), -1.0),
                     rng.normal(size=(24, 6))])
    for stack, labels in ((wide, y), (tall, y_single)):
      scores = estimators.score_models(name, stack.astype(np.float32), labels)
      self.assertTrue(np.all(np.isfinite(scores)), f'{name}: {scores}')

  @parameterized.named_parameters(
      dict(testcase_name='single_class', labels=[0] * 6,
           message='single class'),
      dict(testcase_name='outside_range', labels=[0, 1, 2, 0, 1, -1],
           message=r'row 5 holds -1'),
      dict(testcase_name='missing_class', labels=[0, 2, 0, 2, 0, 2],
           message=r'class id\(s\) \[1\] have no sample'),
      dict(testcase_name='wrong_length', labels=[0, 1, 0, 1],
           message='4 entries but features have 6 rows'),
  )
  def test_bad_labels(self, labels, message):
    f = np.random.default_rng(0).normal(size=(6, 3))
    for name in ('logme', 'sfda'):
      with self.assertRaisesRegex(ValueError, message):
        estimators.get_estimator(name)(f, np.array(labels))

  def test_nan_features(self):
    f = np.random.default_rng(0).normal(size=(6, 3))
    f[4, 1] = np.nan
    with self.assertRaisesRegex(ValueError, 'NaN or inf .* row: 4'):
      estimators.get_estimator('fda')(f, np.arange(6) % 2)


if __name__ == '__main__':
  absltest.main()
