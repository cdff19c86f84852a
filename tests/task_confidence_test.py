"""Task-map confidence: the calibration, the checks and the prior fallback.

References: NumPy distances and spreads from their definitions, and the
recommender's own prior-only ranking (what a task it cannot place must get).
"""

import os
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np

from fennec_jax import history as history_lib
from fennec_jax import neighbors
from fennec_jax import recommender
from fennec_jax import task_maps
from fennec_jax.benchmarks.offline import demo


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _world(seed=0, num_models=16, num_tasks=8, images=6, dim=6):
  """Rank-2 scores; each task's images scatter around a direction in the
  positive orthant, so the negative orthant is far from every task."""
  rng = np.random.default_rng(seed)
  u, v = rng.normal(size=(num_models, 2)), rng.normal(size=(num_tasks, 2))
  scores = 0.7 + 0.1 * u @ v.T + 0.01 * rng.normal(size=(num_models,
                                                         num_tasks))
  centers = np.abs(rng.normal(size=(num_tasks, dim))) + 0.5
  sets = [c + 0.3 * rng.normal(size=(images, dim)) for c in centers]
  return history_lib.History.from_matrix(scores), sets, centers, rng


def _median_pairwise(x):
  x = _unit(x)
  i, j = np.triu_indices(len(x), 1)
  return np.median(1 - (x @ x.T)[i, j])


class TaskConfidenceTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.history, cls.sets, cls.centers, rng = _world()
    cls.fennec = recommender.Fennec().fit(cls.history,
                                          task_embeddings=cls.sets)
    c = cls.centers
    cls.new = {
        'in': c[2] + 0.3 * rng.normal(size=(6, 6)),
        'far': -c[0] + 0.3 * rng.normal(size=(6, 6)),
        # One image of task 3, repeated: next to the history, all alike.
        'alike': cls.sets[3][:1] + 1e-4 * rng.normal(size=(6, 6)),
        'few': c[5] + 0.3 * rng.normal(size=(3, 6)),
    }

  def test_calibration_is_each_tasks_leave_one_out_distance_and_spread(self):
    nmap = self.fennec.task_map.nmap
    units = [_unit(s) for s in self.sets]
    for j, s in enumerate(units):
      others = np.concatenate([u for i, u in enumerate(units) if i != j])
      self.assertAlmostEqual(nmap.loo_distance[j],
                             np.median(1 - (s @ others.T).max(1)), places=5)
      self.assertAlmostEqual(nmap.spread[j], _median_pairwise(s), places=5)
    conf = self.fennec.confidence([self.new['in']])[0]
    pool = np.concatenate(units)
    self.assertAlmostEqual(
        conf.distance, np.median(1 - (_unit(self.new['in']) @ pool.T).max(1)),
        places=5)
    self.assertAlmostEqual(conf.threshold, max(nmap.loo_distance))
    self.assertAlmostEqual(conf.spread_threshold, min(nmap.spread))

  def test_tasks_it_cannot_place_get_the_prior_and_say_why(self):
    names = ['in', 'far', 'alike', 'few']
    sets = [self.new[n] for n in names]
    rec = self.fennec.recommend(task_embeddings=sets, top=4)
    placed = [c.in_distribution for c in rec.confidence]
    self.assertEqual(placed, [True, False, False, False])
    self.assertEqual(rec.confidence[0].reason, '')
    self.assertIn('farther from the history', rec.confidence[1].reason)
    self.assertGreater(rec.confidence[1].distance, rec.confidence[1].threshold)
    self.assertIn('nearly alike', rec.confidence[2].reason)
    self.assertLess(rec.confidence[2].distance, rec.confidence[2].threshold)
    self.assertIn('3 image(s), fewer than the 5', rec.confidence[3].reason)
    self.assertEqual([c.n_images for c in rec.confidence], [6, 6, 6, 3])
    by_map = self.fennec.recommend(task_embeddings=sets, top=4,
                                   fallback=False)
    prior = self.fennec.recommend(observed=[{}] * 4, top=4)
    np.testing.assert_array_equal(rec.all_predicted[0],
                                  by_map.all_predicted[0])
    self.assertEqual(rec.model_ids[0], by_map.model_ids[0])
    for b in (1, 2, 3):
      np.testing.assert_array_equal(rec.all_predicted[b],
                                    prior.all_predicted[b])
      np.testing.assert_array_equal(rec.all_std[b], prior.all_std[b])
      self.assertEqual(rec.model_ids[b], prior.model_ids[b])
      # The map's own answer differs: the fallback changed something.
      self.assertFalse(np.allclose(by_map.all_predicted[b],
                                   prior.all_predicted[b]))

  def test_recommend_searches_the_pool_once(self):
    # The prior's search also gives the confidence's distances.
    sets = [self.new['in'], self.new['far']]
    with mock.patch.object(neighbors, 'search',
                           wraps=neighbors.search) as search:
      rec = self.fennec.recommend(task_embeddings=sets, top=2)
    self.assertEqual(search.call_count, 1)
    fresh = neighbors.set_distances(self.fennec.task_map.nmap,
                                    neighbors.unit_sets(sets))
    np.testing.assert_array_equal([c.distance for c in rec.confidence],
                                  fresh)

  def test_wrong_width_is_a_clear_error(self):
    with self.assertRaisesRegex(ValueError, 'width 4; this Fennec was fit '
                                'on width 6'):
      self.fennec.recommend(task_embeddings=[np.ones((6, 4))])
    with self.assertRaisesRegex(ValueError, 'width 4; the map was fit on '
                                'width 6'):
      self.fennec.confidence([np.ones((6, 4))])

  def test_fallback_keeps_the_observed_scores(self):
    obs = {self.fennec.model_ids[0]: 0.9, self.fennec.model_ids[3]: 0.5}
    rec = self.fennec.recommend(task_embeddings=[self.new['far']],
                                observed=[obs], top=3)
    ref = self.fennec.recommend(observed=[obs], top=3)
    self.assertFalse(rec.confidence[0].in_distribution)
    np.testing.assert_array_equal(rec.all_predicted, ref.all_predicted)

  def test_saved_map_keeps_its_check_and_an_old_one_says_unchecked(self):
    path = os.path.join(self.enterContext(tempfile.TemporaryDirectory()),
                        'ckpt')
    self.fennec.save(path)
    loaded = recommender.Fennec.load(path)
    sets = [self.new['in'], self.new['far']]
    self.assertEqual(loaded.confidence(sets), self.fennec.confidence(sets))
    old = self.fennec.task_map.nmap._replace(loo_distance=None, spread=None)
    tmap = self.fennec.task_map
    unchecked = task_maps.NeighborsMap(old, tmap.state, tmap.covariance,
                                       tmap.noise_var, tmap.num_models)
    conf = unchecked.confidence(sets)
    self.assertEqual([c.in_distribution for c in conf], [True, True])
    self.assertIn('without its calibration', conf[1].reason)
    self.assertTrue(np.isnan(conf[1].distance))
    # Too few images are still caught.
    self.assertFalse(unchecked.confidence([self.new['few']])[0]
                     .in_distribution)

  def test_one_vector_per_task_is_not_checked(self):
    vectors = np.stack([s.mean(0) for s in self.sets])
    fennec = recommender.Fennec().fit(self.history, task_embeddings=vectors)
    conf = fennec.confidence(-self.centers[:1])[0]
    self.assertTrue(conf.in_distribution)
    self.assertEqual(conf.min_images, 1)
    self.assertIn('one embedding per task', conf.reason)

  def test_ridge_map_checks_the_count_only(self):
    config = recommender.FennecConfig(task_map='ridge')
    fennec = recommender.Fennec(config).fit(self.history,
                                            task_embeddings=self.sets)
    conf = fennec.confidence([self.new['far'], self.new['few']])
    self.assertTrue(conf[0].in_distribution)
    self.assertIn("'ridge' map keeps no historical images", conf[0].reason)
    self.assertFalse(conf[1].in_distribution)


class DemoOutputTest(absltest.TestCase):

  def test_demo_says_when_it_fell_back(self):
    far = task_maps.TaskConfidence(False, 'its images are farther', 100, 5,
                                   0.05, 0.03)
    result = demo.DemoResult('t', [('m', 0.5, 0.1, 0.4)], 0.1, 1.0,
                             {'fennec': 0.5, 'logme': 0.4},
                             [('m', 1.0, 0.4)], far)
    lines = demo.format_demo(result).splitlines()
    self.assertStartsWith(lines[2], 'WARNING: its images do not place it')
    self.assertIn('its images are farther', lines[2])
    placed = demo.format_demo(result._replace(
        confidence=far._replace(in_distribution=True, reason='')))
    self.assertNotIn('WARNING', placed)


if __name__ == '__main__':
  absltest.main()
