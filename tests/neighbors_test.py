"""Tests of the neighbour task map against brute-force NumPy references."""

import os
import tempfile
from unittest import mock

from absl.testing import absltest
import chex
import jax
import numpy as np
from scipy import stats

from fennec_jax import history as history_lib
from fennec_jax import neighbors
from fennec_jax import recommender
from fennec_jax import space


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_votes(query, pool_sets, k, exclude=None):
  """Vote fractions of `query` rows for the tasks owning their k nearest."""
  pool = np.concatenate([_unit(s) for s in pool_sets])
  owner = np.concatenate([np.full(len(s), j) for j, s in enumerate(pool_sets)])
  sims = _unit(query) @ pool.T
  if exclude is not None:
    sims[:, owner == exclude] = -np.inf
  votes = np.zeros(len(pool_sets))
  for row in sims:
    for i in np.argsort(-row, kind='stable')[:k]:
      votes[owner[i]] += 1
  return votes / votes.sum()


def _numpy_affinity(votes, smoothing, exclude=None):
  allowed = np.ones(len(votes))
  if exclude is not None:
    allowed[exclude] = 0
  a = (votes + smoothing) * allowed
  return a / a.sum()


def _world(seed=0, families=4, per_family=4, num_models=24, images=12,
           dim=16):
  """Task families: images cluster by family, models rank by family."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(families, dim))
  family_skill = rng.normal(size=(families, num_models))
  scores, sets = [], []
  for f in range(families):
    for _ in range(per_family):
      scores.append(0.6 + 0.1 * family_skill[f]
                    + 0.02 * rng.normal(size=num_models))
      sets.append(centers[f] + 0.5 * rng.normal(size=(images, dim)))
  return np.stack(scores, 1), sets


class NeighborMapTest(absltest.TestCase):

  def test_votes_and_loo_choice_match_numpy(self):
    rng = np.random.default_rng(1)
    sets = [rng.normal(size=(int(rng.integers(3, 9)), 5)) + 0.3 * j
            for j in range(6)]
    columns = rng.normal(size=(10, 6))
    mask = rng.random((10, 6)) > 0.2
    grid = ((1, 0.0), (2, 0.05), (4, 0.3))
    nmap, loo = neighbors.fit(neighbors.unit_sets(sets), columns, mask, grid)
    errors = {}
    for k, s in grid:
      ref = np.stack([_numpy_affinity(_numpy_votes(sets[j], sets, k, j), s, j)
                      for j in range(6)])
      pred = columns @ ref.T
      errors[(k, s)] = (((pred - columns) ** 2)[mask].mean(), ref)
    best = min(errors, key=lambda g: errors[g][0])
    self.assertEqual((nmap.k, nmap.smoothing), best)
    self.assertAlmostEqual(nmap.loo_error, errors[best][0], places=5)
    np.testing.assert_allclose(loo, errors[best][1], atol=1e-6)
    self.assertTrue(np.all(np.diag(loo) == 0))
    # New tasks (batched, sets of different sizes): no exclusion.
    new = [rng.normal(size=(4, 5)), rng.normal(size=(7, 5)) + 0.9]
    got = np.asarray(neighbors.affinities(nmap, neighbors.unit_sets(new)))
    for b, q in enumerate(new):
      ref = _numpy_affinity(_numpy_votes(q, sets, nmap.k), nmap.smoothing)
      np.testing.assert_allclose(got[b], ref, atol=1e-6)

  def test_padded_sizes_waste_little_and_fit_the_chunks(self):
    sizes = [neighbors._bucket(n) for n in range(1, 300_000, 97)]
    for n, b in zip(range(1, 300_000, 97), sizes):
      self.assertGreaterEqual(b, n)
      self.assertLess(b - n, max(8, n / 8), n)
    self.assertEqual(sizes, sorted(sizes))  # Monotone: few distinct shapes.
    self.assertEqual(neighbors._bucket(2400), neighbors._bucket(2500))
    for q in (1, 100, 255, 256, 257, 300, 1000, 5000):
      b = neighbors._query_bucket(q)
      self.assertGreaterEqual(b, q)
      if b > neighbors._CHUNK:
        self.assertEqual(b % neighbors._CHUNK, 0, q)

  def test_folds_and_batches_reuse_one_compilation(self):
    # Leave-one-task-out folds have pools (and query batches) of different
    # sizes; padded to their bucket, all folds' searches share one trace,
    # and new-task batches of 1-3 sets another (exclude=False). The votes
    # still match the brute-force reference. (k is static: one k here.)
    rng = np.random.default_rng(4)
    sets = [rng.normal(size=(n, 5)) + 0.3 * j
            for j, n in enumerate((5, 6, 7, 8, 8, 6, 7, 5))]
    columns = rng.normal(size=(10, 8))
    mask = np.ones((10, 8), bool)
    grid = ((2, 0.0), (2, 0.05), (2, 0.3))
    owners = jax.jit(chex.assert_max_traces(
        neighbors._search.__wrapped__, n=2),
                     static_argnames=('k', 'exclude'))
    self.addCleanup(chex.clear_trace_counter)
    with mock.patch.object(neighbors, '_search', owners):
      for held_out in range(8):
        keep = [j for j in range(8) if j != held_out]
        fold = [sets[j] for j in keep]
        nmap, _ = neighbors.fit(neighbors.unit_sets(fold), columns[:, keep],
                                mask[:, keep], grid)
        for num_new in (1, 2, 3):
          new = [sets[held_out][b:b + 2 - b % 2] for b in range(num_new)]
          got = np.asarray(neighbors.votes(nmap, neighbors.unit_sets(new)))
          for b, q in enumerate(new):
            np.testing.assert_allclose(
                got[b], _numpy_votes(q, fold, nmap.k), atol=1e-6)

  def test_bad_inputs_are_clear_errors(self):
    good = [np.ones((2, 3)), np.eye(3)[:2], np.eye(3)[1:]]
    with self.assertRaisesRegex(ValueError, 'at least 3'):
      neighbors.fit(neighbors.unit_sets(good[:2]), np.zeros((4, 2)),
                    np.ones((4, 2), bool))
    with self.assertRaisesRegex(ValueError, 'k >= 1'):
      neighbors.fit(neighbors.unit_sets(good), np.zeros((4, 3)),
                    np.ones((4, 3), bool), grid=((0, 0.1),))
    with self.assertRaisesRegex(ValueError, r"task 'b'.*row 1 is all zeros"):
      neighbors.unit_sets([np.ones((2, 3)), np.array([[1., 0, 0], [0, 0, 0]])],
                          names=["task 'a'", "task 'b'"])
    with self.assertRaisesRegex(ValueError, 'different widths'):
      neighbors.unit_sets([np.ones((2, 3)), np.ones((2, 4))])
    nmap, _ = neighbors.fit(neighbors.unit_sets(good), np.zeros((4, 3)),
                            np.ones((4, 3), bool))
    with self.assertRaisesRegex(ValueError, 'width 4.*width 3'):
      neighbors.affinities(nmap, [np.ones((2, 4), np.float32)])


class FennecNeighborsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.scores, cls.sets = _world()
    cls.config = recommender.FennecConfig(
        space=space.SpaceConfig(rank=2, max_steps=300, eval_every=50,
                                normalization='zscore'))
    cls.train = history_lib.History.from_matrix(cls.scores[:, 1:])
    cls.fennec = recommender.Fennec(cls.config).fit(
        cls.train, task_embeddings=cls.sets[1:])

  def test_zero_shot_prediction_is_affinity_weighted_mean_of_tasks(self):
    # With every score observed, the prediction is loc* + scale* * sum_j
    # a_j z_j (z: the z-scored columns), whatever the space's rank.
    f = self.fennec
    new = [self.sets[0], self.sets[5][:3]]
    pred, std, _ = f.predict(task_embeddings=new)
    raw = self.scores[:, 1:]
    loc, scale = raw.mean(0), raw.std(0)
    z = (raw - loc) / scale
    for b, q in enumerate(new):
      a = _numpy_affinity(
          _numpy_votes(q, self.sets[1:], f.task_map.nmap.k),
          f.task_map.nmap.smoothing)
      ref = a @ loc + (a @ scale) * (z @ a)
      np.testing.assert_allclose(pred[b], ref, rtol=1e-4, atol=1e-5)
    self.assertTrue(np.all(std > 0))
    # The default config is this map, and a list of sets equals the
    # [B, n, D] array form.
    self.assertEqual(recommender.FennecConfig().task_map, 'neighbors')
    same = f.predict(task_embeddings=np.stack([self.sets[0], self.sets[2]]))
    ref = f.predict(task_embeddings=[self.sets[0], self.sets[2]])
    np.testing.assert_allclose(same[0], ref[0], atol=1e-6)

  def test_new_task_gets_its_family_ranking(self):
    # Task 0 belongs to family 0 (tasks 1-3 of the history are its
    # siblings): its ranking must beat popularity's, which ignores images.
    pred = self.fennec.predict(task_embeddings=[self.sets[0]])[0][0]
    true = self.scores[:, 0]
    pop = stats.zscore(self.scores[:, 1:], axis=0).mean(1)
    tau = stats.weightedtau(pred, true)[0]
    self.assertGreater(tau, 0.8)
    self.assertGreater(tau, stats.weightedtau(pop, true)[0] + 0.3)

  def test_scores_fold_in_with_shifted_bias_matches_numpy(self):
    f = self.fennec
    obs = {'m2': 0.62, 'm5': 0.55, 'm11': 0.7}
    w, cov = map(np.asarray, f.posterior(task_embeddings=[self.sets[0]],
                                         observed=[obs]))
    pred, std, _ = f.predict(task_embeddings=[self.sets[0]], observed=[obs])
    # Independent Bayesian linear regression: prior N(mu, S) from the map,
    # features phi with the bias column shifted by the weighted residuals.
    a = np.asarray(neighbors.affinities(
        f.task_map.nmap, neighbors.unit_sets([self.sets[0]])))[0]
    st = f.task_map.state
    mu = (a @ st['scale']) * (a @ st['w_norm'])
    mu[-2] += a @ st['loc']
    shift = np.zeros(24)
    np.add.at(shift, st['resid_rows'], a[st['resid_cols']]
              * st['resid_values'])
    phi = np.asarray(f.space.model_features(), np.float64).copy()
    phi[:, -1] += shift
    cov = f.task_map.covariance
    s = cov + 1e-6 * np.trace(cov) / 4 * np.eye(4)
    noise = f.task_map.noise_var
    idx = [2, 5, 11]
    x, y = phi[idx], np.array(list(obs.values()))
    prec = np.linalg.inv(s) + x.T @ x / noise
    cov_ref = np.linalg.inv(prec)
    w_ref = cov_ref @ (np.linalg.solve(s, mu) + x.T @ y / noise)
    np.testing.assert_allclose(w[0], w_ref, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(pred[0], phi @ w_ref, rtol=1e-3, atol=1e-3)
    var = np.einsum('md,de,me->m', phi, cov_ref, phi) + noise
    np.testing.assert_allclose(std[0], np.sqrt(var), rtol=2e-3)
    # The top-k path gives the full path's values.
    rec = f.recommend(task_embeddings=[self.sets[0]], observed=[obs], top=4)
    np.testing.assert_allclose(rec.predicted[0], pred[0][rec.indices[0]],
                               atol=1e-5)
    np.testing.assert_allclose(rec.std[0], std[0][rec.indices[0]], atol=1e-5)

  def test_save_load_round_trip(self):
    d = self.enterContext(tempfile.TemporaryDirectory())
    path = os.path.join(d, 'ckpt')
    self.fennec.save(path)
    loaded = recommender.Fennec.load(path, self.config)
    for obs in ({}, {'m0': 0.7}):
      a = self.fennec.predict(task_embeddings=[self.sets[0]], observed=[obs])
      b = loaded.predict(task_embeddings=[self.sets[0]], observed=[obs])
      np.testing.assert_allclose(a[0], b[0], atol=1e-6)
      np.testing.assert_allclose(a[1], b[1], atol=1e-6)
    with self.assertRaisesRegex(ValueError, 'task_map.*ridge.*neighbors'):
      recommender.Fennec.load(path, recommender.FennecConfig(
          space=self.config.space, task_map='ridge'))

  def test_cold_models_get_no_bias_shift(self):
    # Models added after the fit have no residuals: the map's shift covers
    # the fitted models only, and the added ones are predicted as phi w.
    rng = np.random.default_rng(6)
    emb = rng.normal(size=(24, 3))
    base = recommender.Fennec(self.config).fit(
        history_lib.History.from_matrix(self.scores[:, 1:]),
        task_embeddings=self.sets[1:], model_embeddings=emb)
    grown = base.add_models(['new0', 'new1'], emb[:2] + 0.1)
    new = [self.sets[0], self.sets[6][:4]]
    pred, std, w = grown.predict(task_embeddings=new)
    ref = base.predict(task_embeddings=new)
    np.testing.assert_allclose(pred[:, :24], ref[0], atol=1e-6)
    np.testing.assert_allclose(std[:, :24], ref[1], atol=1e-6)
    phi = np.asarray(grown.space.model_features())[24:]
    np.testing.assert_allclose(pred[:, 24:], w @ phi.T, rtol=1e-5, atol=1e-6)
    rec = grown.recommend(task_embeddings=new, observed=[{'new0': 0.6}, {}],
                          top=26)
    self.assertTrue(np.isfinite(rec.all_predicted).all())
    np.testing.assert_allclose(rec.predicted[0],
                               rec.all_predicted[0][rec.indices[0]], atol=1e-5)

  def test_history_task_with_one_observed_model_gives_finite_rankings(self):
    scores = self.scores[:, 1:].copy()
    scores[1:, 4] = np.nan  # Task 4 keeps one model's score.
    sparse = history_lib.History.from_matrix(scores)
    f = recommender.Fennec(self.config).fit(sparse,
                                            task_embeddings=self.sets[1:])
    for obs in ({}, {'m3': 0.6}):
      pred, std, _ = f.predict(task_embeddings=[self.sets[0]], observed=[obs])
      self.assertTrue(np.all(np.isfinite(pred)) and np.all(std > 0))
    # The family's ranking survives (a NaN or a broken column would not).
    self.assertGreater(stats.weightedtau(pred[0], self.scores[:, 0])[0], 0.7)

  def test_bad_task_map_and_embeddings_are_clear_errors(self):
    with self.assertRaisesRegex(ValueError, "task_map='knn'.*neighbors"):
      recommender.FennecConfig(task_map='knn')
    with self.assertRaisesRegex(ValueError, 'width 3.*width 16'):
      self.fennec.predict(task_embeddings=[np.ones((2, 3))])
    with self.assertRaisesRegex(ValueError, 'new task 0.*all zeros'):
      self.fennec.predict(task_embeddings=[np.zeros((2, 16))])
    with self.assertRaisesRegex(ValueError, r"task_embeddings\['t1'\]"):
      recommender.Fennec(self.config).fit(
          self.train, task_embeddings={'t1': np.ones((2, 2, 2))})


if __name__ == '__main__':
  absltest.main()
