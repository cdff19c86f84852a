"""Tests of the jaxpr tracer: linen, NNX, plain functions, control flow."""

from absl.testing import absltest
from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from fennec_jax.archi2vec import trace as trace_lib


class _Block(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    y = nn.Conv(4, (3, 3), name='conv')(x)
    y = nn.BatchNorm(use_running_average=not train, name='bn')(y)
    return nn.relu(y) + x


class _Net(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(4, (3, 3), name='stem')(x)
    x = nn.remat(_Block, static_argnums=(2,))(name='block')(x, train)
    x = jax.jit(lambda t: t.mean((1, 2)))(x)
    return nn.Dense(3, name='head')(x)


class _Flat(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(2)(x.reshape((x.shape[0], 16)))


class _MLP(nnx.Module):

  def __init__(self, rngs):
    self.l1 = nnx.Linear(4, 8, rngs=rngs)
    self.l2 = nnx.Linear(8, 2, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.relu(self.l1(x)))


class TraceTest(absltest.TestCase):

  def test_linen_nodes_params_and_modules(self):
    model = _Net()
    g = trace_lib.trace(model, (1, 6, 6, 4))
    self.assertTrue(nx.is_directed_acyclic_graph(g))
    ops = [a['op'] for _, a in g.nodes(data=True)]
    # jit / remat / custom_jvp (relu) are inlined, never nodes.
    for wrapper in trace_lib.INLINE:
      self.assertNotIn(wrapper, ops)
    self.assertEqual(ops.count('conv_general_dilated'), 2)
    self.assertEqual(ops.count('dot_general'), 1)
    self.assertEqual(ops.count('input'), 1)
    # Every parameter leaf (reference: eval_shape of init) is read by a node
    # and the recorded sizes match.
    variables = jax.eval_shape(model.init, jax.random.key(0),
                               jnp.zeros((1, 6, 6, 4)))
    want = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
      want['/'.join(str(k.key) for k in path)] = int(np.prod(leaf.shape))
    read = {p for _, a in g.nodes(data=True) for p in a['params']}
    state = {p for _, a in g.nodes(data=True) for p in a.get('state', ())}
    trainable = {p: s for p, s in want.items() if p.startswith('params/')}
    self.assertEqual(read, set(trainable))
    self.assertEqual(state, set(want) - set(trainable))
    self.assertEqual(state, {'batch_stats/block/bn/mean',
                             'batch_stats/block/bn/var'})
    self.assertEqual(g.graph['param_sizes'], trainable)
    conv = [a for _, a in g.nodes(data=True)
            if a['op'] == 'conv_general_dilated']
    self.assertEqual({a['module'] for a in conv}, {'_Net/stem',
                                                   '_Net/block/conv'})
    self.assertEqual(
        [a['params'] for a in conv if a['module'] == '_Net/stem'],
        [('params/stem/kernel',)])
    self.assertEqual(conv[0]['param_size'], 3 * 3 * 4 * 4)
    # The output node's shape is the model's output shape.
    (out,) = g.graph['outputs']
    self.assertEqual(g.nodes[out]['shape'], (1, 3))
    self.assertEqual(g.nodes[out]['dtype'], 'float32')
    # Every node is reachable from the input or reads a parameter/constant.
    self.assertTrue(nx.has_path(g, 0, out))

  def test_module_graph_contracts_by_path(self):
    g = trace_lib.trace(_Net(), (1, 6, 6, 4))
    m = trace_lib.module_graph(g)
    self.assertTrue(nx.is_directed_acyclic_graph(m))
    modules = {a['module'] or '<root>' for _, a in g.nodes(data=True)
               if a['op'] != 'input'}
    self.assertEqual(set(m) - {'<x>'}, modules)
    self.assertEqual(m.nodes['_Net/stem']['op'], 'conv_general_dilated')
    self.assertEqual(m.nodes['_Net/head']['op'], 'dot_general')
    self.assertEqual(m.nodes['_Net/head']['param_size'], 4 * 3 + 3)
    self.assertTrue(m.has_edge('<x>', '_Net/stem'))
    self.assertTrue(nx.has_path(m, '_Net/stem', '_Net/head'))
    top = trace_lib.module_graph(g, depth=2)
    self.assertEqual(set(top) - {'<x>'},
                     {'_Net', '_Net/stem', '_Net/block', '_Net/head'})
    counts = sum(sum(a['op_counts'].values()) for _, a in m.nodes(data=True))
    self.assertEqual(counts, g.number_of_nodes())

  def test_nnx_module_paths_and_no_leaked_patch(self):
    model = _MLP(nnx.Rngs(0))
    before = _MLP.__call__
    g = trace_lib.trace(model, (2, 4))
    self.assertIs(_MLP.__call__, before)
    dots = {a['module']: a['params'] for _, a in g.nodes(data=True)
            if a['op'] == 'dot_general'}
    self.assertEqual(dots, {'_MLP/l1': ('l1/kernel',),
                            '_MLP/l2': ('l2/kernel',)})
    self.assertEqual(g.graph['param_sizes'],
                     {'l1/kernel': 32, 'l1/bias': 8, 'l2/kernel': 16,
                      'l2/bias': 2})
    # An abstract model (nnx.eval_shape, no weights) traces the same.
    abstract = nnx.eval_shape(lambda: _MLP(nnx.Rngs(0)))
    ga = trace_lib.trace(abstract, (2, 4))
    self.assertEqual(dict(ga.nodes(data=True)), dict(g.nodes(data=True)))
    self.assertEqual(set(ga.edges), set(g.edges))
    # NNX BatchNorm statistics are state, not parameters.
    bn = nnx.BatchNorm(3, use_running_average=True, rngs=nnx.Rngs(0))
    gb = trace_lib.trace(bn, (2, 3))
    self.assertEqual(gb.graph['param_sizes'], {'bias': 3, 'scale': 3})
    self.assertEqual(
        {p for _, a in gb.nodes(data=True) for p in a.get('state', ())},
        {'mean', 'var'})

  def test_function_with_params_and_jit_is_inlined(self):
    def f(p, x):
      return jnp.tanh(x @ p['w']) + p['b']
    params = {'w': np.zeros((3, 5), np.float32), 'b': np.zeros(5, np.float32)}
    g = trace_lib.trace(f, (2, 3), params=params)
    g_jit = trace_lib.trace(jax.jit(f), (2, 3), params=params)
    ops = lambda h: sorted(a['op'] for _, a in h.nodes(data=True))
    self.assertEqual(ops(g), ops(g_jit))
    self.assertEqual(ops(g), ['add', 'broadcast_in_dim', 'dot_general', 'input',
                              'tanh'])
    dot = next(a for _, a in g.nodes(data=True) if a['op'] == 'dot_general')
    self.assertEqual(dot['params'], ('w',))
    self.assertEqual(dot['shape'], (2, 5))

  def test_control_flow_is_one_node_with_body_counts(self):
    def f(x):
      def body(c, _):
        return jnp.sin(c) * 2.0, None
      c, _ = jax.lax.scan(body, x, None, length=7)
      c = jax.lax.cond(c.sum() > 0, jnp.exp, jnp.cos, c)
      return jax.lax.while_loop(lambda v: v.sum() < 100.0, lambda v: v + 1.0,
                                c)
    g = trace_lib.trace(f, (4,))
    by_op = {a['op']: a for _, a in g.nodes(data=True)}
    self.assertEqual(by_op['scan']['body_ops'], {'mul': 1, 'sin': 1})
    self.assertEqual(by_op['cond']['body_ops'], {'cos': 1, 'exp': 1})
    self.assertIn('add', by_op['while']['body_ops'])
    self.assertNotIn('sin', by_op)  # the body is not inlined
    order = list(nx.topological_sort(g))
    self.assertLess(order.index(next(n for n in g if g.nodes[n]['op'] ==
                                     'scan')),
                    order.index(next(n for n in g if g.nodes[n]['op'] ==
                                     'cond')))

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, r'Could not trace _Flat with '
                                r'input shape \(1, 5\)'):
      trace_lib.trace(_Flat(), (1, 5))
    with self.assertRaisesRegex(ValueError, 'input_shape is required'):
      trace_lib.trace(_Net())
    with self.assertRaisesRegex(ValueError, 'non-positive'):
      trace_lib.trace(_Net(), (1, 0, 6, 4))
    with self.assertRaisesRegex(ValueError, 'Could not trace'):
      trace_lib.trace(lambda x: x @ jnp.ones((5, 2)), (2, 3))
    with self.assertRaisesRegex(ValueError, 'expected a linen/NNX module'):
      trace_lib.trace(42, (1,))
    with self.assertRaisesRegex(ValueError, 'Unknown model'):
      trace_lib.trace('no_such_model')


if __name__ == '__main__':
  absltest.main()
