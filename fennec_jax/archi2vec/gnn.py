"""A direction-aware jraph graph network that embeds architecture DAGs.

Each layer is a `jraph.GraphNetwork` whose edge function sends two messages per
edge: one along it (sender -> receiver, "what feeds me") and one against it
(receiver -> sender, "what consumes me"); the node function sums them
separately, so a conv feeding a pool differs from a pool feeding a conv. Node
states of every layer are read out (sum and mean per graph) and projected to a
fixed-size embedding.

Batches are padded `GraphsTuple`s (`graphs.pad_graphs`), so a jitted encoder
compiles once per padding budget. Padding nodes and edges belong to the padding
graph only; `graph_mask` marks the real graphs.

Plain interface for joint training elsewhere:
`init, embed = make_encoder(vocab_size)`; `params = init(rng, graphs)`;
`embed(params, graphs) -> [n_graph, embed_dim]`.

Self-supervised pretraining (`masked_op_loss`, `pretrain`): replace the op of a
random 15% of real nodes with a [MASK] token and predict the original op from
the node states, which needs only unlabelled graphs.
"""

from collections.abc import Callable, Sequence
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax

from fennec_jax.archi2vec import graphs as graphs_lib


def graph_mask(graph: jraph.GraphsTuple) -> jax.Array:
  """True for real graphs (jraph puts the padding graph(s) last)."""
  return jraph.get_graph_padding_mask(graph)


def node_graph_index(graph: jraph.GraphsTuple) -> jax.Array:
  """Graph id of each node, with a static output length."""
  n_graph = graph.n_node.shape[0]
  n_nodes = graph.nodes['op'].shape[0]
  return jnp.repeat(jnp.arange(n_graph), graph.n_node, axis=0,
                    total_repeat_length=n_nodes)


class DirectedLayer(nn.Module):
  """One message-passing step with separate forward and backward messages."""
  hidden: int

  @nn.compact
  def __call__(self, h: jax.Array, graph: jraph.GraphsTuple) -> jax.Array:
    hidden = self.hidden
    fwd_dense = nn.Dense(hidden, name='forward_message')
    bwd_dense = nn.Dense(hidden, name='backward_message')

    def update_edge_fn(edges, sent, received, globals_):
      del edges, globals_
      # [message to the receiver from its sender, message to the sender from
      # its receiver].
      return jnp.concatenate([fwd_dense(sent), bwd_dense(received)], axis=-1)

    def update_node_fn(nodes, sent, received, globals_):
      del globals_
      from_preds = received[..., :hidden]   # sum over incoming edges
      from_succs = sent[..., hidden:]       # sum over outgoing edges
      x = jnp.concatenate([nodes, from_preds, from_succs], axis=-1)
      x = nn.Dense(2 * hidden, name='update_0')(x)
      x = nn.gelu(x)
      x = nn.Dense(hidden, name='update_1')(x)
      return nn.LayerNorm(name='norm')(nodes + x)

    net = jraph.GraphNetwork(update_edge_fn=update_edge_fn,
                             update_node_fn=update_node_fn,
                             aggregate_edges_for_nodes_fn=jraph.segment_sum)
    out = net(graph._replace(nodes=h, edges=None))
    return out.nodes


class GraphEncoder(nn.Module):
  """Architecture DAG -> fixed-size embedding.

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
  def __call__(self, graph: jraph.GraphsTuple, return_nodes: bool = False):
    ops = graph.nodes['op']
    feat = graph.nodes['feat']
    h = nn.Embed(self.vocab_size + 1, self.hidden, name='op_embed')(ops)
    h = h + nn.Dense(self.hidden, name='feat_embed')(feat)
    h = nn.LayerNorm(name='input_norm')(h)
    idx = node_graph_index(graph)
    n_graph = graph.n_node.shape[0]
    count = jnp.maximum(graph.n_node, 1).astype(h.dtype)[:, None]
    readouts = []
    for i in range(self.num_layers):
      h = DirectedLayer(self.hidden, name=f'layer_{i}')(h, graph)
      total = jax.ops.segment_sum(h, idx, n_graph)
      readouts += [total, total / count]
    z = jnp.concatenate(readouts, axis=-1)
    z = nn.Dense(self.embed_dim, name='project')(z)
    if return_nodes:
      return z, h
    return z


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

  @jax.jit
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


def embed_all(embed_fn: Callable[[Any, jraph.GraphsTuple], jax.Array],
              params: Any, arrays: Sequence[dict[str, np.ndarray]],
              batch_size: int = 1024,
              budget: tuple[int, int, int] | None = None) -> np.ndarray:
  """Embeds many graphs in fixed-shape padded batches (one compile).

  Args:
    embed_fn: `embed(params, graph) -> [n_graph, d]`, jitted here unless it
      already is (pass a jitted function to reuse its compile cache).
    params: its parameters.
    arrays: graphs as `graphs.graph_to_arrays` dicts.
    batch_size: graphs per batch.
    budget: padding budget; default the worst case for `batch_size`.

  Returns:
    float32 `[len(arrays), d]` (or `[len(arrays)]` for scalar outputs).
  """
  fn = embed_fn if hasattr(embed_fn, 'lower') else jax.jit(embed_fn)
  out = []
  for graph, n in graphs_lib.batches(arrays, batch_size, budget):
    out.append(np.asarray(fn(params, graph))[:n])
  return np.concatenate(out)

