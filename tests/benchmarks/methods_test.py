"""Tests of the history protocol's method registry."""

from absl.testing import absltest
import numpy as np

from fennec_jax import history as history_lib
from fennec_jax import space as space_lib
from fennec_jax.benchmarks import comparisons
from fennec_jax.benchmarks import methods


def _history():
  rng = np.random.default_rng(0)
  scores = 0.6 + 0.1 * rng.normal(size=(8, 1)) + 0.02 * rng.normal(
      size=(8, 4))
  return history_lib.History.from_matrix(
      scores, model_metadata={'imagenet_acc': np.linspace(70.0, 80.0, 8)},
      name='toy')


class BuildMethodsTest(absltest.TestCase):

  def test_every_method_that_applies_in_order(self):
    h = _history()
    est = history_lib.History.from_matrix(np.ones((8, 2)),
                                          model_ids=h.model_ids)
    got = methods.build_methods(h, baseline_scores={'logme': est})
    self.assertEqual(list(got), ['popularity', 'imagenet_acc', 'logme',
                                 methods.FENNEC_SPACE, methods.PAPER_NMF])
    self.assertEqual(got['logme'].tasks, frozenset(est.task_ids))

  def test_selected_names_keep_the_requested_order(self):
    got = methods.build_methods(_history(), ['fennec_space', 'popularity'])
    self.assertEqual(list(got), ['fennec_space', 'popularity'])

  def test_unknown_name_lists_the_valid_ones(self):
    with self.assertRaisesRegex(
        ValueError, r"unknown or inapplicable methods \['logme'\] for "
        r"'toy'; valid: \['popularity', 'imagenet_acc', 'fennec_space', "
        r"'paper_nmf'\]"):
      methods.build_methods(_history(), ['popularity', 'logme'])

  def test_space_method_folds_in_the_observed_scores(self):
    h = _history()
    train = h.subset(tasks=np.arange(h.num_tasks) != 3)
    observed = np.full((2, h.num_models), np.nan)
    observed[1, :4] = h.scores[:4, 3]
    method = methods.space_method({'rank': 1, 'max_steps': 100})
    pred = method.predict(train, 't3', observed)
    self.assertEqual(pred.shape, (2, h.num_models))
    # K = 0 is the prior; revealed scores move the prediction.
    self.assertFalse(np.allclose(pred[0], pred[1]))

  def test_space_method_records_the_kshot_intervals(self):
    h = _history()
    train = h.subset(tasks=np.arange(h.num_tasks) != 3)
    observed = np.full((3, h.num_models), np.nan)
    observed[1, :4] = h.scores[:4, 3]
    observed[2, 2:5] = h.scores[2:5, 3]
    intervals = {}
    method = methods.space_method(
        {'rank': 1, 'max_steps': 100}, kshot_config=space_lib.KShotConfig(
            num_folds=3, num_draws=2, noise_mults=(1.0,),
            temperatures=(1.0,), gp_shrinks=(0.3,), gp_nuggets=(1.0,),
            blends=(0.0, 1.0)), intervals=intervals)
    pred = method.predict(train, 't3', observed)
    got_obs, got_pred, got_std = intervals['t3']
    np.testing.assert_array_equal(got_obs, observed[1:])  # K > 0 rows.
    np.testing.assert_allclose(got_pred, pred[1:], rtol=1e-6)
    self.assertTrue((got_std > 0).all())


class CoverageOfIntervalsTest(absltest.TestCase):

  def test_counts_unrevealed_true_scores_within_the_intervals(self):
    h = _history()
    true = h.scores[:, 1]
    observed = np.full((1, h.num_models), np.nan)
    observed[0, :2] = true[:2]  # Revealed: never counted.
    # Errors of 0.5, 1.5 and 2.5 std on the 6 unrevealed models (2 each).
    std = np.full((1, h.num_models), 0.1)
    err = np.array([9.0, 9.0, 0.5, 0.5, 1.5, 1.5, 2.5, 2.5]) * 0.1
    got = comparisons.coverage_of_intervals(
        h, {h.task_ids[1]: (observed, (true + err)[None], std)})
    self.assertAlmostEqual(got['coverage_68'], 2 / 6)
    self.assertAlmostEqual(got['coverage_95'], 4 / 6)


if __name__ == '__main__':
  absltest.main()
