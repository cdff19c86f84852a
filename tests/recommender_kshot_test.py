"""Tests of `Fennec` with the K-shot fold-in (`FennecConfig.kshot`)."""

import dataclasses
import os
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np

from fennec_jax import history as history_lib
from fennec_jax import recommender
from fennec_jax import space as space_lib
from fennec_jax.space import kshot
from fennec_jax.space import kshot_calibrate
from fennec_jax.space import kshot_gp
from fennec_jax.space import kshot_lazy

_SPACE = space_lib.SpaceConfig(max_steps=200, eval_every=50)
# Small simulation (the library default refits 16 folds).
_KSHOT = kshot.KShotConfig(num_folds=3, num_draws=3, noise_mults=(1.0,),
                           temperatures=(10.0,), blends=(0.0, 1.0))


def _history(num_models=14, num_tasks=6, seed=0):
  """Two groups of tasks whose model rankings disagree (+ small noise).

  The kernel source (which historical tasks the new one resembles) then
  beats the prior on held-out tasks, so calibration blends it in.
  """
  rng = np.random.default_rng(seed)
  a, b = rng.normal(size=(2, num_models))
  group = np.arange(num_tasks) % 2
  scores = np.where(group[None] == 0, a[:, None], b[:, None])
  return history_lib.History.from_matrix(
      0.6 + 0.1 * scores + 0.01 * rng.normal(size=scores.shape))


class FennecKShotTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.history = _history()
    cls.on = recommender.Fennec(recommender.FennecConfig(space=_SPACE))
    cls.on.fit(cls.history)
    cls.on.kshot.config = _KSHOT
    cls.off = recommender.Fennec.from_parts(  # The same space, kshot off.
        cls.on.space, cls.history.model_ids, cls.history.task_ids,
        config=dataclasses.replace(cls.on.config, kshot=False))
    # Task 0's ranking, 5 scores revealed (calibrated at K = 4), and a task
    # with none (K = 0) in the same batch.
    cls.observed = np.full((2, 14), np.nan)
    cls.observed[0, :5] = cls.history.scores[:5, 0]

  def test_equals_kshot_predict_observed_and_differs_from_plain(self):
    rec = self.on.recommend(observed=self.observed, top=3)
    # Independent path: calibrate K = 4 directly on the same space.
    fold = kshot_calibrate.calibrate(self.on.space, self.history.scores,
                                     self.history.mask, [4], _KSHOT)
    self.assertGreater(fold.params[4].blend_kernel, 0.0)
    want, want_std = kshot.predict_observed(self.on.space, fold,
                                            self.observed[:1])
    np.testing.assert_allclose(rec.all_predicted[:1], want, atol=1e-6)
    np.testing.assert_allclose(rec.all_std[:1], want_std, atol=1e-6)
    self.assertEqual(list(rec.indices[0]), list(np.argsort(-want[0])[:3]))
    np.testing.assert_allclose(rec.predicted[0], want[0][rec.indices[0]])
    # `predict` gives the same numbers.
    pred, std, _ = self.on.predict(observed=self.observed)
    np.testing.assert_allclose(pred, rec.all_predicted, atol=1e-6)
    np.testing.assert_allclose(std, rec.all_std, atol=1e-6)
    plain = self.off.recommend(observed=self.observed, top=3)
    self.assertGreater(np.abs(plain.all_predicted[0] - want[0]).max(), 1e-3)
    # K = 0 is the plain prior, unchanged.
    np.testing.assert_array_equal(rec.all_predicted[1],
                                  plain.all_predicted[1])
    np.testing.assert_array_equal(rec.all_std[1], plain.all_std[1])
    self.assertEqual(sorted(self.on.kshot.fold.params), [4])

  def test_off_is_the_space_fold_in(self):
    rec = self.off.recommend(observed=self.observed[:1], top=3)
    seen = ~np.isnan(self.observed[:1])
    ref = self.off.space.fold_in(np.where(seen, self.observed[:1], 0.0), seen)
    np.testing.assert_allclose(rec.all_predicted, ref.predicted, atol=1e-5)
    np.testing.assert_allclose(rec.all_std, ref.std, atol=1e-5)

  def test_without_a_stored_history_is_the_plain_fold_in(self):
    # from_parts (and checkpoints older than the stored history): no
    # history to calibrate on, so kshot=True falls back to the plain path.
    bare = recommender.Fennec.from_parts(
        self.on.space, self.history.model_ids, self.history.task_ids,
        config=self.on.config)
    path = os.path.join(self.enterContext(tempfile.TemporaryDirectory()),
                        'ckpt')
    bare.save(path)
    loaded = recommender.Fennec.load(path)
    self.assertIsNone(loaded.kshot)
    np.testing.assert_array_equal(
        loaded.recommend(observed=self.observed, top=3).all_predicted,
        self.off.recommend(observed=self.observed, top=3).all_predicted)

  def test_calibrated_k_is_a_power_of_two_the_history_can_simulate(self):
    counts = np.array([14, 9])  # At most K = 11 can be simulated.
    got = [kshot_lazy.calibrated_k(k, counts) for k in (0, 1, 3, 4, 7, 13)]
    self.assertEqual(got, [0, 1, 2, 4, 4, 8])
    self.assertEqual(kshot_lazy.calibrated_k(5, np.array([3])), 0)

  def test_save_load_keeps_the_calibration(self):
    rec = self.on.recommend(observed=self.observed, top=3)
    path = os.path.join(self.enterContext(tempfile.TemporaryDirectory()),
                        'ckpt')
    self.on.save(path)
    loaded = recommender.Fennec.load(path)
    self.assertTrue(loaded.config.kshot)
    self.assertEqual(loaded.kshot.params, self.on.kshot.params)
    self.assertEqual(loaded.kshot.tried, self.on.kshot.tried)
    for k, v in self.on.kshot.validation.items():
      for key, val in v.items():
        self.assertAlmostEqual(loaded.kshot.validation[k][key], val)
    # The loaded Fennec does not recalibrate: same numbers, no simulation.
    with mock.patch.object(kshot_calibrate, 'calibrate',
                           side_effect=AssertionError('recalibrated')):
      np.testing.assert_allclose(
          loaded.recommend(observed=self.observed, top=3).all_predicted,
          rec.all_predicted, atol=1e-6)

  def test_a_new_k_reuses_the_refits(self):
    lazy = kshot_lazy.LazyFoldIn(self.history.scores, self.history.mask,
                                 _KSHOT)
    idx, scores, valid = kshot_lazy.sparse_observed(self.observed[:1],
                                                    self.history.model_ids)
    lazy.predict(self.on.space, idx, scores, valid)
    self.assertEqual(sorted(lazy.params), [4])
    fits = dict(lazy._fits)  # pylint: disable=protected-access
    self.assertLen(fits, 3)
    with mock.patch.object(space_lib.factorization, 'fit',
                           side_effect=AssertionError('refit')):
      lazy.predict(self.on.space, idx[:, :2], scores[:, :2], valid[:, :2])
    self.assertEqual(sorted(lazy.params), [2, 4])

  def test_model_metadata_reaches_the_fold_in_and_its_checkpoint(self):
    family = np.array(['a', 'b'] * 7, object)
    history = self.history.replace(model_metadata={'family': family})
    fennec = recommender.Fennec(self.on.config)
    fennec.fit(history)
    want = kshot_gp.metadata_factor({'family': family}, 14)
    np.testing.assert_allclose(fennec.kshot.meta, want, rtol=1e-6)
    # Without metadata nothing is stored (the plain conditional Gaussian).
    self.assertEqual(self.on.kshot.meta.shape, (14, 0))
    self.assertNotIn('meta', self.on.kshot.to_arrays())
    arrays = fennec.kshot.to_arrays()
    np.testing.assert_array_equal(
        kshot_lazy.LazyFoldIn.from_arrays(arrays).meta, fennec.kshot.meta)
    # A calibration saved before the metadata weight existed still loads.
    lazy = kshot_lazy.LazyFoldIn(history.scores, history.mask, _KSHOT)
    lazy.params[4] = kshot.PRIOR._replace(blend_gp=0.5)
    lazy.validation[4] = {}
    old = lazy.to_arrays()
    old['params'] = old['params'][:, :-1]
    self.assertEqual(kshot_lazy.LazyFoldIn.from_arrays(old).params[4],
                     lazy.params[4])


if __name__ == '__main__':
  absltest.main()
