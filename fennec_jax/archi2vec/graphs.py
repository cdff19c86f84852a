"""Architecture DAGs <-> padded `jraph.GraphsTuple`, op vocabulary, file I/O.

An architecture graph is a `networkx.DiGraph` whose nodes carry at least an
`op` string (the primitive or layer type) and whose edges are data flow. The
tracer (`trace.py`) makes them from jaxprs; `read_graph` loads them from
GraphML or JSON, so graphs exported elsewhere (e.g. from a PyTorch FX or
autograd walk) can be encoded by the same GNN.

File schema (both formats carry the same fields):

* node attributes: `op` (str, required), `shape` (list of ints, output shape
  of the first output), `dtype` (str), `params` (list of parameter paths the
  node reads), `state` (list of non-trainable variables it reads, e.g.
  BatchNorm statistics), `param_size` (int, scalars in those parameters),
  `module` (str,
  module path such as `ResNet/layer1_0/conv1`), `body_ops` (dict op -> count,
  for control-flow nodes that summarize a loop/branch body).
* edges: directed `source -> target` = data flows from source to target.
* graph attributes (optional): `name`, `param_sizes` (dict trainable
  parameter path -> number of scalars, so parameter counts survive a round
  trip; their sum is the model's parameter count), `outputs`
  (ids of the output nodes).
* JSON: `{"format": "fennec-archi2vec-graph", "version": 1, "name": str,
  "graph": {"param_sizes": {...}, "outputs": [...]},
  "nodes": [{"id": str, "op": str, ...}], "edges": [[src_id, dst_id], ...]}`.
* GraphML: the same attributes; list/dict-valued ones are JSON-encoded strings
  (GraphML only holds scalars), decoded again by `read_graph`.

A file is rejected with a `ValueError` naming the file when it is empty, has a
cycle, or has a node without an `op`.

Encoding: ops are mapped to integer ids through an `OpVocab`, whose id 0 is the
"unknown op" slot: an op never seen when the vocabulary was built maps there
(and is counted in a log line) unless `strict=True` asks for an error.
"""

from collections.abc import Iterable, Sequence
import json
import math
import os
from typing import Any, NamedTuple

from absl import logging
import jraph
import networkx as nx
import numpy as np

UNKNOWN = '<unk>'
JSON_FORMAT = 'fennec-archi2vec-graph'
# Numeric node features next to the op id: log1p(output size), log1p(param
# size), output rank, log1p(in-degree), log1p(out-degree).
NUM_NODE_FEATURES = 5
_LIST_ATTRS = ('shape', 'params', 'state', 'body_ops')
_GRAPH_ATTRS = ('param_sizes', 'outputs')


class OpVocab:
  """Op name <-> integer id; id 0 is the unknown-op slot."""

  def __init__(self, ops: Iterable[str]):
    names = []
    for op in ops:
      if not isinstance(op, str) or not op:
        raise ValueError(f'Op names must be non-empty strings, got {op!r}.')
      if op != UNKNOWN and op not in names:
        names.append(op)
    self.ops = [UNKNOWN] + names
    self._ids = {op: i for i, op in enumerate(self.ops)}

  def __len__(self) -> int:
    return len(self.ops)

  def __contains__(self, op: str) -> bool:
    return op in self._ids and op != UNKNOWN

  def id(self, op: str, strict: bool = False) -> int:
    """The id of `op`; 0 (unknown) or a `ValueError` if it is not known."""
    i = self._ids.get(op, 0)
    if i == 0 and strict:
      raise ValueError(
          f'Unknown op {op!r}: not in the vocabulary of {len(self) - 1} ops '
          f'(first ones: {", ".join(self.ops[1:11])}). Rebuild the vocabulary '
          'with `OpVocab.from_graphs` or encode with strict=False to map it '
          'to the unknown-op slot.')
    return i

  @classmethod
  def from_graphs(cls, graphs: Iterable[nx.DiGraph],
                  min_count: int = 1) -> 'OpVocab':
    """Vocabulary of all ops seen at least `min_count` times, sorted."""
    counts: dict[str, int] = {}
    for g in graphs:
      for _, op in g.nodes(data='op'):
        counts[op] = counts.get(op, 0) + 1
    return cls(sorted(op for op, c in counts.items() if c >= min_count))

  def to_json(self) -> str:
    return json.dumps(self.ops[1:])

  @classmethod
  def from_json(cls, text: str) -> 'OpVocab':
    return cls(json.loads(text))


def validate_graph(g: nx.DiGraph, where: str = 'graph') -> None:
  """Raises `ValueError` unless `g` is a non-empty DAG whose nodes have ops."""
  if not isinstance(g, nx.DiGraph):
    raise ValueError(f'{where}: expected a networkx.DiGraph, got {type(g)}.')
  if g.number_of_nodes() == 0:
    raise ValueError(f'{where}: the graph is empty (no nodes).')
  for n, op in g.nodes(data='op'):
    if not isinstance(op, str) or not op:
      raise ValueError(f'{where}: node {n!r} has no `op` string attribute '
                       f'(got {op!r}); every node needs one.')
  if not nx.is_directed_acyclic_graph(g):
    cycle = nx.find_cycle(g)
    raise ValueError(f'{where}: the graph has a cycle {cycle}; architecture '
                     'graphs must be DAGs.')


def graph_to_arrays(g: nx.DiGraph, vocab: OpVocab,
                    strict: bool = False) -> dict[str, np.ndarray]:
  """Node op ids, numeric features and edge index arrays of one graph.

  Nodes are numbered in topological order, so the arrays do not depend on
  node ids.

  Args:
    g: architecture DAG (validated).
    vocab: op vocabulary.
    strict: raise on unknown ops instead of using the unknown slot.

  Returns:
    dict with `op` int32[n], `feat` float32[n, NUM_NODE_FEATURES],
    `senders`/`receivers` int32[e].
  """
  validate_graph(g)
  order = list(nx.lexicographical_topological_sort(g, key=str))
  index = {n: i for i, n in enumerate(order)}
  ops = np.array([vocab.id(g.nodes[n]['op'], strict) for n in order],
                 np.int32)
  feat = np.zeros((len(order), NUM_NODE_FEATURES), np.float32)
  for i, n in enumerate(order):
    a = g.nodes[n]
    shape = a.get('shape') or ()
    feat[i, 0] = math.log1p(float(np.prod(shape))) if shape else 0.0
    feat[i, 1] = math.log1p(float(a.get('param_size', 0) or 0))
    feat[i, 2] = len(shape)
    feat[i, 3] = math.log1p(g.in_degree(n))
    feat[i, 4] = math.log1p(g.out_degree(n))
  edges = np.array([(index[u], index[v]) for u, v in g.edges()],
                   np.int32).reshape(-1, 2)
  return dict(op=ops, feat=feat, senders=edges[:, 0], receivers=edges[:, 1])


def to_graphs_tuple(graphs: Sequence[nx.DiGraph] | Sequence[dict[str, Any]],
                    vocab: OpVocab | None = None,
                    strict: bool = False) -> jraph.GraphsTuple:
  """Batches DAGs (or their `graph_to_arrays` dicts) into one GraphsTuple.

  Nodes are `{'op': int32[N], 'feat': float32[N, F]}`; there are no edge
  features and globals are zeros of shape [G, 1] (so `pad_with_graphs`
  works). Unknown ops go to the vocabulary's unknown slot (logged) unless
  `strict`.
  """
  arrays = []
  unknown = 0
  for i, g in enumerate(graphs):
    if isinstance(g, dict):
      arrays.append(g)
      continue
    if vocab is None:
      raise ValueError('to_graphs_tuple needs a vocab to encode networkx '
                       'graphs.')
    try:
      a = graph_to_arrays(g, vocab, strict)
    except ValueError as e:
      raise ValueError(f'graph {i}: {e}') from None
    unknown += int((a['op'] == 0).sum())
    arrays.append(a)
  if not arrays:
    raise ValueError('to_graphs_tuple: no graphs given.')
  if unknown:
    logging.info('to_graphs_tuple: %d nodes had ops outside the vocabulary '
                 'and use the unknown-op slot.', unknown)
  n_node = np.array([len(a['op']) for a in arrays], np.int32)
  n_edge = np.array([len(a['senders']) for a in arrays], np.int32)
  offsets = np.concatenate([[0], np.cumsum(n_node)[:-1]]).astype(np.int32)
  senders = np.concatenate(
      [a['senders'] + o for a, o in zip(arrays, offsets)]).astype(np.int32)
  receivers = np.concatenate(
      [a['receivers'] + o for a, o in zip(arrays, offsets)]).astype(np.int32)
  nodes = dict(op=np.concatenate([a['op'] for a in arrays]).astype(np.int32),
               feat=np.concatenate([a['feat'] for a in arrays]).astype(
                   np.float32))
  return jraph.GraphsTuple(
      nodes=nodes, edges=None, senders=senders, receivers=receivers,
      n_node=n_node, n_edge=n_edge,
      globals=np.zeros((len(arrays), 1), np.float32))


def padding_budget(n_nodes: Sequence[int], n_edges: Sequence[int],
                   batch_size: int, multiple: int = 64) -> tuple[int, int, int]:
  """A static `(n_node, n_edge, n_graph)` that fits any `batch_size` graphs.

  Sized for the worst batch (the `batch_size` largest graphs) plus the one
  padding graph jraph needs, rounded up to `multiple`, so one compiled
  function serves every batch.
  """
  nn_ = sorted(n_nodes, reverse=True)[:batch_size]
  ne_ = sorted(n_edges, reverse=True)[:batch_size]
  up = lambda v: int(math.ceil((v + 1) / multiple) * multiple)
  return up(sum(nn_)), up(sum(ne_)), batch_size + 1


def pad_graphs(batch: jraph.GraphsTuple, n_node: int, n_edge: int,
               n_graph: int) -> jraph.GraphsTuple:
  """`jraph.pad_with_graphs` with a clear error when the budget is too small."""
  have_n, have_e, have_g = (int(np.sum(batch.n_node)),
                            int(np.sum(batch.n_edge)), len(batch.n_node))
  if have_n + 1 > n_node or have_e > n_edge or have_g + 1 > n_graph:
    raise ValueError(
        f'Padding budget too small: batch has {have_n} nodes, {have_e} edges, '
        f'{have_g} graphs; budget is n_node={n_node} (needs >= {have_n + 1}), '
        f'n_edge={n_edge} (needs >= {have_e}), n_graph={n_graph} (needs >= '
        f'{have_g + 1}).')
  return jraph.pad_with_graphs(batch, n_node, n_edge, n_graph)


def batches(arrays: Sequence[dict[str, Any]], batch_size: int,
            budget: tuple[int, int, int] | None = None):
  """Yields `(padded GraphsTuple, n_real_graphs)` over `arrays` in order.

  Every batch has the same padded shape (`budget`, by default the worst-case
  budget for `batch_size`), so a jitted encoder compiles once.
  """
  if budget is None:
    budget = padding_budget([len(a['op']) for a in arrays],
                            [len(a['senders']) for a in arrays], batch_size)
  for start in range(0, len(arrays), batch_size):
    chunk = arrays[start:start + batch_size]
    yield pad_graphs(to_graphs_tuple(chunk), *budget), len(chunk)


class DenseGraphs(NamedTuple):
  """Small graphs batched densely: each padded to one size, with an adjacency.

  For graphs of a few nodes (NAS cells) sums weighted by the adjacency
  matrix are cheaper than gathers and scatter-adds over a flat edge list.

  Attributes:
    op: int32[G, n] op ids (0 on padding nodes).
    feat: float32[G, n, NUM_NODE_FEATURES] node features (0 on padding).
    adjacency: float32[G, n, n]; `adjacency[g, s, r]` counts the edges
      s -> r of graph g.
    n_node: int32[G] real nodes per graph (its nodes come first); 0 for the
      padding graphs that fill a batch.
  """
  op: np.ndarray
  feat: np.ndarray
  adjacency: np.ndarray
  n_node: np.ndarray


def to_dense(arrays: Sequence[dict[str, Any]], n_node: int,
             n_graph: int | None = None) -> DenseGraphs:
  """Pads `graph_to_arrays` dicts into a `DenseGraphs` of static shape.

  Args:
    arrays: the graphs.
    n_node: nodes per graph after padding.
    n_graph: graphs per batch after padding (default `len(arrays)`).

  Returns:
    A `DenseGraphs` with `n_graph` graphs of `n_node` nodes.

  Raises:
    ValueError: no graphs, a graph with more than `n_node` nodes, or more
      than `n_graph` graphs.
  """
  if not arrays:
    raise ValueError('to_dense: no graphs given.')
  n_graph = len(arrays) if n_graph is None else n_graph
  if len(arrays) > n_graph:
    raise ValueError(f'Padding budget too small: {len(arrays)} graphs, budget '
                     f'is n_graph={n_graph}.')
  op = np.zeros((n_graph, n_node), np.int32)
  feat = np.zeros((n_graph, n_node, NUM_NODE_FEATURES), np.float32)
  adjacency = np.zeros((n_graph, n_node, n_node), np.float32)
  sizes = np.zeros(n_graph, np.int32)
  for i, a in enumerate(arrays):
    n = len(a['op'])
    if n > n_node:
      raise ValueError(f'Padding budget too small: graph {i} has {n} nodes, '
                       f'budget is n_node={n_node} per graph.')
    op[i, :n] = a['op']
    feat[i, :n] = a['feat']
    np.add.at(adjacency[i], (a['senders'], a['receivers']), 1.0)
    sizes[i] = n
  return DenseGraphs(op, feat, adjacency, sizes)


def dense_batches(arrays: Sequence[dict[str, Any]], batch_size: int,
                  n_node: int | None = None):
  """Yields `(DenseGraphs, n_real_graphs)` over `arrays` in order.

  Every batch has `batch_size` graphs of `n_node` nodes (default: the
  largest graph), so a jitted encoder compiles once.
  """
  if n_node is None:
    n_node = max(len(a['op']) for a in arrays)
  for start in range(0, len(arrays), batch_size):
    chunk = arrays[start:start + batch_size]
    yield to_dense(chunk, n_node, batch_size), len(chunk)


# ---------------------------------------------------------------- file I/O


def _jsonable(v: Any) -> Any:
  if isinstance(v, tuple):
    return [_jsonable(x) for x in v]
  if isinstance(v, list):
    return [_jsonable(x) for x in v]
  if isinstance(v, dict):
    return {str(k): _jsonable(x) for k, x in v.items()}
  if isinstance(v, (np.integer,)):
    return int(v)
  if isinstance(v, (np.floating,)):
    return float(v)
  return v


def _decode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
  out = dict(attrs)
  for k in _LIST_ATTRS:
    if isinstance(out.get(k), str):
      out[k] = json.loads(out[k])
  if isinstance(out.get('shape'), list):
    out['shape'] = tuple(out['shape'])
  for k in ('params', 'state'):
    if isinstance(out.get(k), list):
      out[k] = tuple(out[k])
  return out


def write_graph(g: nx.DiGraph, path: str | os.PathLike[str]) -> None:
  """Writes `g` as `.json` or `.graphml` (chosen by the file extension)."""
  path = os.fspath(path)
  validate_graph(g, path)
  ids = {n: str(n) for n in g.nodes}
  if path.endswith('.json'):
    extra = {k: _jsonable(g.graph[k]) for k in _GRAPH_ATTRS if k in g.graph}
    if 'outputs' in extra:
      extra['outputs'] = [ids[n] for n in g.graph['outputs'] if n in ids]
    doc = dict(format=JSON_FORMAT, version=1, name=str(g.graph.get('name', '')),
               graph=extra,
               nodes=[dict(id=ids[n], **_jsonable(dict(a)))
                      for n, a in g.nodes(data=True)],
               edges=[[ids[u], ids[v]] for u, v in g.edges()])
    with open(path, 'w') as f:
      json.dump(doc, f)
  elif path.endswith('.graphml'):
    h = nx.DiGraph(name=str(g.graph.get('name', '')))
    for k in _GRAPH_ATTRS:
      if k in g.graph:
        v = g.graph[k]
        if k == 'outputs':
          v = [ids[n] for n in v if n in ids]
        h.graph[k] = json.dumps(_jsonable(v))
    for n, a in g.nodes(data=True):
      enc = {}
      for k, v in a.items():
        v = _jsonable(v)
        enc[k] = json.dumps(v) if isinstance(v, (list, dict)) else v
      h.add_node(ids[n], **enc)
    h.add_edges_from((ids[u], ids[v]) for u, v in g.edges())
    nx.write_graphml(h, path)
  else:
    raise ValueError(f'{path}: unknown graph file extension; use .json or '
                     '.graphml.')


def read_graph(path: str | os.PathLike[str]) -> nx.DiGraph:
  """Reads a `.json` or `.graphml` architecture graph and validates it.

  Raises:
    ValueError: unknown extension, malformed file, empty or cyclic graph, a
      node without `op`, or an edge naming a missing node.
  """
  path = os.fspath(path)
  if path.endswith('.json'):
    try:
      with open(path) as f:
        doc = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: not valid JSON ({e}).') from None
    if not isinstance(doc, dict) or doc.get('format') != JSON_FORMAT:
      raise ValueError(f'{path}: expected a JSON object with "format": '
                       f'"{JSON_FORMAT}".')
    g = nx.DiGraph(name=doc.get('name', ''))
    extra = doc.get('graph', {})
    if not isinstance(extra, dict):
      raise ValueError(f'{path}: "graph" must be an object, got {extra!r}.')
    for k in _GRAPH_ATTRS:
      if k in extra:
        g.graph[k] = extra[k]
    for i, node in enumerate(doc.get('nodes', [])):
      if not isinstance(node, dict) or 'id' not in node:
        raise ValueError(f'{path}: nodes[{i}] needs an "id" key.')
      attrs = {k: v for k, v in node.items() if k != 'id'}
      g.add_node(node['id'], **_decode_attrs(attrs))
    for i, e in enumerate(doc.get('edges', [])):
      if not (isinstance(e, list) and len(e) == 2):
        raise ValueError(f'{path}: edges[{i}] must be [source, target], got '
                         f'{e!r}.')
      for end in e:
        if end not in g:
          raise ValueError(f'{path}: edges[{i}] names node {end!r}, which is '
                           'not in "nodes".')
      g.add_edge(e[0], e[1])
  elif path.endswith('.graphml'):
    try:
      raw = nx.read_graphml(path)
    except Exception as e:  # networkx raises several parser error types.
      raise ValueError(f'{path}: not a readable GraphML file ({e}).') from None
    if not raw.is_directed():
      raise ValueError(f'{path}: the GraphML graph is undirected; '
                       'architecture graphs must be directed.')
    g = nx.DiGraph(name=raw.graph.get('name', ''))
    for k in _GRAPH_ATTRS:
      if isinstance(raw.graph.get(k), str):
        g.graph[k] = json.loads(raw.graph[k])
    for n, a in raw.nodes(data=True):
      g.add_node(n, **_decode_attrs(a))
    g.add_edges_from(raw.edges())
  else:
    raise ValueError(f'{path}: unknown graph file extension; use .json or '
                     '.graphml.')
  if 'outputs' in g.graph:
    g.graph['outputs'] = tuple(g.graph['outputs'])
  validate_graph(g, path)
  return g
