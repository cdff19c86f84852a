"""Tests of DAG <-> GraphsTuple conversion, the op vocabulary and file I/O."""

import json
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import networkx as nx
import numpy as np

from fennec_jax.archi2vec import graphs as graphs_lib


def _dag(ops, edges):
  g = nx.DiGraph(name='t')
  for i, op in enumerate(ops):
    g.add_node(f'n{i}', op=op, shape=(1, i + 1), dtype='float32',
               params=(f'p{i}',) if i % 2 else (), param_size=3 * i,
               module=f'M/m{i}')
  g.add_edges_from((f'n{u}', f'n{v}') for u, v in edges)
  return g


class GraphsTest(parameterized.TestCase):

  def test_arrays_match_networkx(self):
    g = _dag(['input', 'conv', 'relu', 'add'], [(0, 1), (1, 2), (0, 3),
                                                (2, 3)])
    vocab = graphs_lib.OpVocab(['input', 'conv', 'relu', 'add'])
    a = graphs_lib.graph_to_arrays(g, vocab)
    order = list(nx.topological_sort(g))
    # Topological numbering: every edge goes forward.
    self.assertTrue(np.all(a['senders'] < a['receivers']))
    rebuilt = nx.DiGraph()
    rebuilt.add_nodes_from((i, {'op': vocab.ops[o]})
                           for i, o in enumerate(a['op']))
    rebuilt.add_edges_from(zip(a['senders'].tolist(),
                               a['receivers'].tolist()))
    self.assertTrue(nx.is_isomorphic(
        g, rebuilt, node_match=lambda x, y: x['op'] == y['op']))
    self.assertLen(order, 4)
    # Features: log1p(output size), log1p(params), rank, log1p degrees.
    i = list(vocab.ops[o] for o in a['op']).index('add')
    np.testing.assert_allclose(a['feat'][i], [np.log1p(4), np.log1p(9), 2,
                                              np.log1p(2), 0.0], rtol=1e-6)

  def test_unknown_ops_use_slot_or_raise(self):
    g = _dag(['input', 'mystery'], [(0, 1)])
    vocab = graphs_lib.OpVocab(['input'])
    a = graphs_lib.graph_to_arrays(g, vocab)
    self.assertEqual(a['op'].tolist(), [1, 0])
    with self.assertRaisesRegex(ValueError, "Unknown op 'mystery'"):
      graphs_lib.graph_to_arrays(g, vocab, strict=True)
    v2 = graphs_lib.OpVocab.from_json(
        graphs_lib.OpVocab.from_graphs([g]).to_json())
    self.assertEqual(v2.ops, ['<unk>', 'input', 'mystery'])

  def test_batch_and_pad(self):
    gs = [_dag(['a', 'b'], [(0, 1)]), _dag(['a', 'b', 'c'], [(0, 1), (0, 2)])]
    vocab = graphs_lib.OpVocab.from_graphs(gs)
    arrays = [graphs_lib.graph_to_arrays(g, vocab) for g in gs]
    budget = graphs_lib.padding_budget([2, 3], [1, 2], batch_size=2,
                                       multiple=8)
    self.assertEqual(budget, (8, 8, 3))
    (batch, n), = list(graphs_lib.batches(arrays, 2, budget))
    self.assertEqual(n, 2)
    self.assertEqual(batch.n_node.tolist(), [2, 3, 3])
    self.assertEqual(batch.nodes['op'].shape, (8,))
    # Second graph's edges are offset by the first graph's 2 nodes.
    self.assertEqual(batch.senders[:3].tolist(), [0, 2, 2])
    self.assertEqual(batch.receivers[:3].tolist(), [1, 3, 4])
    with self.assertRaisesRegex(ValueError, 'Padding budget too small'):
      graphs_lib.pad_graphs(graphs_lib.to_graphs_tuple(arrays), 5, 8, 3)

  def test_dense_batches(self):
    gs = [_dag(['a', 'b'], [(0, 1)]), _dag(['a', 'b', 'c'], [(0, 1), (0, 2)])]
    vocab = graphs_lib.OpVocab.from_graphs(gs)
    arrays = [graphs_lib.graph_to_arrays(g, vocab) for g in gs]
    (batch, n), = list(graphs_lib.dense_batches(arrays, 4, n_node=4))
    self.assertEqual(n, 2)
    self.assertEqual(batch.n_node.tolist(), [2, 3, 0, 0])
    self.assertEqual(batch.op.shape, (4, 4))
    self.assertEqual(batch.op[1].tolist(), arrays[1]['op'].tolist() + [0])
    np.testing.assert_array_equal(batch.feat[1, :3], arrays[1]['feat'])
    self.assertEqual(batch.feat[1, 3].tolist(), [0.0] * 5)
    # adjacency[g, s, r] counts edges s -> r; nothing touches padding.
    expected = np.zeros((4, 4))
    expected[arrays[1]['senders'], arrays[1]['receivers']] = 1
    np.testing.assert_array_equal(batch.adjacency[1], expected)
    self.assertEqual(batch.adjacency[0].sum(), 1)
    self.assertEqual(batch.adjacency[2:].sum(), 0)
    # A repeated edge counts twice, as in the edge-list form.
    twice = dict(arrays[0], senders=np.array([0, 0], np.int32),
                 receivers=np.array([1, 1], np.int32))
    self.assertEqual(graphs_lib.to_dense([twice], 2).adjacency[0, 0, 1], 2)
    with self.assertRaisesRegex(ValueError, 'graph 1 has 3 nodes, budget is '
                                'n_node=2'):
      graphs_lib.to_dense(arrays, 2)
    with self.assertRaisesRegex(ValueError, '2 graphs, budget is n_graph=1'):
      graphs_lib.to_dense(arrays, 4, 1)
    with self.assertRaisesRegex(ValueError, 'no graphs'):
      graphs_lib.to_dense([], 4)

  @parameterized.parameters('json', 'graphml')
  def test_round_trip(self, ext):
    g = _dag(['input', 'conv', 'add'], [(0, 1), (1, 2), (0, 2)])
    g.nodes['n1']['body_ops'] = {'mul': 2}
    g.graph['param_sizes'] = {'p1': 3}
    g.graph['outputs'] = ('n2',)
    tmp = self.enterContext(tempfile.TemporaryDirectory())
    path = os.path.join(tmp, f'g.{ext}')
    graphs_lib.write_graph(g, path)
    h = graphs_lib.read_graph(path)
    self.assertEqual(dict(g.nodes(data=True)), dict(h.nodes(data=True)))
    self.assertEqual(set(g.edges), set(h.edges))
    self.assertEqual(h.graph['param_sizes'], {'p1': 3})
    self.assertEqual(h.graph['outputs'], ('n2',))

  def test_bad_files(self):
    d = self.enterContext(tempfile.TemporaryDirectory())
    def write(name, doc):
      path = os.path.join(d, name)
      with open(path, 'w') as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc))
      return path
    base = dict(format=graphs_lib.JSON_FORMAT, version=1)
    cases = [
        (write('empty.json', dict(base, nodes=[], edges=[])), 'empty'),
        (write('cyc.json', dict(base, nodes=[dict(id='a', op='x'),
                                             dict(id='b', op='y')],
                                edges=[['a', 'b'], ['b', 'a']])), 'cycle'),
        (write('noop.json', dict(base, nodes=[dict(id='a')], edges=[])),
         "node 'a' has no `op`"),
        (write('dangling.json', dict(base, nodes=[dict(id='a', op='x')],
                                     edges=[['a', 'z']])), "node 'z'"),
        (write('fmt.json', dict(nodes=[])), 'format'),
        (write('junk.json', '{not json'), 'not valid JSON'),
        (write('junk.graphml', '<graphml'), 'not a readable GraphML'),
        (write('g.txt', ''), 'unknown graph file extension'),
    ]
    for path, msg in cases:
      with self.subTest(os.path.basename(path)):
        with self.assertRaisesRegex(ValueError, msg) as cm:
          graphs_lib.read_graph(path)
        self.assertIn(os.path.basename(path), str(cm.exception))


if __name__ == '__main__':
  absltest.main()
