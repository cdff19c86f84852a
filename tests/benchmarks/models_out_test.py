"""Tests of leave one model out (cold-start models from metadata)."""

from absl.testing import absltest
import networkx as nx
import numpy as np
from scipy import stats

from fennec_jax import history as history_lib
from fennec_jax.benchmarks import models_out


class ModelsOutTest(absltest.TestCase):

  def test_percentile_matches_scipy(self):
    others = np.array([0.1, 0.5, 0.5, 0.9, 0.3])
    for v in (0.0, 0.5, 0.3, 1.0, 0.7):
      self.assertAlmostEqual(
          models_out.percentile_rank(v, others),
          stats.percentileofscore(others, v, kind='mean') / 100)

  def test_cold_model_placed_better_than_the_mean_model(self):
    rng = np.random.default_rng(11)
    m, t = 24, 8
    u, v = rng.normal(size=(m, 2)), rng.normal(size=(t, 2))
    h = history_lib.History.from_matrix(
        0.7 + 0.1 * u @ v.T + 0.003 * rng.normal(size=(m, t)))
    emb = u @ rng.normal(size=(2, 4))
    rows = models_out.evaluate_models_out(h, emb, models=['m0', 'm5', 'm9'],
                                          space_config={'rank': 2,
                                                        'max_steps': 300})
    mean = {r['method']: r for r in rows if r['model'] == 'MEAN'}
    self.assertLen(rows, 3 * 3 + 3)
    self.assertLess(mean['fennec_cold']['rank_error'],
                    mean['mean_model']['rank_error'] - 0.1)
    with self.assertRaisesRegex(ValueError, 'model_embeddings must be'):
      models_out.evaluate_models_out(h, emb[:3])

  def test_arch_placement(self):
    chain = nx.DiGraph([(0, 1), (1, 2)])
    nx.set_node_attributes(chain, {0: 'in', 1: 'conv', 2: 'out'}, 'op')
    fork = nx.DiGraph([(0, 1), (0, 2), (1, 3), (2, 3)])
    nx.set_node_attributes(fork, {0: 'in', 1: 'conv', 2: 'relu', 3: 'out'},
                           'op')
    # Two distinct documents span one component; equal graphs, equal rows.
    x = models_out.wl_graph_features([chain, fork, chain, fork], 8)
    self.assertEqual(x.shape, (4, 1))
    np.testing.assert_allclose(x[0], x[2])
    self.assertGreater(abs(x[0, 0] - x[1, 0]), 1.0)
    rng = np.random.default_rng(3)
    h = history_lib.History.from_matrix(
        0.6 + 0.1 * rng.normal(size=(8, 4)), model_metadata={
            'num_params': 10.0 ** rng.uniform(4, 7, 8),
            'family': np.array(list('aabbabab'), object)})
    # Equal architectures (constant features) add nothing: the arch
    # placement is the metadata placement, row for row.
    self.assertEqual(models_out.wl_graph_features([fork] * 8).shape, (8, 0))
    rows = models_out.evaluate_models_out_arch(
        h, np.full((8, 3), 2.5), models=['m1', 'm6'],
        space_config={'max_steps': 50})
    by = {(r['method'], r['model']): r for r in rows}
    self.assertLen(rows, 5 * 3)
    for plain, arch in (('fennec_cold', 'fennec_cold_arch'),
                        ('nearest_model', 'nearest_model_arch')):
      for m in ('m1', 'm6', 'MEAN'):
        for k in ('pearson', 'weighted_tau', 'rank_error'):
          np.testing.assert_equal(by[plain, m][k], by[arch, m][k])
    with self.assertRaisesRegex(ValueError, 'arch_features must be'):
      models_out.evaluate_models_out_arch(h, np.ones((7, 2)))

  def test_groups_hide_the_held_out_models_twin(self):
    rng = np.random.default_rng(5)
    base = 0.6 + 0.1 * rng.normal(size=(4, 5))
    h = history_lib.History.from_matrix(np.repeat(base, 2, 0))
    emb = np.repeat(rng.normal(size=(4, 2)), 2, 0)
    kw = dict(models=['m0', 'm5'], space_config={'max_steps': 20})
    def nearest(rows):
      return [r['rank_error'] for r in rows
              if r['method'] == 'nearest_model' and r['model'] != 'MEAN']
    # Its twin (same scores and embedding) is the nearest model: no error,
    # unless the twin is hidden with it.
    self.assertEqual(nearest(models_out.evaluate_models_out(h, emb, **kw)),
                     [0.0, 0.0])
    twins = [str(i // 2) for i in range(8)]
    self.assertTrue(all(e > 0 for e in nearest(
        models_out.evaluate_models_out(h, emb, groups=twins, **kw))))
    with self.assertRaisesRegex(ValueError, 'groups must hold'):
      models_out.evaluate_models_out(h, emb, groups=twins[:3])


if __name__ == '__main__':
  absltest.main()
