"""A direction-aware graph network that embeds architecture DAGs.

Each layer sends two messages per edge: one along it (sender -> receiver,
"what feeds me") and one against it (receiver -> sender, "what consumes me");
a node sums each kind separately, so a conv feeding a pool differs from a pool
feeding a conv. Node states of every layer are read out (sum and mean per
graph) and projected to a fixed-size embedding.

Messages are affine maps of node states, so a layer sums neighbour states
first (one gather and one scatter-add of width `hidden` per layer) and applies
the message maps, folded into the update, per node. `reference.py` holds the
per-edge form (a `jraph.GraphNetwork`): the same function with the same
parameters, about 1.5x slower on a 2-core CPU (2x when it is jitted without
`jit_encoder`'s compiler options; experiments/benchmarks/results/
archi2vec_cpu.md).

Traced networks repeat blocks, so `compress.CompressedGraphs` batches (one
row per colour class of nodes whose layer inputs are provably equal, neighbour
sums by gathers from small tables, no scatter-add) give the same embeddings
with 3x (public-table zoo) to 7-15x (ResNet-152, ViT-L) fewer layer rows;
`compress.shared_batches` also runs a class once per batch however many
graphs hold it (the 29-architecture registry zoo: 5.6x fewer rows than
nodes, where per-graph classes give 3.2x).

Batches are padded `GraphsTuple`s (`graphs.pad_graphs`), so a jitted encoder
compiles once per padding budget. Padding nodes and edges belong to the padding
graph only; `graph_mask` marks the real graphs. Small graphs (NAS cells) can
instead come as `graphs.DenseGraphs` (one padded adjacency matrix per graph;
no gathers or scatters) with the same embeddings.

Plain interface for joint training elsewhere:
`init, embed = make_encoder(vocab_size)`; `params = init(rng, graphs)`;
`embed(params, graphs) -> [n_graph, embed_dim]`.

Self-supervised pretraining (`masked_op_loss`, `pretrain`): replace the op of a
random 15% of real nodes with a [MASK] token and predict the original op from
the node states, which needs only unlabelled graphs.
"""

from collections.abc import Callable, Sequence
import functools
from typing import Any, NamedTuple

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax

from fennec_jax.archi2vec import compress as compress_lib
from fennec_jax.archi2vec import graphs as graphs_lib


# XLA:CPU's YNNPACK fusions (on by default in jaxlib 0.10) take this
# encoder's layers as one fusion that reads every scalar constant and per-node
# degree as a full [nodes, 2 * hidden] array; without them the encoder runs
# 1.3x-2.5x faster on a 2-core CPU, with the same embeddings
# (experiments/benchmarks/archi2vec_bench.py).
CPU_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}


@functools.cache
def cpu_compiler_options() -> dict[str, str]:
  """`CPU_COMPILER_OPTIONS` if this XLA knows them, else none.

  The option is experimental: an XLA that renamed or dropped it refuses to
  compile with it, so it is tried once on a trivial function and left out
  (logged) where it is unknown; the embeddings are the same either way.
  """
  try:
    jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS).lower(
        1.0).compile()
  except Exception as e:  # pylint: disable=broad-except
    logging.info('archi2vec: XLA does not take %s (%s); compiling without.',
                 sorted(CPU_COMPILER_OPTIONS), str(e).splitlines()[0])
    return {}
  return dict(CPU_COMPILER_OPTIONS)


def jit_encoder(fn: Callable[..., Any], **jit_kwargs: Any
                ) -> Callable[..., Any]:
  """`jax.jit(fn)`, with `cpu_compiler_options()` when the backend is CPU."""
  if jax.default_backend() == 'cpu':
    jit_kwargs.setdefault('compiler_options', cpu_compiler_options())
  return jax.jit(fn, **jit_kwargs)


def graph_mask(graph: jraph.GraphsTuple) -> jax.Array:
  """True for real graphs (jraph puts the padding graph(s) last)."""
  return jraph.get_graph_padding_mask(graph)


def node_graph_index(graph: jraph.GraphsTuple) -> jax.Array:
  """Graph id of each node, with a static output length."""
  n_graph = graph.n_node.shape[0]
  n_nodes = graph.nodes['op'].shape[0]
  return jnp.repeat(jnp.arange(n_graph), graph.n_node, axis=0,
                    total_repeat_length=n_nodes)


class _Affine(nn.Module):
  """The kernel and bias of a dense layer, returned rather than applied.

  Named and initialized as in `nn.Dense`, so the parameter tree is that of
  `reference.ReferenceGraphEncoder`; returned so the layer can fold kernels.
  """
  in_features: int
  features: int

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (self.in_features, self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    return kernel, bias


class Messages(NamedTuple):
  """Edge indices for aggregating both directions in one gather/scatter.

  Attributes:
    gather: int32[2E], the node read by each message: senders, then receivers.
    scatter: int32[2E], where it is summed in a [2N] buffer: receivers (rows
      0..N-1, "what feeds me"), then senders + N ("what consumes me").
    in_degree: float[N] incoming edges per node.
    out_degree: float[N] outgoing edges per node.
  """
  gather: jax.Array
  scatter: jax.Array
  in_degree: jax.Array
  out_degree: jax.Array

  def aggregate(self, h: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(h, sum of h over each node's predecessors, ... over successors)."""
    n = h.shape[0]
    sums = jax.ops.segment_sum(h[self.gather], self.scatter, 2 * n)
    return h, sums[:n], sums[n:]


def messages(graph: jraph.GraphsTuple, dtype: Any = jnp.float32) -> Messages:
  """The `Messages` of a (padded) batch, computed once for all layers."""
  n = graph.nodes['op'].shape[0]
  gather = jnp.concatenate([graph.senders, graph.receivers])
  scatter = jnp.concatenate([graph.receivers, graph.senders + n])
  degree = jax.ops.segment_sum(jnp.ones(scatter.shape, dtype), scatter, 2 * n)
  return Messages(gather, scatter, degree[:n], degree[n:])


class DenseMessages(NamedTuple):
  """`Messages` for `graphs.DenseGraphs`: sums weighted by the adjacency.

  Attributes:
    adjacency: float[G, n, n], `adjacency[g, s, r]` edges s -> r.
    in_degree: float[G, n] incoming edges per node.
    out_degree: float[G, n] outgoing edges per node.
  """
  adjacency: jax.Array
  in_degree: jax.Array
  out_degree: jax.Array

  def aggregate(self, h: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(h, sum of h over each node's predecessors, ... over successors)."""
    # Broadcast products beat batched matmuls of a few rows on CPU.
    a = self.adjacency[..., None]
    return h, (a * h[:, :, None, :]).sum(1), (a * h[:, None, :, :]).sum(2)


def dense_messages(graph: graphs_lib.DenseGraphs,
                   dtype: Any = jnp.float32) -> DenseMessages:
  """The `DenseMessages` of a dense batch, computed once for all layers."""
  adjacency = jnp.asarray(graph.adjacency, dtype)
  return DenseMessages(adjacency, adjacency.sum(1), adjacency.sum(2))


class CompressedMessages(NamedTuple):
  """`Messages` of one layer of a `compress.CompressedGraphs` batch.

  Rows are the layer's colour classes; `own`, `preds` and `succs` index
  the previous layer's rows (pads: one past the last, a zero row appended
  here), so neighbour sums are gathers over a few columns, no scatter-add;
  `extra_in` / `extra_out` hold the (row, neighbour) pairs of the rare
  nodes whose degree exceeds the table.
  """
  own: jax.Array
  preds: jax.Array
  succs: jax.Array
  extra_in: jax.Array
  extra_out: jax.Array
  in_degree: jax.Array
  out_degree: jax.Array

  def _sum(self, y: jax.Array, table: jax.Array, extra: jax.Array
           ) -> jax.Array:
    """Sum of `y`'s rows named by `table` (pads: the last, zero, row)."""
    total = y[table[:, 0]]
    for j in range(1, table.shape[1]):
      total = total + y[table[:, j]]
    if extra.shape[0]:
      total = total + jax.ops.segment_sum(y[extra[:, 1]], extra[:, 0],
                                          table.shape[0])
    return total

  def aggregate(self, h: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(each row's own previous state, sum over predecessors, successors)."""
    hz = jnp.concatenate([h, jnp.zeros((1, h.shape[1]), h.dtype)])
    return (h[self.own], self._sum(hz, self.preds, self.extra_in),
            self._sum(hz, self.succs, self.extra_out))

  def mix(self, h: jax.Array, w_self: jax.Array, w_pred: jax.Array,
          w_succ: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(own states, `own @ w_self + preds sum @ w_pred + succs sum @ w_succ`).

    Maps the previous layer's rows first, then gathers: there are fewer
    of them than of this layer's classes (refinement only splits).
    """
    d = w_self.shape[1]
    y = h @ jnp.concatenate([w_self, w_pred, w_succ], 1)
    y = jnp.concatenate([y, jnp.zeros((1, y.shape[1]), y.dtype)])
    return h[self.own], (y[self.own, :d] +
                         self._sum(y[:, d:2 * d], self.preds, self.extra_in) +
                         self._sum(y[:, 2 * d:], self.succs, self.extra_out))


def compressed_messages(graph: compress_lib.CompressedGraphs, layer: int,
                        dtype: Any = jnp.float32) -> CompressedMessages:
  """The `CompressedMessages` of layer `layer` (0-based) of a batch."""
  return CompressedMessages(
      graph.own[layer], graph.preds[layer], graph.succs[layer],
      graph.extra_in[layer], graph.extra_out[layer],
      jnp.asarray(graph.in_degree[layer], dtype),
      jnp.asarray(graph.out_degree[layer], dtype))


def mix(msg: Messages | DenseMessages | CompressedMessages, h: jax.Array,
        w_self: jax.Array, w_pred: jax.Array, w_succ: jax.Array
        ) -> tuple[jax.Array, jax.Array]:
  """(own states, their and their neighbour sums' linear part of a layer)."""
  if isinstance(msg, CompressedMessages):
    return msg.mix(h, w_self, w_pred, w_succ)
  h, from_preds, from_succs = msg.aggregate(h)
  return h, h @ w_self + from_preds @ w_pred + from_succs @ w_succ


class DirectedLayer(nn.Module):
  """One message-passing step with separate forward and backward messages.

  Each edge sends `forward_message(h[sender])` to its receiver and
  `backward_message(h[receiver])` to its sender; a node sums each kind and
  updates itself from `[h, sum forward, sum backward]` (dense, gelu, dense,
  residual, LayerNorm). The messages are affine, so their sums are computed
  as `sum(h[neighbor]) @ W + degree * b`, and the message kernels are folded
  into the first update kernel: one aggregation of node states (width
  `hidden`) per layer instead of dense layers and scatter-adds over every
  edge. `reference.ReferenceDirectedLayer` is the per-edge form.
  """
  hidden: int

  @nn.compact
  def __call__(self, h: jax.Array,
               msg: Messages | DenseMessages | CompressedMessages
               ) -> jax.Array:
    hidden = self.hidden
    w_fwd, b_fwd = _Affine(hidden, hidden, name='forward_message')()
    w_bwd, b_bwd = _Affine(hidden, hidden, name='backward_message')()
    w_up, b_up = _Affine(3 * hidden, 2 * hidden, name='update_0')()
    w_self, w_pred, w_succ = jnp.split(w_up, 3)
    h, x = mix(msg, h, w_self, w_fwd @ w_pred, w_bwd @ w_succ)
    x = (x + msg.in_degree[..., None] * (b_fwd @ w_pred)
         + msg.out_degree[..., None] * (b_bwd @ w_succ) + b_up)
    x = nn.gelu(x)
    x = nn.Dense(hidden, name='update_1')(x)
    return nn.LayerNorm(name='norm')(h + x)


class GraphEncoder(nn.Module):
  """Architecture DAG -> fixed-size embedding.

  Takes a padded `jraph.GraphsTuple` (any graph sizes) or a
  `graphs.DenseGraphs` batch (small graphs; faster for NAS cells); both give
  the same embeddings.

  Attributes:
    vocab_size: number of op ids (`len(OpVocab)`); one more id, `vocab_size`,
      is the [MASK] token used in pretraining.
    hidden: node state width.
    num_layers: message-passing steps.
    embed_dim: output embedding width.
  """
  vocab_size: int
  hidden: int = 64
  num_layers: int = 4
  embed_dim: int = 64

  @nn.compact
  def __call__(self, graph: (jraph.GraphsTuple | graphs_lib.DenseGraphs |
                             compress_lib.CompressedGraphs),
               return_nodes: bool = False):
    if isinstance(graph, compress_lib.CompressedGraphs):
      return self._compressed(graph, return_nodes)
    dense = isinstance(graph, graphs_lib.DenseGraphs)
    ops, feat = (graph.op, graph.feat) if dense else (graph.nodes['op'],
                                                      graph.nodes['feat'])
    h = self._input(ops, feat)
    if dense:
      msg = dense_messages(graph, h.dtype)
      real = jnp.arange(ops.shape[1]) < graph.n_node[:, None]
      readout = lambda h: jnp.where(real[..., None], h, 0.0).sum(1)
    else:
      msg = messages(graph, h.dtype)
      idx = node_graph_index(graph)
      n_graph = graph.n_node.shape[0]
      readout = lambda h: jax.ops.segment_sum(h, idx, n_graph,
                                              indices_are_sorted=True)
    count = jnp.maximum(graph.n_node, 1).astype(h.dtype)[:, None]
    readouts = []
    for i in range(self.num_layers):
      h = DirectedLayer(self.hidden, name=f'layer_{i}')(h, msg)
      total = readout(h)
      readouts += [total, total / count]
    z = jnp.concatenate(readouts, axis=-1)
    z = nn.Dense(self.embed_dim, name='project')(z)
    if return_nodes:
      return z, h
    return z

  def _input(self, ops: jax.Array, feat: jax.Array) -> jax.Array:
    h = nn.Embed(self.vocab_size + 1, self.hidden, name='op_embed')(ops)
    h = h + nn.Dense(self.hidden, name='feat_embed')(feat)
    return nn.LayerNorm(name='input_norm')(h)

  def _compressed(self, graph: compress_lib.CompressedGraphs,
                  return_nodes: bool) -> jax.Array:
    """The same embeddings from colour classes (`compress.py`)."""
    if return_nodes:
      raise ValueError('GraphEncoder: return_nodes needs per-node states; '
                       'compressed batches hold one row per colour class.')
    if graph.num_layers != self.num_layers:
      raise ValueError(f'GraphEncoder: the batch was compressed for '
                       f'{graph.num_layers} layers, the encoder has '
                       f'{self.num_layers}; compress with num_layers='
                       f'{self.num_layers}.')
    h = self._input(graph.op, graph.feat)
    n_graph = graph.n_node.shape[0]
    count = jnp.maximum(graph.n_node, 1).astype(h.dtype)[:, None]
    readouts = []
    for i in range(self.num_layers):
      msg = compressed_messages(graph, i, h.dtype)
      h = DirectedLayer(self.hidden, name=f'layer_{i}')(h, msg)
      total = jax.ops.segment_sum(
          h[graph.member[i]] * graph.count[i][:, None], graph.graph[i],
          n_graph, indices_are_sorted=True)
      readouts += [total, total / count]
    z = jnp.concatenate(readouts, axis=-1)
    return nn.Dense(self.embed_dim, name='project')(z)


class GraphRegressor(nn.Module):
  """Encoder + MLP head: one scalar per graph (e.g. a standardized accuracy)."""
  vocab_size: int
  hidden: int = 64
  num_layers: int = 4
  embed_dim: int = 64

  @nn.compact
  def __call__(self, graph: jraph.GraphsTuple) -> jax.Array:
    z = GraphEncoder(self.vocab_size, self.hidden, self.num_layers,
                     self.embed_dim, name='encoder')(graph)
    z = nn.gelu(nn.Dense(self.embed_dim, name='head_0')(z))
    return nn.Dense(1, name='head_1')(z)[:, 0]


def make_encoder(vocab_size: int, **config: Any
                 ) -> tuple[Callable[..., Any], Callable[..., jax.Array]]:
  """`(init, embed)` pure functions around `GraphEncoder(vocab_size, **config)`.

  `init(rng, graph) -> params`; `embed(params, graph) -> [n_graph, embed_dim]`
  (rows of padding graphs are meaningless; mask them with `graph_mask`).
  """
  model = GraphEncoder(vocab_size, **config)

  def init(rng: jax.Array, graph: jraph.GraphsTuple) -> Any:
    return model.init(rng, graph)

  def embed(params: Any, graph: jraph.GraphsTuple) -> jax.Array:
    return model.apply(params, graph)

  return init, embed


def masked_op_loss(model: GraphEncoder, params: Any, graph: jraph.GraphsTuple,
                   rng: jax.Array, mask_rate: float = 0.15) -> jax.Array:
  """Masked-op prediction loss (cross-entropy on masked real nodes).

  The op head is a linear map from node states to op logits, tied to nothing;
  it lives in `params['params']['op_head']` next to the encoder's params.
  """
  ops = graph.nodes['op']
  real = jraph.get_node_padding_mask(graph)
  masked = (jax.random.uniform(rng, ops.shape) < mask_rate) & real
  inputs = graph._replace(nodes=dict(graph.nodes, op=jnp.where(
      masked, model.vocab_size, ops)))
  enc = {'params': params['params']['encoder']}
  _, h = model.apply(enc, inputs, return_nodes=True)
  w = params['params']['op_head']
  logits = h @ w['kernel'] + w['bias']
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, ops)
  m = masked.astype(ce.dtype)
  return (ce * m).sum() / jnp.maximum(m.sum(), 1.0)


def init_pretrain_params(model: GraphEncoder, rng: jax.Array,
                         graph: jraph.GraphsTuple) -> Any:
  """Encoder params plus the masked-op head, in one tree."""
  enc = model.init(rng, graph)['params']
  k = jax.random.fold_in(rng, 1)
  kernel = nn.initializers.lecun_normal()(k, (model.hidden, model.vocab_size))
  return {'params': {'encoder': enc, 'op_head': {
      'kernel': kernel, 'bias': jnp.zeros((model.vocab_size,))}}}


def pretrain(model: GraphEncoder, arrays: Sequence[dict[str, np.ndarray]],
             *, steps: int = 500, batch_size: int = 256,
             learning_rate: float = 1e-3, seed: int = 0,
             mask_rate: float = 0.15) -> tuple[Any, list[float]]:
  """Self-supervised masked-op pretraining on unlabelled graphs.

  Args:
    model: the encoder to pretrain.
    arrays: graphs as `graphs.graph_to_arrays` dicts.
    steps: optimizer steps (batches are drawn at random each step).
    batch_size: graphs per batch (one padding budget, one compile).
    learning_rate: Adam learning rate.
    seed: root seed; batch draws and masks use `fold_in(seed, step)`.
    mask_rate: fraction of nodes masked.

  Returns:
    `(encoder_variables, losses)`: variables usable with `model.apply`, and
    the loss of every step.
  """
  if not arrays:
    raise ValueError('pretrain: no graphs given.')
  budget = graphs_lib.padding_budget([len(a['op']) for a in arrays],
                                     [len(a['senders']) for a in arrays],
                                     batch_size)
  root = jax.random.key(seed)
  probe = graphs_lib.pad_graphs(graphs_lib.to_graphs_tuple(
      arrays[:batch_size]), *budget)
  params = init_pretrain_params(model, root, probe)
  tx = optax.adamw(learning_rate, weight_decay=1e-4)
  opt = tx.init(params)

  @jit_encoder
  def step(params, opt, graph, rng):
    loss, grads = jax.value_and_grad(
        lambda p: masked_op_loss(model, p, graph, rng, mask_rate))(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  rs = np.random.default_rng(seed)
  losses = []
  for i in range(steps):
    pick = rs.choice(len(arrays), size=min(batch_size, len(arrays)),
                     replace=False)
    graph = graphs_lib.pad_graphs(
        graphs_lib.to_graphs_tuple([arrays[j] for j in pick]), *budget)
    params, opt, loss = step(params, opt, graph,
                             jax.random.fold_in(root, i + 1))
    losses.append(float(loss))
  logging.info('pretrain: %d steps, loss %.4f -> %.4f', steps, losses[0],
               losses[-1])
  return {'params': params['params']['encoder']}, losses


def embed_all(embed_fn: Callable[..., jax.Array],
              params: Any, arrays: Sequence[dict[str, np.ndarray]],
              batch_size: int = 1024,
              budget: tuple[int, int, int] | None = None,
              dense_nodes: int | None = None,
              compress_layers: int | None = None,
              share_classes: bool = True) -> np.ndarray:
  """Embeds many graphs in fixed-shape padded batches (one compile).

  Args:
    embed_fn: `embed(params, graph) -> [n_graph, d]`, jitted here (by
      `jit_encoder`) unless it already is (pass a jitted function to reuse
      its compile cache).
    params: its parameters.
    arrays: graphs as `graphs.graph_to_arrays` dicts.
    batch_size: graphs per batch.
    budget: padding budget of `GraphsTuple` batches; default the worst case
      for `batch_size`.
    dense_nodes: if set, batch as `graphs.DenseGraphs` of this many nodes per
      graph instead (for small graphs; `embed_fn` must accept them, as
      `GraphEncoder` does).
    compress_layers: if set, batch as `compress.CompressedGraphs` for this
      many layers instead (the encoder's `num_layers`; one row per colour
      class, fastest for traced networks), packed to about `budget[0]` (or
      the largest `batch_size` graphs') rows per level.
    share_classes: with `compress_layers`, run each colour class once per
      batch however many graphs hold it (`compress.shared_batches`) where
      that saves at least 10% of the last layer's rows over all graphs;
      else once per graph holding it (`compress.batches`). Same embeddings.

  Returns:
    float32 `[len(arrays), d]` (or `[len(arrays)]` for scalar outputs).
  """
  fn = embed_fn if hasattr(embed_fn, 'lower') else jit_encoder(embed_fn)
  if compress_layers is not None:
    items = [compress_lib.compress(a, compress_layers, where=f'graph {i}')
             for i, a in enumerate(arrays)]
    rows = budget[0] if budget else sum(sorted(
        (c.rows()[-1] for c in items), reverse=True)[:batch_size])
    ids = compress_lib.colour_ids(items) if share_classes else None
    # Sharing pays where graphs hold common classes (traced networks), not
    # on graphs that share little (readout pairs and packing cost extra).
    if ids and max(int(v[-1].max()) for v in ids) + 1 < 0.9 * sum(
        c.rows()[-1] for c in items):
      batches = compress_lib.shared_batches(items, compress_lib.sharing_budget(
          items, ids, rows, n_graph=batch_size + 1), ids)
    else:
      batches = compress_lib.batches(items, compress_lib.packing_budget(
          items, rows, batch_size + 1))
  elif dense_nodes is not None:
    batches = graphs_lib.dense_batches(arrays, batch_size, dense_nodes)
  else:
    batches = graphs_lib.batches(arrays, batch_size, budget)
  out = [np.asarray(fn(params, graph))[:n] for graph, n in batches]
  return np.concatenate(out)
