"""Tests of the K-shot fold-in learned on the history (`space.kshot`)."""

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np
from scipy import stats

from fennec_jax import space as space_lib
from fennec_jax.space import kshot
from fennec_jax.space import kshot_calibrate
from fennec_jax.space import kshot_gp

_FAST = space_lib.SpaceConfig(max_steps=200, eval_every=50)


def _clustered(num_models=14, num_tasks=8, seed=0):
  """Two groups of tasks whose model rankings disagree (+ small noise)."""
  rng = np.random.default_rng(seed)
  a, b = rng.normal(size=(2, num_models))
  group = np.arange(num_tasks) % 2
  scores = np.where(group[None] == 0, a[:, None], b[:, None])
  scores = 0.6 + 0.1 * scores + 0.01 * rng.normal(size=scores.shape)
  return scores, np.ones(scores.shape, bool), group


class ConcordanceTest(absltest.TestCase):

  def test_equals_a_loop_over_pairs(self):
    rng = np.random.default_rng(1)
    columns = rng.normal(size=(9, 4)).astype(np.float32)
    idx = np.array([[0, 3, 5, 7], [1, 2, 8, 0]], np.int32)
    scores = rng.normal(size=idx.shape).astype(np.float32)
    valid = np.array([[True] * 4, [True, True, True, False]])
    got = np.asarray(kshot.concordance(jnp.asarray(columns), jnp.asarray(idx),
                                       jnp.asarray(scores),
                                       jnp.asarray(valid)))
    for b in range(2):
      ok = np.flatnonzero(valid[b])
      for t in range(4):
        # tau-a: no ties here, so it equals scipy's tau-b.
        want = stats.kendalltau(scores[b, ok], columns[idx[b, ok], t])[0]
        np.testing.assert_allclose(got[b, t], want, rtol=1e-5, atol=1e-6)

  def test_one_score_or_equal_scores_say_nothing(self):
    columns = jnp.asarray(np.random.default_rng(2).normal(size=(6, 3)),
                          jnp.float32)
    idx = jnp.asarray([[2, 0, 0], [1, 4, 5]], jnp.int32)
    scores = jnp.asarray([[0.7, 0.0, 0.0], [0.5, 0.5, 0.5]], jnp.float32)
    valid = jnp.asarray([[True, False, False], [True, True, True]])
    np.testing.assert_array_equal(
        kshot.concordance(columns, idx, scores, valid), np.zeros((2, 3)))


class RobustScoresTest(absltest.TestCase):

  def test_far_score_is_pulled_in_and_bulk_is_kept(self):
    expected = jnp.zeros((1, 5))
    scores = jnp.asarray([[0.1, -0.2, 0.05, 0.0, 50.0]])
    valid = jnp.ones((1, 5), bool)
    out = np.asarray(kshot.robust_scores(scores, valid, expected, 1.0))
    # Bulk: |z| <= 0.2 against a floor of 1, so c tanh(z / c) ~ z.
    np.testing.assert_allclose(out[0, :4], np.asarray(scores)[0, :4],
                               atol=2e-3)
    self.assertLess(out[0, 4], kshot.SCORE_CLIP + 0.1)
    self.assertGreater(out[0, 4], out[0, :4].max())  # Order kept.

  def test_fewer_than_three_scores_are_unchanged(self):
    scores = jnp.asarray([[0.0, 100.0, 0.0]])
    valid = jnp.asarray([[True, True, False]])
    out = kshot.robust_scores(scores, valid, jnp.zeros((1, 3)), 1.0)
    np.testing.assert_array_equal(out, scores)


class PredictTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.scores, cls.mask, cls.group = _clustered()
    cls.space = space_lib.fit(cls.scores, cls.mask, _FAST)
    cls.columns = kshot.completed_columns(cls.space, cls.scores, cls.mask)

  def _fold(self, **params):
    p = kshot.PRIOR._replace(**params)
    return kshot.KShotFoldIn(columns=self.columns, params={1: p},
                             validation={})

  def test_prior_params_keep_the_k0_ranking(self):
    idx = np.array([[0, 3, 5]])
    y = self.scores[idx[0], 0][None]
    pred, std = kshot.predict(self.space, self._fold(), idx, y,
                              np.ones(idx.shape, bool))
    k0 = np.asarray(self.space.fold_in(np.zeros((1, 14)),
                                       np.zeros((1, 14), bool)).predicted)
    self.assertAlmostEqual(stats.kendalltau(pred[0], k0[0])[0], 1.0)
    self.assertTrue(np.isfinite(std).all() and (std > 0).all())

  def test_kernel_finds_the_task_group(self):
    # Scores of a new task of group 1 on 4 models: a kernel at a high
    # temperature predicts group 1's ranking of the other models.
    idx = np.array([[0, 1, 2, 3]])
    y = self.scores[idx[0], 1][None]
    pred, _ = kshot.predict(self.space,
                            self._fold(temperature=50.0, blend_kernel=1.0),
                            idx, y, np.ones(idx.shape, bool))
    rest = np.arange(4, 14)
    group1 = self.columns[:, self.group == 1].mean(1)
    self.assertGreater(stats.kendalltau(pred[0, rest], group1[rest])[0],
                       0.9)

  def test_bad_inputs_give_finite_rankings(self):
    fold = self._fold(temperature=10.0, blend_kernel=0.5, blend_space=0.5)
    idx = np.array([[4, 0, 0], [1, 2, 3], [5, 6, 7]])
    y = np.array([[0.7, 0, 0], [0.6, 0.6, 0.6], [0.6, 0.65, 1e6]])
    valid = np.array([[True, False, False], [True] * 3, [True] * 3])
    with self.assertLogs(level='WARNING') as logs:
      pred, std = kshot.predict(self.space, fold, idx, y, valid)
    self.assertIn('winsorized', logs.output[0])
    self.assertTrue(np.isfinite(pred).all() and np.isfinite(std).all())
    # The outlier moved the level by a bounded amount, not to ~1e6.
    self.assertLess(np.abs(pred[2]).max(), 10.0)

  def test_observed_rows_without_scores_keep_the_k0_prediction(self):
    fold = self._fold(temperature=10.0, blend_kernel=1.0)
    observed = np.full((2, 14), np.nan)
    observed[1, [2, 5, 9]] = self.scores[[2, 5, 9], 1]
    pred, std = kshot.predict_observed(self.space, fold, observed)
    k0 = self.space.fold_in(np.zeros((1, 14)), np.zeros((1, 14), bool))
    # Equal up to float32 rounding of another batch size.
    np.testing.assert_allclose(pred[0], np.asarray(k0.predicted)[0],
                               rtol=1e-6)
    np.testing.assert_allclose(std[0], np.asarray(k0.std)[0], rtol=1e-6)
    self.assertFalse(np.allclose(pred[1], pred[0]))
    with self.assertRaisesRegex(ValueError, r'observed must be \[B, 14\]'):
      kshot.predict_observed(self.space, fold, observed[:, :5])
    observed[0, 0] = np.inf
    with self.assertRaisesRegex(ValueError, r'observed\[0, 0\] = inf'):
      kshot.predict_observed(self.space, fold, observed)

  def test_unknown_model_or_bad_score_is_clear_error(self):
    fold = self._fold()
    ok = np.ones((1, 2), bool)
    with self.assertRaisesRegex(ValueError, r'idx\[0, 1\] = 14 is outside'):
      kshot.predict(self.space, fold, np.array([[0, 14]]), [[0.5, 0.6]], ok)
    with self.assertRaisesRegex(ValueError, r'scores\[0, 0\] = nan'):
      kshot.predict(self.space, fold, np.array([[0, 1]]), [[np.nan, 0.6]],
                    ok)

  def test_params_for_uses_the_largest_calibrated_k_below(self):
    a = kshot.PRIOR._replace(temperature=1.0)
    b = kshot.PRIOR._replace(temperature=2.0)
    fold = kshot.KShotFoldIn(columns=self.columns, params={1: a, 5: b},
                             validation={})
    self.assertEqual(fold.params_for(0), kshot.PRIOR)
    self.assertEqual(fold.params_for(3), a)
    self.assertEqual(fold.params_for(7), b)


class CalibrateTest(absltest.TestCase):

  def test_clustered_history_learns_the_kernel_and_never_loses(self):
    scores, mask, _ = _clustered(num_tasks=6)
    space = space_lib.fit(scores, mask, _FAST)
    config = kshot.KShotConfig(num_folds=3, num_draws=4,
                               noise_mults=(1.0, 30.0),
                               temperatures=(3.0, 30.0),
                               blends=(0.0, 0.5, 1.0))
    fold = kshot_calibrate.calibrate(space, scores, mask, [4], config)
    params, val = fold.params[4], fold.validation[4]
    self.assertGreater(params.blend_kernel, 0.0)
    self.assertGreaterEqual(val['chosen'], val['prior'])
    self.assertGreater(val['chosen'], val['prior'] + 0.1)
    # The std factor makes the simulated 68% intervals cover 68%.
    self.assertAlmostEqual(val['coverage_68'], 0.68, delta=0.02)

  def test_family_metadata_is_used_where_the_history_is_too_short(self):
    # 10 families x 3 models, 6 tasks: each task favours families at random,
    # so held-out folds' 4 training tasks cannot show the family structure
    # (a rank <= 3 covariance), but the metadata can: a revealed model
    # predicts its family members.
    rng = np.random.default_rng(3)
    family = np.repeat(np.arange(10), 3)
    effect = rng.normal(size=(10, 6))
    scores = 0.5 + 0.1 * (effect[family] + 0.2 * rng.normal(size=(30, 6)))
    mask = np.ones(scores.shape, bool)
    space = space_lib.fit(scores, mask, _FAST)
    meta = kshot_gp.metadata_factor(
        {'family': np.array([f'f{f}' for f in family], object)}, 30)
    self.assertEqual(meta.shape, (30, 10))
    config = kshot.KShotConfig(num_folds=3, num_draws=4, noise_mults=(1.0,),
                               temperatures=(3.0,), gp_shrinks=(0.1,),
                               gp_nuggets=(0.3,), blends=(0.0, 0.5, 1.0),
                               pearson_weight=0.0)
    plain = kshot_calibrate.calibrate(space, scores, mask, [8], config)
    with_meta = kshot_calibrate.calibrate(space, scores, mask, [8], config,
                                          meta=meta)
    self.assertEqual(plain.params[8].gp_meta, 0.0)
    self.assertGreater(with_meta.params[8].gp_meta, 0.0)
    self.assertGreater(with_meta.validation[8]['gp'],
                       plain.validation[8]['gp'] + 0.1)
    self.assertGreaterEqual(with_meta.validation[8]['chosen'],
                            plain.validation[8]['chosen'])
    # Predictions use the stored factor: a revealed family's members rise.
    idx = np.array([[0, 3, 6, 9, 12, 15, 18, 21]])
    y = 0.5 + 0.1 * rng.normal(size=(1, 8))
    y[0, 0] = y.max() + 0.1
    pred, _ = kshot.predict(space, with_meta, idx, y, np.ones((1, 8), bool))
    rest = np.setdiff1d(np.arange(30), idx[0])
    self.assertEqual(sorted(rest[np.argsort(-pred[0, rest])[:2]]), [1, 2])

  def test_bad_config_is_clear_error(self):
    with self.assertRaisesRegex(ValueError, 'blends must contain 0'):
      kshot.KShotConfig(blends=(0.5, 1.0)).validate()
    with self.assertRaisesRegex(ValueError, 'num_draws'):
      kshot.KShotConfig(num_draws=0).validate()


if __name__ == '__main__':
  absltest.main()
