"""The compressed (colour-class, gather-only) path equals the reference.

Properties a wrong compression breaks: embeddings equal to the per-edge
jraph encoder's on random DAGs with repeated structure, hubs above the
table width, one-node graphs and unknown ops; classes never merge nodes
whose layer inputs differ; budgets that are too small fail naming the
budget.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from fennec_jax.archi2vec import compress
from fennec_jax.archi2vec import gnn
from fennec_jax.archi2vec import graphs as graphs_lib
from fennec_jax.archi2vec import reference
from fennec_jax.archi2vec import trace as trace_lib

_VOCAB = 6
_CONFIG = dict(hidden=16, num_layers=3, embed_dim=8)


def _dag(rs, n, ops=3, discrete=True):
  """A chain plus skips; few ops and discrete features repeat structure."""
  chain = np.arange(1, n)
  skip_to = np.nonzero(rs.random(n - 1) < 0.3)[0] + 1
  skip_from = (rs.random(len(skip_to)) * skip_to).astype(np.int32)
  senders = np.concatenate([chain - 1, skip_from]).astype(np.int32)
  receivers = np.concatenate([chain, skip_to]).astype(np.int32)
  feat = rs.random((n, graphs_lib.NUM_NODE_FEATURES)).astype(np.float32)
  if discrete:
    feat = np.round(feat * 2).astype(np.float32)
  return dict(op=rs.integers(0, ops, n).astype(np.int32), feat=feat,
              senders=senders, receivers=receivers)


def _hub(n):
  """Node 0 feeds n identical nodes that all feed node n + 1 (degree n)."""
  mid = np.arange(1, n + 1)
  return dict(op=np.array([1] + [2] * n + [3], np.int32),
              feat=np.zeros((n + 2, graphs_lib.NUM_NODE_FEATURES), np.float32),
              senders=np.concatenate([np.zeros(n), mid]).astype(np.int32),
              receivers=np.concatenate([mid, np.full(n, n + 1)]).astype(
                  np.int32))


def _grown(rs, a, extra):
  """`a` with `extra` nodes appended after its last (shares a prefix)."""
  b = _dag(rs, extra)
  n = len(a['op'])
  return dict(op=np.concatenate([a['op'], b['op']]),
              feat=np.concatenate([a['feat'], b['feat']]),
              senders=np.concatenate([a['senders'], [n - 1],
                                      b['senders'] + n]).astype(np.int32),
              receivers=np.concatenate([a['receivers'], [n],
                                        b['receivers'] + n]).astype(np.int32))


def _union(arrays):
  """The disjoint union of graphs, as one graph."""
  offsets = np.cumsum([0] + [len(a['op']) for a in arrays])
  return dict(
      op=np.concatenate([a['op'] for a in arrays]),
      feat=np.concatenate([a['feat'] for a in arrays]),
      senders=np.concatenate([a['senders'] + o for a, o in
                              zip(arrays, offsets)]).astype(np.int32),
      receivers=np.concatenate([a['receivers'] + o for a, o in
                                zip(arrays, offsets)]).astype(np.int32))


def _perturbed(params, seed=3):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [
      x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _reference(arrays, vocab=_VOCAB, config=None):
  config = config or _CONFIG
  model = gnn.GraphEncoder(vocab, **config)
  probe = graphs_lib.to_graphs_tuple(arrays[:1])
  params = _perturbed(model.init(jax.random.key(0), probe))
  ref = reference.ReferenceGraphEncoder(vocab, **config)
  return model, params, gnn.embed_all(ref.apply, params, arrays,
                                      batch_size=len(arrays))


def _assert_same(actual, expected):
  scale = np.abs(expected).max()
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


class CompressTest(parameterized.TestCase):

  @parameterized.parameters(1, 2, 8)
  def test_matches_reference(self, max_degree):
    rs = np.random.default_rng(max_degree)
    # A cycle (arrays skip graph_to_arrays' DAG check): message passing
    # and the colouring are defined on it all the same.
    cycle = dict(op=np.array([1, 1, 1, 2], np.int32),
                 feat=np.zeros((4, graphs_lib.NUM_NODE_FEATURES), np.float32),
                 senders=np.array([0, 1, 2, 2], np.int32),
                 receivers=np.array([1, 2, 0, 3], np.int32))
    arrays = ([_dag(rs, n) for n in (300, 40, 1, 2)] + [_hub(20), cycle] +
              [_dag(rs, 120, ops=_VOCAB, discrete=False)])
    model, params, expected = _reference(arrays)
    self.assertGreater(np.abs(expected).max(), 1.0)
    items = [compress.compress(a, 3, max_degree) for a in arrays]
    # Two batches of one budget: the packer splits, padding rows count 0.
    budget = compress.packing_budget(items, 1)
    got = []
    for batch, n in compress.batches(items, budget):
      got.append(np.asarray(jax.jit(model.apply)(params, batch))[:n])
    self.assertGreater(len(got), 1)
    _assert_same(np.concatenate(got), expected)

  def test_embed_all_and_traced_network(self):
    g = trace_lib.trace('resnet18', (1, 32, 32, 3))
    vocab = graphs_lib.OpVocab.from_graphs([g])
    rs = np.random.default_rng(0)
    arrays = [graphs_lib.graph_to_arrays(g, vocab)] + [
        _dag(rs, 50, ops=len(vocab)) for _ in range(3)]
    model, params, expected = _reference(arrays, len(vocab))
    item = compress.compress(arrays[0], 3)
    rows = item.rows()
    self.assertLess(sum(rows[1:]), 0.6 * 3 * len(arrays[0]['op']))
    self.assertEqual(list(rows), sorted(rows))  # Refinement only splits.
    _assert_same(gnn.embed_all(model.apply, params, arrays, batch_size=2,
                               compress_layers=3), expected)

  def test_classes_are_exact(self):
    # Same op and features, different successors: merged at level 0 only.
    a = dict(op=np.array([1, 1, 2, 3], np.int32),
             feat=np.zeros((4, graphs_lib.NUM_NODE_FEATURES), np.float32),
             senders=np.array([0, 1], np.int32),
             receivers=np.array([2, 3], np.int32))
    c = compress.compress(a, 2)
    self.assertEqual(c.rows(), (3, 4, 4))
    np.testing.assert_array_equal(c.count[0], [1, 1, 1, 1])
    # The hub: n identical middle nodes are one class counted n times.
    c = compress.compress(_hub(30), 2, max_degree=4)
    self.assertEqual(c.rows(), (3, 3, 3))
    np.testing.assert_array_equal(sorted(c.count[1]), [1, 1, 30])
    self.assertEqual(sum(len(e) for e in c.extra_in), 2 * 26)

  def test_unknown_op_slot(self):
    g = trace_lib.trace('resnet18', (1, 32, 32, 3))
    vocab = graphs_lib.OpVocab(['input', 'conv_general_dilated'])
    arrays = [graphs_lib.graph_to_arrays(g, vocab)]
    self.assertGreater((arrays[0]['op'] == 0).sum(), 10)
    model, params, expected = _reference(arrays, len(vocab))
    _assert_same(gnn.embed_all(model.apply, params, arrays, batch_size=1,
                               compress_layers=3), expected)

  def test_shared_batches_match_reference(self):
    rs = np.random.default_rng(5)
    base = _dag(rs, 200)
    grown = _grown(rs, base, 60)
    changed = dict(base, op=base['op'].copy())
    changed['op'][::50] = 0  # 0: the unknown-op slot.
    cycle = dict(op=np.array([1, 1, 1, 2], np.int32),
                 feat=np.zeros((4, graphs_lib.NUM_NODE_FEATURES), np.float32),
                 senders=np.array([0, 1, 2, 2], np.int32),
                 receivers=np.array([1, 2, 0, 3], np.int32))
    # Graphs sharing sub-structures (copies, a grown copy, changed ops),
    # hubs of two degrees, a cycle, one-node graphs and a graph of
    # continuous features (shares nothing), mixed in one batch.
    arrays = [base, _hub(20), grown, base, changed, cycle, _dag(rs, 1),
              _hub(12), _dag(rs, 80, ops=_VOCAB, discrete=False), grown,
              _dag(rs, 1)]
    model, params, expected = _reference(arrays)
    items = [compress.compress(a, 3, max_degree=4) for a in arrays]
    ids = compress.colour_ids(items)
    apply = jax.jit(model.apply)
    # All in one batch, then a budget that splits them.
    for rows in (10_000, 1):
      budget = compress.sharing_budget(items, ids, rows)
      got, n_batches = [], 0
      for batch, n in compress.shared_batches(items, budget, ids):
        got.append(np.asarray(apply(params, batch))[:n])
        n_batches += 1
      self.assertEqual(n_batches > 1, rows == 1)
      _assert_same(np.concatenate(got), expected)
    _assert_same(gnn.embed_all(model.apply, params, arrays, batch_size=4,
                               compress_layers=3), expected)

  def test_colour_ids_are_union_classes(self):
    # Without hubs, the joint colours of several graphs are the classes
    # of their disjoint union compressed as one graph (an independent
    # computation), and of each graph alone its own classes.
    rs = np.random.default_rng(1)
    base = _dag(rs, 150)
    # Continuous features alone: every node its own class from level 0 on.
    continuous = [_dag(rs, n, ops=_VOCAB, discrete=False) for n in (60, 30)]
    for arrays in ([base, _grown(rs, base, 40), base, _dag(rs, 90),
                    _dag(rs, 1)], continuous):
      items = [compress.compress(a, 4) for a in arrays]
      ids = compress.colour_ids(items)
      union = compress.compress(_union(arrays), 4)
      distinct = [len(np.unique(np.concatenate([v[k] for v in ids])))
                  for k in range(5)]
      self.assertEqual(distinct, list(union.rows()))
      self.assertEqual(distinct, [max(v[k].max() for v in ids) + 1
                                  for k in range(5)])  # Dense ids.
      for c, v in zip(items, ids):
        self.assertEqual(tuple(len(np.unique(x)) for x in v), c.rows())
    arrays = [base, _grown(rs, base, 40), base, _dag(rs, 90), _dag(rs, 1)]
    items = [compress.compress(a, 4) for a in arrays]
    ids = compress.colour_ids(items)
    # A copy shares every class: one batch holds the rows of one graph and
    # the readout pairs of both.
    budget = compress.sharing_budget(items, ids, 10_000)
    batch = compress.shared_batch(items[:1] * 2, ids[:1] * 2, budget)
    for k in range(1, 5):
      self.assertEqual(int(np.asarray(batch.count[k - 1]).sum()), 2 * 150)
    self.assertEqual(compress.shared_rows(items[:1] * 2, ids[:1] * 2),
                     items[0].rows())
    self.assertLess(sum(compress.shared_rows(items[:2], ids[:2])),
                    sum(items[0].rows()) + sum(items[1].rows()))

  def test_bad_input(self):
    empty = dict(op=np.zeros(0, np.int32),
                 feat=np.zeros((0, graphs_lib.NUM_NODE_FEATURES), np.float32),
                 senders=np.zeros(0, np.int32),
                 receivers=np.zeros(0, np.int32))
    with self.assertRaisesRegex(ValueError, 'graph 7: the graph is empty'):
      compress.compress(empty, 2, where='graph 7')
    rs = np.random.default_rng(0)
    items = [compress.compress(_dag(rs, n), 2) for n in (50, 400)]
    budget = compress.packing_budget(items[:1], 60, n_graph=4)
    with self.assertRaisesRegex(ValueError, r'graph 1 does not fit the '
                                r'padding budget Budget\(rows='):
      list(compress.batches(items, budget))
    with self.assertRaisesRegex(ValueError, 'Padding budget too small'):
      compress.batch(items, budget)
    model = gnn.GraphEncoder(_VOCAB, **_CONFIG)
    batch = compress.batch(items[:1], budget)
    with self.assertRaisesRegex(ValueError, 'compressed for 2 layers, the '
                                'encoder has 3'):
      model.init(jax.random.key(0), batch)


if __name__ == '__main__':
  absltest.main()
