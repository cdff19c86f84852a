"""Tests of the direction-aware encoder and its pretraining objective."""

from unittest import mock

from absl.testing import absltest
import chex
import jax
import networkx as nx
import numpy as np

from fennec_jax.archi2vec import gnn
from fennec_jax.archi2vec import graphs as graphs_lib
from fennec_jax.archi2vec import nas_bench
from fennec_jax.archi2vec import reference
from fennec_jax.archi2vec import trace as trace_lib

_OPS = ['input', 'conv', 'pool', 'add', 'relu']
_VOCAB = graphs_lib.OpVocab(_OPS)


def _chain(ops, name='c'):
  g = nx.DiGraph(name=name)
  for i, op in enumerate(ops):
    g.add_node(f'{name}{i}', op=op)
  g.add_edges_from((f'{name}{i}', f'{name}{i + 1}')
                   for i in range(len(ops) - 1))
  return g


def _random_dag(rs, n):
  g = nx.DiGraph()
  for i in range(n):
    g.add_node(i, op=_OPS[rs.integers(len(_OPS))])
    for j in range(i):
      if rs.random() < 0.3:
        g.add_edge(j, i)
  return g


def _random_dag_arrays(rs, n, vocab_size):
  """A ~`n`-node DAG as arrays: a chain plus skips from anywhere before."""
  chain = np.arange(1, n)
  skip_to = np.nonzero(rs.random(n - 1) < 0.3)[0] + 1
  skip_from = (rs.random(len(skip_to)) * skip_to).astype(np.int32)
  senders = np.concatenate([chain - 1, skip_from]).astype(np.int32)
  receivers = np.concatenate([chain, skip_to]).astype(np.int32)
  feat = rs.random((n, graphs_lib.NUM_NODE_FEATURES)).astype(np.float32)
  return dict(op=rs.integers(0, vocab_size, n).astype(np.int32), feat=feat,
              senders=senders, receivers=receivers)


def _perturbed(params, seed=3):
  """Params with non-zero biases and norm scales, so every term counts."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [
      x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _assert_same_embeddings(actual, expected):
  # Embeddings sum node states over up to 2,000 nodes; compare at float32
  # precision relative to their scale.
  scale = np.abs(expected).max()
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def _embed(params, embed, gs, budget):
  arrays = [graphs_lib.graph_to_arrays(g, _VOCAB) for g in gs]
  return gnn.embed_all(embed, params, arrays, batch_size=len(gs),
                       budget=budget)


class GNNTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.init, self.embed = gnn.make_encoder(len(_VOCAB), hidden=16,
                                             num_layers=2, embed_dim=8)
    g = graphs_lib.pad_graphs(graphs_lib.to_graphs_tuple(
        [_chain(['input', 'conv'])], _VOCAB), 8, 8, 2)
    self.params = self.init(jax.random.key(0), g)

  def test_padding_batch_and_permutation_invariance(self):
    rs = np.random.default_rng(0)
    gs = [_random_dag(rs, n) for n in (3, 5, 7)]
    alone = np.concatenate([_embed(self.params, self.embed, [g], (16, 32, 2))
                            for g in gs])
    batched = _embed(self.params, self.embed, gs, (64, 64, 4))
    self.assertEqual(batched.shape, (3, 8))
    np.testing.assert_allclose(alone, batched, rtol=1e-4, atol=1e-5)
    # Relabelling the nodes (an isomorphic graph) changes nothing.
    perm = nx.relabel_nodes(gs[2], {n: 100 - n for n in gs[2]})
    np.testing.assert_allclose(
        _embed(self.params, self.embed, [perm], (16, 32, 2)), alone[2:],
        rtol=1e-4, atol=1e-5)

  def test_same_parameters_as_reference(self):
    g = graphs_lib.pad_graphs(graphs_lib.to_graphs_tuple(
        [_chain(['input', 'conv'])], _VOCAB), 8, 8, 2)
    ref = reference.ReferenceGraphEncoder(len(_VOCAB), hidden=16,
                                          num_layers=2, embed_dim=8)
    chex.assert_trees_all_equal(self.params, ref.init(jax.random.key(0), g))

  def test_matches_reference_on_large_dags(self):
    rs = np.random.default_rng(2)
    arrays = [_random_dag_arrays(rs, n, len(_VOCAB))
              for n in (2000, 1500, 37, 1)]
    params = _perturbed(self.params)
    ref = reference.ReferenceGraphEncoder(len(_VOCAB), hidden=16,
                                          num_layers=2, embed_dim=8)
    expected = gnn.embed_all(ref.apply, params, arrays, batch_size=4)
    self.assertGreater(np.abs(expected).max(), 10.0)
    _assert_same_embeddings(
        gnn.embed_all(self.embed, params, arrays, batch_size=4), expected)

  def test_matches_reference_on_traced_resnet18(self):
    g = trace_lib.trace('resnet18', (1, 32, 32, 3))
    vocab = graphs_lib.OpVocab.from_graphs([g])
    arrays = [graphs_lib.graph_to_arrays(g, vocab)]
    self.assertGreater(len(arrays[0]['op']), 100)
    config = dict(hidden=16, num_layers=2, embed_dim=8)
    init, embed = gnn.make_encoder(len(vocab), **config)
    probe = graphs_lib.to_graphs_tuple(arrays)
    params = _perturbed(init(jax.random.key(2), probe))
    ref = reference.ReferenceGraphEncoder(len(vocab), **config)
    _assert_same_embeddings(
        gnn.embed_all(embed, params, arrays, batch_size=1),
        gnn.embed_all(ref.apply, params, arrays, batch_size=1))

  def test_dense_matches_reference_on_nas_bench_cells(self):
    rs = np.random.default_rng(4)
    cells = ['|' + '|+|'.join('|'.join(
        f'{nas_bench.OPS[rs.integers(len(nas_bench.OPS))]}~{j}'
        for j in range(i)) for i in (1, 2, 3)) + '|' for _ in range(40)]
    vocab = nas_bench.VOCAB
    arrays = [graphs_lib.graph_to_arrays(nas_bench.cell_to_dag(c), vocab)
              for c in cells]
    sizes = [len(a['op']) for a in arrays]
    self.assertLessEqual(max(sizes), 8)
    self.assertGreater(len(set(sizes)), 2)
    init, embed = gnn.make_encoder(len(vocab), hidden=16, num_layers=3,
                                   embed_dim=8)
    probe = graphs_lib.to_graphs_tuple(arrays[:1])
    params = _perturbed(init(jax.random.key(1), probe))
    ref = reference.ReferenceGraphEncoder(len(vocab), hidden=16,
                                          num_layers=3, embed_dim=8)
    expected = gnn.embed_all(ref.apply, params, arrays, batch_size=16)
    sparse = gnn.embed_all(embed, params, arrays, batch_size=16)
    _assert_same_embeddings(sparse, expected)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def dense_embed(params, graph):
      return embed(params, graph)

    # 40 cells in batches of 16: the last batch is padded with empty graphs.
    dense = gnn.embed_all(dense_embed, params, arrays, batch_size=16,
                          dense_nodes=8)
    _assert_same_embeddings(dense, expected)

  def test_jit_encoder_same_embeddings(self):
    rs = np.random.default_rng(5)
    arrays = [_random_dag_arrays(rs, n, len(_VOCAB)) for n in (300, 40)]
    graph, _ = next(graphs_lib.batches(arrays, 2))
    params = _perturbed(self.params)
    fast = gnn.jit_encoder(self.embed)
    _assert_same_embeddings(np.asarray(fast(params, graph)),
                            np.asarray(jax.jit(self.embed)(params, graph)))
    if jax.default_backend() == 'cpu':
      compiled = fast.lower(params, graph).compile().as_text()
      self.assertNotIn('ynn_fusion', compiled)

  def test_direction_matters(self):
    fwd = _chain(['input', 'conv', 'pool'])
    rev = nx.reverse(fwd)
    e = _embed(self.params, self.embed, [fwd, rev], (16, 16, 3))
    self.assertGreater(np.abs(e[0] - e[1]).max(), 1e-3)
    # A plain undirected message-passing net could not tell these apart.
    self.assertTrue(nx.is_isomorphic(fwd.to_undirected(),
                                     rev.to_undirected(),
                                     node_match=lambda a, b: a == b))

  def test_one_compile_per_budget(self):
    rs = np.random.default_rng(1)
    arrays = [graphs_lib.graph_to_arrays(_random_dag(rs, int(n)), _VOCAB)
              for n in rs.integers(2, 9, size=12)]
    budget = graphs_lib.padding_budget([len(a['op']) for a in arrays],
                                       [len(a['senders']) for a in arrays],
                                       batch_size=4)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def embed(params, graph):
      return self.embed(params, graph)

    out = gnn.embed_all(embed, self.params, arrays, batch_size=4,
                        budget=budget)
    self.assertEqual(out.shape, (12, 8))
    self.assertTrue(np.isfinite(out).all())

  def test_masked_op_pretraining_learns(self):
    # Ops are a deterministic function of the graph position here (a chain
    # input -> conv -> relu -> pool), so masked ops are predictable.
    gs = [_chain(['input', 'conv', 'relu', 'pool'], f'g{i}') for i in range(8)]
    arrays = [graphs_lib.graph_to_arrays(g, _VOCAB) for g in gs]
    model = gnn.GraphEncoder(len(_VOCAB), hidden=16, num_layers=2,
                             embed_dim=8)
    variables, losses = gnn.pretrain(model, arrays, steps=60, batch_size=8,
                                     learning_rate=1e-2, mask_rate=0.5)
    self.assertLess(np.mean(losses[-10:]), 0.5 * np.mean(losses[:10]))
    graph = graphs_lib.pad_graphs(graphs_lib.to_graphs_tuple(arrays[:2]),
                                  16, 16, 3)
    self.assertEqual(model.apply(variables, graph).shape, (3, 8))

  def test_unknown_ops_encode_via_slot(self):
    # Every unseen op shares the unknown slot, distinct from known ops.
    gs = [_chain(['input', 'never_seen_op']), _chain(['input', 'other_op']),
          _chain(['input', 'conv'])]
    e = _embed(self.params, self.embed, gs, (16, 16, 4))
    np.testing.assert_allclose(e[0], e[1], rtol=1e-6, atol=1e-6)
    self.assertGreater(np.abs(e[0] - e[2]).max(), 1e-3)


class CompilerOptionsTest(absltest.TestCase):

  def test_unknown_option_is_left_out(self):
    gnn.cpu_compiler_options.cache_clear()
    self.addCleanup(gnn.cpu_compiler_options.cache_clear)
    with mock.patch.object(gnn, 'CPU_COMPILER_OPTIONS',
                           {'xla_cpu_no_such_option_for_test': ''}):
      self.assertEqual(gnn.cpu_compiler_options(), {})
      fn = gnn.jit_encoder(lambda x: 2 * x)
      self.assertEqual(float(fn(1.5)), 3.0)


if __name__ == '__main__':
  absltest.main()
