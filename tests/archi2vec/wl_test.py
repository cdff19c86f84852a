"""Tests of WL relabeling, PV-DBOW graph2vec, k-means and ridge."""

import warnings

from absl.testing import absltest
from absl.testing import parameterized
import networkx as nx
import numpy as np

from fennec_jax.archi2vec import wl

_OPS = ['conv', 'pool', 'add', 'relu']


def _random_dag(rs, n):
  g = nx.DiGraph()
  for i in range(n):
    g.add_node(i, op=_OPS[rs.integers(len(_OPS))])
    for j in range(i):
      if rs.random() < 0.3:
        g.add_edge(j, i)
  return g


def _partition(labels):
  """The set of node classes of a labelling (labels themselves differ)."""
  groups = {}
  for n, lab in labels.items():
    groups.setdefault(lab, set()).add(n)
  return {frozenset(s) for s in groups.values()}


class WLTest(parameterized.TestCase):

  @parameterized.parameters(0, 1, 2, 3)
  def test_partitions_match_networkx(self, seed):
    g = _random_dag(np.random.default_rng(seed), 12)
    ours = wl.wl_labels(g, iterations=2, direction='both')
    with warnings.catch_warnings():
      # networkx >= 3.5 warns that its directed-graph hashes changed (they now
      # use successors and predecessors, which is what we compare against).
      warnings.simplefilter('ignore', UserWarning)
      ref = nx.weisfeiler_lehman_subgraph_hashes(g, node_attr='op',
                                                 iterations=2)
    for t in (1, 2):
      self.assertEqual(_partition(ours[t]),
                       _partition({n: h[t - 1] for n, h in ref.items()}))
    # Predecessor mode is successor mode on the reversed graph.
    pred = wl.wl_labels(g, 2, direction='predecessors')
    succ_rev = wl.wl_labels(nx.reverse(g), 2, direction='successors')
    self.assertEqual(pred, succ_rev)
    # One-sided modes are coarser than (or equal to) 'both'.
    for t in (1, 2):
      for cls in _partition(ours[t]):
        self.assertTrue(any(cls <= c for c in _partition(pred[t])))

  def test_isomorphic_graphs_share_documents(self):
    rs = np.random.default_rng(5)
    g = _random_dag(rs, 10)
    perm = rs.permutation(10)
    h = nx.relabel_nodes(g, {i: f'x{perm[i]}' for i in range(10)})
    self.assertEqual(sorted(wl.wl_document(g)), sorted(wl.wl_document(h)))
    # 'both' keeps direction: a chain and its reverse differ.
    chain = nx.DiGraph([(0, 1), (1, 2)])
    nx.set_node_attributes(chain, {0: 'conv', 1: 'pool', 2: 'conv'}, 'op')
    rev = nx.reverse(chain)
    chain2 = nx.DiGraph([(0, 1), (1, 2)])
    nx.set_node_attributes(chain2, {0: 'conv', 1: 'conv', 2: 'pool'}, 'op')
    self.assertNotEqual(sorted(wl.wl_document(chain2)),
                        sorted(wl.wl_document(nx.reverse(chain2))))
    self.assertEqual(sorted(wl.wl_document(chain)),
                     sorted(wl.wl_document(rev)))  # a palindrome
    docs = [wl.wl_document(g), wl.wl_document(h)]
    vocab = {w: i for i, w in enumerate(sorted(set(docs[0])))}
    x = wl.feature_counts(docs, vocab)
    np.testing.assert_array_equal(x[0], x[1])
    self.assertEqual(x[0].sum(), 3 * 10)  # 10 nodes x (1 + 2 iterations)

  def test_graph2vec_groups_similar_documents(self):
    # Two families of documents with disjoint words: a document must be
    # closer (cosine) to its own family than to the other one.
    rs = np.random.default_rng(0)
    docs = []
    for fam in range(2):
      for _ in range(10):
        docs.append([f'{fam}_{w}' for w in rs.integers(0, 6, size=12)])
    model = wl.Graph2Vec(dim=16, epochs=30, batch_size=64,
                         learning_rate=0.05, seed=0).fit_documents(docs)
    e = model.embeddings / np.linalg.norm(model.embeddings, axis=1,
                                          keepdims=True)
    sim = e @ e.T
    fam = np.repeat([0, 1], 10)
    same = sim[fam[:, None] == fam[None, :]].mean()
    diff = sim[fam[:, None] != fam[None, :]].mean()
    self.assertGreater(same, diff + 0.2)
    self.assertLess(model.losses[-1], model.losses[0])
    _, labels = wl.kmeans(model.embeddings, 2, seed=0)
    self.assertLen(set(zip(labels.tolist(), fam.tolist())), 2)

  def test_kmeans_recovers_blobs_and_matches_lloyd_fixed_point(self):
    rs = np.random.default_rng(0)
    centers = np.array([[0, 0], [10, 0], [0, 10]], np.float64)
    truth = np.repeat(np.arange(3), 30)
    x = centers[truth] + rs.normal(size=(90, 2))
    c, labels = wl.kmeans(x, 3, seed=1)
    # Same partition as the truth (up to label names).
    self.assertLen(set(zip(labels.tolist(), truth.tolist())), 3)
    # Lloyd fixed point: each center is its cluster's mean and each point is
    # assigned to its nearest center.
    for j in range(3):
      np.testing.assert_allclose(c[j], x[labels == j].mean(0))
    d = ((x[:, None] - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d.argmin(1))
    with self.assertRaisesRegex(ValueError, 'k must be in'):
      wl.kmeans(x, 0)

  def test_ridge_matches_closed_form(self):
    rs = np.random.default_rng(0)
    x, xt = rs.normal(size=(30, 5)), rs.normal(size=(7, 5))
    y = x @ rs.normal(size=5) + 0.1 * rs.normal(size=30) + 3.0
    got = wl.ridge_fit_predict(x, y, xt, alphas=(2.0,))
    mu, sd = x.mean(0), x.std(0)
    a = (x - mu) / sd
    w = np.linalg.solve(a.T @ a + 2.0 * np.eye(5), a.T @ (y - y.mean()))
    np.testing.assert_allclose(got, ((xt - mu) / sd) @ w + y.mean(),
                               rtol=1e-8)

  def test_bad_input(self):
    g = nx.DiGraph([(0, 1)])
    with self.assertRaisesRegex(ValueError, "no 'op' attribute"):
      wl.wl_labels(g)
    with self.assertRaisesRegex(ValueError, 'direction must be'):
      wl.wl_labels(g, direction='sideways')
    with self.assertRaisesRegex(ValueError, 'no graphs'):
      wl.Graph2Vec().fit([])


if __name__ == '__main__':
  absltest.main()
