"""The archi2vec encoder as plain jraph message passing: the specification.

`ReferenceGraphEncoder` computes the same function as `gnn.GraphEncoder`
with the same parameter tree, written the direct way: a `jraph.GraphNetwork`
per layer whose edge function applies the forward and backward message
layers to every edge and whose aggregation is a scatter-add. It is slow on
CPU (scatter-adds of width `2 * hidden` over all edges), so `gnn` computes the
same embeddings by aggregating node states first; tests check the two agree
and the speed script times one against the other.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from fennec_jax.archi2vec import gnn


class ReferenceDirectedLayer(nn.Module):
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


class ReferenceGraphEncoder(nn.Module):
  """Architecture DAG -> embedding; attributes as in `gnn.GraphEncoder`."""
  vocab_size: int
  hidden: int = 64
  num_layers: int = 4
  embed_dim: int = 64

  @nn.compact
  def __call__(self, graph: jraph.GraphsTuple) -> jax.Array:
    ops = graph.nodes['op']
    feat = graph.nodes['feat']
    h = nn.Embed(self.vocab_size + 1, self.hidden, name='op_embed')(ops)
    h = h + nn.Dense(self.hidden, name='feat_embed')(feat)
    h = nn.LayerNorm(name='input_norm')(h)
    idx = gnn.node_graph_index(graph)
    n_graph = graph.n_node.shape[0]
    count = jnp.maximum(graph.n_node, 1).astype(h.dtype)[:, None]
    readouts = []
    for i in range(self.num_layers):
      h = ReferenceDirectedLayer(self.hidden, name=f'layer_{i}')(h, graph)
      total = jax.ops.segment_sum(h, idx, n_graph)
      readouts += [total, total / count]
    z = jnp.concatenate(readouts, axis=-1)
    return nn.Dense(self.embed_dim, name='project')(z)
