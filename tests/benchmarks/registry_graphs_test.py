"""The committed registry traces are current and cover the public tables."""

from absl.testing import absltest
import networkx as nx

from fennec_jax.archi2vec import trace as trace_lib
from fennec_jax.benchmarks import public
from fennec_jax.benchmarks import registry_graphs

_TABLES = ('sfda_group1', 'model_spider_single', 'parc_controlled',
           'parc_all')


class RegistryGraphsTest(absltest.TestCase):

  def test_public_tables_models_have_graphs(self):
    archs = registry_graphs.table_archs()
    for table in _TABLES:
      history = public.load_benchmark(table)
      mapped = {archs[table].get(m) for m in history.model_ids}
      self.assertLessEqual(mapped, set(registry_graphs.ARCHS), table)
    for arch in registry_graphs.ARCHS + registry_graphs.ZOO_EXTRA:
      g = registry_graphs.load(arch)
      self.assertTrue(nx.is_directed_acyclic_graph(g), arch)
      self.assertGreater(g.number_of_nodes(), 10, arch)

  def test_cached_graph_equals_a_fresh_trace(self):
    fresh = trace_lib.trace('resnet18')
    cached = registry_graphs.load('resnet18')
    self.assertEqual(fresh.number_of_edges(), cached.number_of_edges())
    self.assertEqual(sorted(str(n) for n in fresh), sorted(cached))
    for n, a in fresh.nodes(data=True):
      b = cached.nodes[str(n)]
      self.assertEqual((a['op'], tuple(a.get('shape') or ()),
                        a.get('param_size', 0)),
                       (b['op'], tuple(b.get('shape') or ()),
                        b.get('param_size', 0)), n)

  def test_unknown_arch_names_the_script(self):
    with self.assertRaisesRegex(ValueError, 'trace_registry_graphs.py'):
      registry_graphs.load('no_such_net')


if __name__ == '__main__':
  absltest.main()
