"""Tests of NAS-Bench-201 cells, the experiment and `fennec nas-bench`."""

import csv
import os
import tempfile

from absl import flags
from absl.testing import absltest
import networkx as nx
import numpy as np

from fennec_jax.archi2vec import graphs as graphs_lib
from fennec_jax.archi2vec import nas_bench

_CELL = ('|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+'
         '|skip_connect~0|nor_conv_3x3~1|skip_connect~2|')


def _ops(g):
  return {n: a['op'] for n, a in g.nodes(data=True)}


class NasBenchTest(absltest.TestCase):

  def test_parse_and_dag_by_hand(self):
    self.assertEqual(nas_bench.parse_cell(_CELL), [
        [('nor_conv_3x3', 0)],
        [('nor_conv_3x3', 0), ('avg_pool_3x3', 1)],
        [('skip_connect', 0), ('nor_conv_3x3', 1), ('skip_connect', 2)]])
    g = nas_bench.cell_to_dag(_CELL)
    want = nx.DiGraph([
        ('in', 'e01'), ('in', 'e02'), ('in', 'e03'),
        ('e01', 'e12'), ('e01', 'e13'),
        ('e02', 'e23'), ('e12', 'e23'),
        ('e03', 'out'), ('e13', 'out'), ('e23', 'out')])
    self.assertEqual(set(g.edges), set(want.edges))
    self.assertEqual(_ops(g), {
        'in': 'input', 'out': 'output', 'e01': 'nor_conv_3x3',
        'e02': 'nor_conv_3x3', 'e12': 'avg_pool_3x3', 'e03': 'skip_connect',
        'e13': 'nor_conv_3x3', 'e23': 'skip_connect'})

  def test_none_edges_and_dead_ops_are_pruned(self):
    # Node 1 feeds nothing (its out-edges are none), so its op is dead and
    # the cell computes the same as one with a different op there.
    a = nas_bench.cell_to_dag('|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+'
                              '|skip_connect~0|none~1|nor_conv_3x3~2|')
    b = nas_bench.cell_to_dag('|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+'
                              '|skip_connect~0|none~1|nor_conv_3x3~2|')
    match = lambda x, y: x['op'] == y['op']
    self.assertTrue(nx.is_isomorphic(a, b, node_match=match))
    self.assertNotIn('e01', a)
    unpruned = nas_bench.cell_to_dag('|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|'
                                     '+|skip_connect~0|none~1|nor_conv_3x3~2|',
                                     prune=False)
    self.assertIn('e01', unpruned)
    empty = nas_bench.cell_to_dag('|none~0|+|none~0|none~1|+'
                                  '|none~0|none~1|none~2|')
    self.assertEqual(_ops(empty), {'in': 'input', 'out': 'output'})
    self.assertEqual(empty.number_of_edges(), 0)

  def test_bad_cells(self):
    for cell, msg in [('|a~0|+|b~0|c~1|', '3 "\\+"-separated'),
                      ('|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|',
                       "bad edge 'conv~0'"),
                      ('|none~0|+|none~0|none~0|+|none~0|none~1|none~2|',
                       'node 2 must have one edge')]:
      with self.subTest(cell):
        with self.assertRaisesRegex(ValueError, msg):
          nas_bench.parse_cell(cell)

  def test_full_table_parses(self):
    cells, acc = nas_bench.load_table()
    self.assertLen(cells, 15625)
    self.assertLen(set(cells), 15625)
    self.assertAlmostEqual(acc['cifar10'].max(), 94.37, places=2)
    # Every cell's DAG encodes with the fixed vocabulary (no unknown ops).
    for c in cells[:500]:
      a = graphs_lib.graph_to_arrays(nas_bench.cell_to_dag(c),
                                     nas_bench.VOCAB, strict=True)
      self.assertLessEqual(len(a['op']), 8)

  def test_bad_table_names_row(self):
    d = self.enterContext(tempfile.TemporaryDirectory())
    path = os.path.join(d, 't.csv')
    with open(path, 'w', newline='') as f:
      w = csv.writer(f)
      w.writerow(list(nas_bench.DATASETS.values()) + ['ArchitectureString'])
      w.writerow([90, 70, 40, _CELL])
      w.writerow([190, 70, 40, _CELL])
    with self.assertRaisesRegex(ValueError, r't.csv, row 3: .*190'):
      nas_bench.load_table(path)

  def test_pairwise_rank_loss_matches_numpy(self):
    rng = np.random.default_rng(0)
    pred = rng.normal(size=6).astype(np.float32)
    y = np.array([0.3, 0.3, -1.0, 2.0, 0.5, 9.0], np.float32)  # One tie.
    mask = np.array([1, 1, 1, 1, 1, 0], np.float32)  # The last is padding.
    total, pairs = 0.0, 0
    for i in range(5):
      for j in range(5):
        if y[i] != y[j]:
          s = np.sign(y[i] - y[j])
          total += np.log1p(np.exp(-s * (pred[i] - pred[j])))
          pairs += 1
    self.assertEqual(pairs, 18)  # 5 * 4 ordered pairs less the tied two.
    got = float(nas_bench._pairwise_rank_loss(pred, y, mask))
    self.assertAlmostEqual(got, total / pairs, places=5)

  def test_inner_validation_sees_only_training_cells(self):
    cells, acc = nas_bench.load_table()
    arrays = [graphs_lib.graph_to_arrays(nas_bench.cell_to_dag(c),
                                         nas_bench.VOCAB) for c in cells[:40]]
    config = nas_bench.GNNConfig(hidden=8, embed_dim=8, num_layers=2,
                                 steps=20, ensemble=1, eval_batch=16)
    y = acc['cifar10'][:40]
    tau = nas_bench.inner_validation(arrays, y, config, seed=0, folds=2)
    self.assertGreater(tau, 0.2)  # Far above chance even this small.
    # Shuffled targets carry no signal the folds could share.
    noise = nas_bench.inner_validation(
        arrays, np.random.default_rng(0).permutation(y), config, seed=0,
        folds=2)
    self.assertLess(noise, tau)
    with self.assertRaisesRegex(ValueError, '3 cells in 2 folds'):
      nas_bench.inner_validation(arrays[:3], y[:3], config, seed=0, folds=2)

  def test_flan_split_fixed_half(self):
    n = 15625
    pools, tests = [], []
    for size, seed in [(78, 0), (128, 0), (256, 0), (78, 1), (256, 4)]:
      tr, te = nas_bench.flan_split(n, size, seed)
      self.assertLen(tr, size)
      self.assertLen(np.unique(tr), size)
      self.assertLen(te, 7812)
      self.assertEmpty(np.intersect1d(tr, te))
      tests.append(te)
      pools.append(np.setdiff1d(np.arange(n), te))
    # One fixed 7,813-cell training half for every size and seed; the seed
    # changes which cells are drawn from it.
    for te, pool in zip(tests, pools):
      np.testing.assert_array_equal(te, tests[0])
      self.assertLen(pool, 7813)
    self.assertFalse(np.array_equal(nas_bench.flan_split(n, 78, 0)[0],
                                    nas_bench.flan_split(n, 78, 1)[0]))
    with self.assertRaisesRegex(ValueError, r'7814 training cells; valid: '
                                r'2..7813'):
      nas_bench.flan_split(n, 7814, 0)

  def test_command_tiny_run(self):
    from fennec_jax.commands import nas_bench as cmd  # pylint: disable=g-import-not-at-top
    out = self.enterContext(tempfile.TemporaryDirectory())
    # FLAN size 30 = the fraction protocol's 30 training cells: one compile
    # of the GNN's training for both.
    flags.FLAGS(['fennec nas-bench', f'--out={out}', '--limit=300',
                 '--seeds=1', '--train_fraction=0.1', '--steps=40',
                 '--hidden=16', '--layers=2', '--ensemble=1', '--wl_epochs=2',
                 '--datasets=cifar10,cifar100', '--flan_sizes=30,40'])
    try:
      cmd.main(['fennec nas-bench'])
    finally:
      flags.FLAGS.unparse_flags()
    with open(os.path.join(out, 'results.csv')) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual(
        [(r['protocol'], r['method'], r['dataset']) for r in rows],
        [('fraction0.1', 'gnn', 'cifar10'), ('fraction0.1', 'wl', 'cifar10'),
         ('fraction0.1', 'gnn', 'cifar100'), ('fraction0.1', 'wl', 'cifar100'),
         ('flan30', 'gnn', 'cifar10'), ('flan30', 'wl', 'cifar10'),
         ('flan40', 'gnn', 'cifar10'), ('flan40', 'wl', 'cifar10')])
    # 40 steps on 30 cells already rank CIFAR-10 far better than chance.
    self.assertGreater(float(rows[0]['kendall_tau']), 0.3, rows[0])
    with open(os.path.join(out, 'per_seed.csv')) as f:
      per_seed = list(csv.DictReader(f))
    # 10% of 300 cells train, 270 test; FLAN's protocol tests the 150
    # cells outside its training half.
    self.assertEqual({(r['protocol'], int(r['n_train']), int(r['n_test']))
                      for r in per_seed},
                     {('fraction0.1', 30, 270), ('flan30', 30, 150),
                      ('flan40', 40, 150)})
    # results.csv summarizes per_seed.csv: the mean tau of each method and
    # data set (one seed here), written with 6 decimals.
    for r in rows:
      key = lambda x: (x['protocol'], x['method'], x['dataset'])
      taus = [float(p['kendall_tau']) for p in per_seed if key(p) == key(r)]
      self.assertLen(taus, 1)
      self.assertAlmostEqual(float(r['kendall_tau']), np.mean(taus),
                             delta=5e-7)


if __name__ == '__main__':
  absltest.main()
