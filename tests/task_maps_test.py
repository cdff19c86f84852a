"""Tests of the task maps: ridge regression, registry, priors, persistence."""

import json

from absl.testing import absltest
import numpy as np

from fennec_jax import history as history_lib
from fennec_jax import neighbors
from fennec_jax import recommender
from fennec_jax import space as space_lib
from fennec_jax import task_maps


def _world(seed=0, num_models=20, num_tasks=9, images=6, dim=5):
  """Scores of rank 2; each task's images scatter around a task direction."""
  rng = np.random.default_rng(seed)
  u, v = rng.normal(size=(num_models, 2)), rng.normal(size=(num_tasks, 2))
  scores = 0.7 + 0.1 * u @ v.T + 0.01 * rng.normal(size=(num_models,
                                                         num_tasks))
  centers = v @ rng.normal(size=(2, dim))
  sets = [c + 0.3 * rng.normal(size=(images, dim)) for c in centers]
  return history_lib.History.from_matrix(scores), sets


class RidgeTest(absltest.TestCase):

  def test_ridge_loo_residuals_match_refits(self):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 5))
    y = x @ rng.normal(size=(5, 2)) + 0.3 * rng.normal(size=(8, 2))
    params, lam, loo = task_maps.fit_ridge(x, y, (0.5,))
    self.assertEqual(lam, 0.5)
    xs = (x - x.mean(0)) / x.std(0)
    # The dual solution equals the primal ridge (intercept not penalized).
    coef = np.linalg.solve(xs.T @ xs + 0.5 * np.eye(5),
                           xs.T @ (y - y.mean(0)))
    np.testing.assert_allclose(task_maps.ridge_predict(params, x),
                               y.mean(0) + xs @ coef, rtol=1e-8, atol=1e-10)
    for t in range(8):
      keep = np.arange(8) != t
      # Refit by hand on the other tasks, with the full data's standardization
      # (which is what the closed form's hat matrix assumes).
      xk, yk = xs[keep], y[keep]
      xm, ym = xk.mean(0), yk.mean(0)
      coef = np.linalg.solve((xk - xm).T @ (xk - xm) + 0.5 * np.eye(5),
                             (xk - xm).T @ (yk - ym))
      pred = ym + (xs[t] - xm) @ coef
      np.testing.assert_allclose(loo[t], y[t] - pred, rtol=1e-8, atol=1e-10)

  def test_penalty_with_lowest_loo_error_wins(self):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10, 3))
    y = x @ rng.normal(size=(3, 2))  # Noise-free: the smallest penalty fits.
    _, lam, _ = task_maps.fit_ridge(x, y, (100.0, 1e-3, 10.0))
    self.assertEqual(lam, 1e-3)
    with self.assertRaisesRegex(ValueError, 'at least 3'):
      task_maps.fit_ridge(x[:2], y[:2], (1.0,))
    with self.assertRaisesRegex(ValueError, 'ridge_grid is empty'):
      task_maps.fit_ridge(x, y, ())

  def test_shrunk_covariance(self):
    r = np.random.default_rng(5).normal(size=(12, 3))
    c = np.cov(r.T)
    np.testing.assert_allclose(task_maps.shrunk_covariance(r, 0.25),
                               0.75 * c + 0.25 * np.diag(np.diag(c)))


class TaskMapTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.history, cls.sets = _world()
    cls.config = recommender.FennecConfig(
        space=space_lib.SpaceConfig(rank=2, max_steps=200, eval_every=50))
    cls.space = space_lib.fit(cls.history.scores, cls.history.mask,
                              cls.config.space)
    cls.rows = np.arange(cls.history.scores.shape[1])

  def test_registry_names_every_map(self):
    self.assertEqual(task_maps.TASK_MAPS, ('neighbors', 'ridge'))
    for name in task_maps.TASK_MAPS:
      self.assertEqual(task_maps.get_task_map(name).name, name)
    with self.assertRaisesRegex(
        ValueError, r"unknown task map 'knn'; valid: \('neighbors', 'ridge'\)"):
      task_maps.get_task_map('knn')

  def test_ridge_prior_regresses_mean_unit_direction(self):
    tmap = task_maps.RidgeMap.fit(self.space, self.history, self.rows,
                                  self.sets, self.config)
    new = [self.sets[0], self.sets[3][:2]]
    mean, shift = tmap.prior(new)
    self.assertIsNone(shift)
    directions = np.stack([
        (s / np.linalg.norm(s, axis=1, keepdims=True)).mean(0) for s in new])
    np.testing.assert_allclose(
        mean, task_maps.ridge_predict(tmap.params, directions), rtol=1e-12)
    self.assertEqual(tmap.input_dim, 5)
    # A one-vector entry is used as given.
    np.testing.assert_allclose(
        tmap.prior([self.sets[0][0]])[0],
        task_maps.ridge_predict(tmap.params, self.sets[0][:1]), rtol=1e-12)

  def test_maps_round_trip_through_arrays_and_json(self):
    new = [self.sets[1], self.sets[4][:3]]
    for name in task_maps.TASK_MAPS:
      with self.subTest(name):
        cls = task_maps.get_task_map(name)
        tmap = cls.fit(self.space, self.history, self.rows, self.sets,
                       self.config)
        meta = json.loads(json.dumps(tmap.meta()))
        back = cls.from_arrays(tmap.to_arrays(), meta)
        for a, b in zip(tmap.prior(new), back.prior(new)):
          if a is None:
            self.assertIsNone(b)
          else:
            self.assertEqual(a.shape[0], 2)
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(back.covariance, tmap.covariance)
        self.assertEqual(back.noise_var, tmap.noise_var)
        self.assertEqual(back.input_dim, 5)
        d = self.space.dim
        self.assertEqual(tmap.covariance.shape, (d, d))
        # A covariance of leave-one-out errors: symmetric, PSD, non-zero.
        np.testing.assert_allclose(tmap.covariance, tmap.covariance.T)
        self.assertGreater(np.linalg.eigvalsh(tmap.covariance).min(), -1e-9)
        self.assertGreater(np.trace(tmap.covariance), 0.0)

  def test_neighbors_shift_is_affinity_weighted_residuals(self):
    tmap = task_maps.NeighborsMap.fit(self.space, self.history, self.rows,
                                      self.sets, self.config)
    mean, shift = tmap.prior([self.sets[2]])
    a = np.asarray(neighbors.affinities(
        tmap.nmap, neighbors.unit_sets([self.sets[2]])))[0]
    st = tmap.state
    resid = np.zeros((self.history.scores.shape[0], len(self.rows)))
    resid[st['resid_rows'], st['resid_cols']] = st['resid_values']
    np.testing.assert_allclose(shift[0], resid @ a, rtol=1e-5, atol=1e-9)
    ref = (a @ st['scale']) * (a @ st['w_norm'])
    ref[-2] += a @ st['loc']
    np.testing.assert_allclose(mean[0], ref, rtol=1e-5, atol=1e-9)


class AlignTest(absltest.TestCase):

  def test_sets_from_mapping_and_array(self):
    ids = ('a', 'b', 'c')
    rows, sets = task_maps.align_sets({'c': np.ones((2, 3)), 'a': np.ones(3)},
                                      ids)
    np.testing.assert_array_equal(rows, [0, 2])
    self.assertEqual([s.shape for s in sets], [(3,), (2, 3)])
    rows, sets = task_maps.align_sets(np.ones((3, 4, 2)), ids)
    np.testing.assert_array_equal(rows, [0, 1, 2])
    with self.assertRaisesRegex(ValueError, r"not in the history: \['z'\]"):
      task_maps.align_sets({'z': np.ones(3)}, ids)
    with self.assertRaisesRegex(ValueError, 'different widths'):
      task_maps.align_sets({'a': np.ones(3), 'b': np.ones(4)}, ids)
    with self.assertRaisesRegex(ValueError, r'\[3, D\] or \[3, n, D\]'):
      task_maps.align_sets(np.ones((2, 3)), ids)

  def test_new_task_sets_and_model_embeddings(self):
    self.assertLen(task_maps.new_task_sets(np.ones((2, 5, 3))), 2)
    with self.assertRaisesRegex(ValueError, 'empty'):
      task_maps.new_task_sets([])
    with self.assertRaisesRegex(ValueError, r'task_embeddings\[0\]'):
      task_maps.new_task_sets([np.ones((2, 2, 2))])
    rows, emb = task_maps.align_embeddings({'m1': np.ones(2)}, ('m0', 'm1'),
                                           'model')
    np.testing.assert_array_equal(rows, [1])
    self.assertEqual(emb.shape, (1, 2))
    with self.assertRaisesRegex(ValueError, r'model_embeddings must be \[2'):
      task_maps.align_embeddings(np.ones((3, 2)), ('m0', 'm1'), 'model')


if __name__ == '__main__':
  absltest.main()
