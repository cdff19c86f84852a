"""Architecture graphs from jaxprs: Flax linen / NNX modules and JAX functions.

`trace` runs `jax.make_jaxpr` on abstract inputs (`jax.ShapeDtypeStruct`) and
abstract parameters (`jax.eval_shape` of the initializer), so no weights are
materialized and no FLOPs run. Each primitive becomes a node; call-like
primitives (jit/pjit, custom_jvp/vjp, remat) are inlined so the graph shows the
layers, not the wrappers; control flow (scan, while, cond) stays one node whose
`body_ops` counts the primitives in its body, so a 24-layer `nn.scan` does not
blow the graph up and still says what it repeats.

Node attributes (see `graphs.py` for the file schema): `op`, `shape`, `dtype`,
`params` (trainable parameter paths read by the node, from the jaxpr invars
via `tree_flatten_with_path`), `state` (non-trainable variables read, e.g.
BatchNorm statistics), `param_size`, `module` (the Flax module path from
the jaxpr name stack; NNX modules get it through a temporary
`jax.named_scope` patch of their classes). Graph inputs are `input` nodes.
"""

from collections.abc import Callable, Sequence
import contextlib
import functools
import inspect
from typing import Any

import flax.linen as nn
from flax import nnx
import jax
from jax.extend import core as jcore
import jax.numpy as jnp
import networkx as nx
import numpy as np

from fennec_jax import models

# Primitives whose body is inlined into the graph.
INLINE = frozenset({'jit', 'pjit', 'closed_call', 'core_call',
                    'custom_jvp_call', 'custom_vjp_call',
                    'custom_vjp_call_jaxpr', 'remat', 'remat2',
                    'checkpoint', 'custom_lin'})
# Primitives kept as one node summarizing their body.
CONTROL_FLOW = frozenset({'scan', 'while', 'cond'})
# Preferred op to name a contracted module node (first present wins).
_MODULE_OP_PRIORITY = ('conv_general_dilated', 'dot_general', 'scan', 'while',
                       'cond', 'reduce_window_max', 'reduce_window_sum',
                       'reduce_max', 'reduce_sum', 'rsqrt', 'exp', 'tanh',
                       'logistic', 'erf', 'max', 'add')


def _path_str(path) -> str:
  parts = []
  for k in path:
    if getattr(k, 'name', None) == 'value':  # NNX Variable leaves.
      continue
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return '/'.join(parts)


def _abstract(tree: Any) -> Any:
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), tree)


def _body_op_counts(jaxpr: jcore.Jaxpr, counts: dict[str, int]) -> None:
  for eqn in jaxpr.eqns:
    subs = list(jcore.jaxprs_in_params(eqn.params))
    if eqn.primitive.name in INLINE and subs:
      for sub in subs:
        _body_op_counts(sub, counts)
      continue
    counts[eqn.primitive.name] = counts.get(eqn.primitive.name, 0) + 1
    if eqn.primitive.name in CONTROL_FLOW:
      for sub in subs:
        _body_op_counts(sub, counts)


def jaxpr_to_digraph(closed: jcore.ClosedJaxpr,
                     invar_names: Sequence[str | None] | None = None,
                     input_names: Sequence[str] | None = None,
                     param_sizes: dict[str, int] | None = None) -> nx.DiGraph:
  """The data-flow DAG of a closed jaxpr.

  Args:
    closed: from `jax.make_jaxpr`.
    invar_names: per top-level invar, a parameter path (the invar is a
      weight: consumers record it in `params`) or None (the invar is a model
      input: it becomes an `input` node).
    input_names: names of the `input` nodes (default `input_<i>`).
    param_sizes: trainable parameter path -> number of scalars. Named invars
      not in it (e.g. BatchNorm statistics) are recorded in a node's `state`
      attribute instead of `params` (all count as parameters when it is
      empty).

  Returns:
    `networkx.DiGraph` with integer node ids in program order.
  """
  g = nx.DiGraph()
  param_sizes = param_sizes or {}
  jaxpr = closed.jaxpr
  if invar_names is None:
    invar_names = [None] * len(jaxpr.invars)
  # env: var -> ('node', id) | ('param', path)
  env: dict[Any, tuple[str, Any]] = {}
  k = 0
  for v, name in zip(jaxpr.invars, invar_names):
    if name is None:
      label = (input_names[k] if input_names and k < len(input_names)
               else f'input_{k}')
      nid = g.number_of_nodes()
      g.add_node(nid, op='input', shape=tuple(v.aval.shape),
                 dtype=str(v.aval.dtype), params=(), param_size=0,
                 module='', name=label)
      env[v] = ('node', nid)
      k += 1
    else:
      env[v] = ('param', name)

  def walk(jx: jcore.Jaxpr, local: dict[Any, tuple[str, Any]], scope: str):
    for eqn in jx.eqns:
      stack = str(eqn.source_info.name_stack)
      here = '/'.join(s for s in (scope, stack) if s)
      name = eqn.primitive.name
      subs = list(jcore.jaxprs_in_params(eqn.params))
      if name in INLINE and len(subs) == 1:
        sub = subs[0]
        sub_env = {}
        for sv, v in zip(sub.invars, eqn.invars):
          if isinstance(v, jcore.Var) and v in local:
            sub_env[sv] = local[v]
        walk(sub, sub_env, here)
        for ov, sv in zip(eqn.outvars, sub.outvars):
          if isinstance(sv, jcore.Var) and sv in sub_env:
            local[ov] = sub_env[sv]
        continue
      nid = g.number_of_nodes()
      params, state, preds = [], [], []
      for v in eqn.invars:
        if not isinstance(v, jcore.Var) or v not in local:
          continue
        kind, ref = local[v]
        if kind == 'param':
          into = params if (not param_sizes or ref in param_sizes) else state
          if ref not in into:
            into.append(ref)
        elif ref not in preds:
          preds.append(ref)
      out = eqn.outvars[0].aval if eqn.outvars else None
      attrs = dict(op=name,
                   shape=tuple(getattr(out, 'shape', ())),
                   dtype=str(getattr(out, 'dtype', '')),
                   params=tuple(params),
                   param_size=int(sum(param_sizes.get(p, 0) for p in params)),
                   module=here)
      if state:
        attrs['state'] = tuple(state)
      if name in CONTROL_FLOW:
        counts: dict[str, int] = {}
        for sub in subs:
          _body_op_counts(sub, counts)
        attrs['body_ops'] = dict(sorted(counts.items()))
      g.add_node(nid, **attrs)
      for p in preds:
        g.add_edge(p, nid)
      for ov in eqn.outvars:
        local[ov] = ('node', nid)

  walk(jaxpr, env, '')
  outs = [env[v][1] for v in jaxpr.outvars
          if isinstance(v, jcore.Var) and v in env and env[v][0] == 'node']
  g.graph['outputs'] = tuple(dict.fromkeys(outs))
  g.graph['param_sizes'] = dict(param_sizes)
  return g


def _nnx_paths(model: nnx.Module, paths: dict[int, str]) -> None:
  paths.clear()
  root = type(model).__name__
  for path, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Module):
      paths[id(node)] = '/'.join([root] + [str(p) for p in path])


@contextlib.contextmanager
def _nnx_named_scopes(model: nnx.Module, paths: dict[int, str]):
  """Wraps each NNX module class's `__call__` in `jax.named_scope(path)`.

  NNX leaves the jaxpr name stack empty; patching the classes (not the
  instances: `mod(x)` looks `__call__` up on the type) gives module paths.
  Instances of one class share the patch, so it looks the path up by `id` in
  `paths`, which the caller fills (via `_nnx_paths`) for the instance it
  actually calls (`nnx.merge` makes new instances). The patch is undone on
  exit, also after an error.
  """
  originals = {}
  for _, node in nnx.iter_graph(model):
    cls = type(node)
    if (not isinstance(node, nnx.Module) or cls in originals
        or '__call__' not in vars(cls)):
      continue
    orig = vars(cls)['__call__']
    originals[cls] = orig

    def patched(self, *a, _orig=orig, **kw):
      name = paths.get(id(self))
      if name is None:
        return _orig(self, *a, **kw)
      # named_scope nests, so each module only adds its own last component.
      with jax.named_scope(name.rsplit('/', 1)[-1] if _depth[0] else name):
        _depth[0] += 1
        try:
          return _orig(self, *a, **kw)
        finally:
          _depth[0] -= 1
    functools.update_wrapper(patched, orig)
    setattr(cls, '__call__', patched)
  _depth = [0]
  try:
    yield
  finally:
    for cls, orig in originals.items():
      setattr(cls, '__call__', orig)


def _accepts(fn: Callable[..., Any], kw: str) -> bool:
  try:
    sig = inspect.signature(fn)
  except (TypeError, ValueError):
    return False
  return kw in sig.parameters or any(
      p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def _make_jaxpr(fn, args, what: str, input_shape) -> jcore.ClosedJaxpr:
  try:
    return jax.make_jaxpr(fn)(*args)
  except Exception as e:  # Any tracing failure becomes one clear error.
    raise ValueError(
        f'Could not trace {what} with input shape {tuple(input_shape)}: '
        f'{type(e).__name__}: {e}') from e


def trace(model_or_fn: nn.Module | nnx.Module | Callable[..., Any] | str,
          input_shape: Sequence[int] | None = None,
          *,
          dtype: Any = jnp.float32,
          params: Any = None,
          batch_size: int = 1,
          apply_kwargs: dict[str, Any] | None = None,
          **model_kwargs: Any) -> nx.DiGraph:
  """The architecture DAG of a model, from its jaxpr on abstract inputs.

  Args:
    model_or_fn: a Flax linen module, an NNX module (concrete or from
      `nnx.eval_shape`), a plain function `fn(x)` (or `fn(params, x)` when
      `params` is given), or a registry name (`'resnet50'`).
    input_shape: full input shape including the batch axis, e.g.
      `(1, 224, 224, 3)`. For a registry name it defaults to the registered
      `(batch_size, h, w, c)`.
    dtype: input dtype.
    params: parameters of a plain function (only their shapes are used). For
      linen modules the variables come from `jax.eval_shape(model.init)`.
    batch_size: batch size used with a registry name's default shape.
    apply_kwargs: extra keyword arguments for the call; by default linen and
      NNX models get `train=False` when their `__call__` accepts `train`.
    **model_kwargs: forwarded to `get_model` for a registry name.

  Returns:
    `networkx.DiGraph`; `g.graph` holds `name` and `outputs`.

  Raises:
    ValueError: unknown registry name, missing/invalid input shape, or a model
      that fails to trace (the jax error is included).
  """
  name = None
  if isinstance(model_or_fn, str):
    spec = models.get_spec(model_or_fn)
    name = model_or_fn
    model_or_fn = models.get_model(model_or_fn, **model_kwargs)
    if input_shape is None:
      input_shape = (batch_size, *spec.input_shape)
  elif model_kwargs:
    raise ValueError(f'Unexpected keyword arguments {sorted(model_kwargs)}; '
                     'they are only used with a registry model name.')
  if input_shape is None:
    raise ValueError('trace: input_shape is required (full shape with batch '
                     'axis, e.g. (1, 224, 224, 3)).')
  try:
    input_shape = tuple(int(d) for d in input_shape)
  except (TypeError, ValueError):
    raise ValueError(f'trace: input_shape must be a sequence of ints, got '
                     f'{input_shape!r}.') from None
  if any(d <= 0 for d in input_shape):
    raise ValueError(f'trace: input_shape {input_shape} has a non-positive '
                     'dimension.')
  x = jax.ShapeDtypeStruct(input_shape, dtype)
  kwargs = dict(apply_kwargs or {})

  if isinstance(model_or_fn, nn.Module):
    model = model_or_fn
    name = name or type(model).__name__
    if 'train' not in kwargs and _accepts(type(model).__call__, 'train'):
      kwargs['train'] = False
    init_kwargs = dict(kwargs)
    try:
      variables = jax.eval_shape(
          lambda rng, x: model.init(rng, x, **init_kwargs),
          jax.random.key(0), x)
    except Exception as e:  # Any init failure is a tracing failure.
      raise ValueError(
          f'Could not trace {name} with input shape {input_shape}: '
          f'{type(e).__name__}: {e}') from e
    fn = lambda v, x: model.apply(v, x, **kwargs)
    tree, args = variables, (variables, x)
    trainable = lambda p: p.startswith('params/')
    ctx = contextlib.nullcontext()
  elif isinstance(model_or_fn, nnx.Module):
    model = model_or_fn
    name = name or type(model).__name__
    if 'train' not in kwargs and _accepts(type(model).__call__, 'train'):
      kwargs['train'] = False
    graphdef, state = nnx.split(model)
    state = _abstract(state)
    flat = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))
    param_paths = {_path_str(p) for p, _ in flat[0]}
    trainable = param_paths.__contains__
    paths: dict[int, str] = {}

    def fn(s, x):
      m = nnx.merge(graphdef, s)
      _nnx_paths(m, paths)
      return m(x, **kwargs)
    tree, args = state, (state, x)
    ctx = _nnx_named_scopes(model, paths)
  elif callable(model_or_fn):
    name = name or getattr(model_or_fn, '__name__', 'fn')
    f = model_or_fn
    trainable = lambda p: True
    if params is None:
      fn, tree, args = (lambda x: f(x, **kwargs)), None, (x,)
    else:
      tree = _abstract(params)
      fn, args = (lambda p, x: f(p, x, **kwargs)), (tree, x)
    ctx = contextlib.nullcontext()
  else:
    raise ValueError(f'trace: expected a linen/NNX module, a function or a '
                     f'registry name, got {type(model_or_fn)}.')

  invar_names: list[str | None] = []
  sizes: dict[str, int] = {}
  if tree is not None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      p = _path_str(path)
      invar_names.append(p)
      if trainable(p):
        sizes[p] = int(np.prod(leaf.shape))
  invar_names += [None]  # the input x
  with ctx:
    closed = _make_jaxpr(fn, args, name, input_shape)
  if len(closed.jaxpr.invars) != len(invar_names):
    raise ValueError(f'Could not trace {name}: the jaxpr has '
                     f'{len(closed.jaxpr.invars)} inputs, expected '
                     f'{len(invar_names)} (parameters + input).')
  g = jaxpr_to_digraph(closed, invar_names, ['x'], sizes)
  g.graph['name'] = name
  return g


def module_graph(g: nx.DiGraph, depth: int | None = None) -> nx.DiGraph:
  """Contracts a traced graph by module path: one node per module.

  Args:
    g: from `trace`.
    depth: keep only the first `depth` path components (None = full path),
      e.g. depth=2 turns `ResNet/layer1_0/conv1` into `ResNet/layer1_0`.

  Returns:
    DAG whose nodes are module paths (inputs keep their own node) with `op`
    (the module's dominant primitive, e.g. `conv_general_dilated`),
    `op_counts`, `param_size` and `shape` (of the module's last node). Edges
    that would close a cycle (a module re-entered after another, e.g. a
    shared layer) are dropped and counted in `g.graph['dropped_edges']`.
  """
  def key(n):
    a = g.nodes[n]
    if a['op'] == 'input':
      return f'<{a.get("name", n)}>'
    m = a.get('module', '') or '<root>'
    if depth is not None:
      m = '/'.join(m.split('/')[:depth])
    return m

  m = nx.DiGraph(name=g.graph.get('name', ''))
  for n in nx.topological_sort(g):
    a, k = g.nodes[n], key(n)
    if k not in m:
      m.add_node(k, op_counts={}, param_size=0, params=(), shape=(),
                 dtype='', module=k)
    b = m.nodes[k]
    b['op_counts'][a['op']] = b['op_counts'].get(a['op'], 0) + 1
    new = [p for p in a.get('params', ()) if p not in b['params']]
    if new:
      b['params'] = b['params'] + tuple(new)
    b['shape'], b['dtype'] = a.get('shape', ()), a.get('dtype', '')
  sizes = g.graph.get('param_sizes', {})
  dropped = 0
  for u, v in g.edges():
    ku, kv = key(u), key(v)
    if ku == kv or m.has_edge(ku, kv):
      continue
    m.add_edge(ku, kv)
    if nx.has_path(m, kv, ku):
      m.remove_edge(ku, kv)
      dropped += 1
  for _, b in m.nodes(data=True):
    counts = b['op_counts']
    op = next((o for o in _MODULE_OP_PRIORITY if o in counts), None)
    b['op'] = op or max(counts, key=counts.get)
    b['param_size'] = int(sum(sizes.get(p, 0) for p in b['params']))
  m.graph['dropped_edges'] = dropped
  return m
