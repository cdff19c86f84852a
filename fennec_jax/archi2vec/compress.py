"""Exact compression of repeated structure, and gather-only (ELL) batches.

The encoder's state of a node after k layers depends only on the node's
k-hop neighbourhood seen through the layers: its own op and features, and
the multisets of its predecessors' and successors' states after k - 1
layers. Nodes whose colours agree under k rounds of this refinement (the
directed Weisfeiler-Lehman colouring, started from the exact op id and
feature bits) therefore have bitwise-equal inputs to layer k, so layer k
needs to run once per colour class, not once per node. Traced networks
repeat blocks: ResNet-152's 1,758 nodes have 158 / 200 / 251 / 306 classes
after 1 / 2 / 3 / 4 rounds, ViT-L/16's 1,998 nodes 83 / 111 / 145 / 191, so
a 4-layer encoder runs 7-15x fewer rows; the readout weighs each class by
its node count.

Colours are comparable across graphs too: `colour_ids` numbers the classes
of many compressed graphs jointly (the same refinement keyed by the
neighbours' joint ids), and `shared_batches` runs each distinct class of a
batch once, however many graphs hold it (ResNet-50/101/152 share their
blocks, the ViT and DeiT variants their layers); the readout then sums
(row, graph, count) pairs.

Neighbour sums are gathers from a padded per-row table of neighbour rows
(ELL layout; traced DAGs have in- and out-degrees of 1-4), with no
scatter-add: a pad entry reads an all-zero row appended to the states.
Nodes of degree above `max_degree` keep their own class (they are never
merged) and their edges beyond the table go to a short overflow list summed
by a sorted `segment_sum`.

Host side (numpy), per graph once: `compress(arrays, num_layers)`; then
`batch(compressed, budget)` pads a list of them to a static `Budget`, so a
jitted encoder compiles once per budget. `gnn.GraphEncoder` takes the
resulting `CompressedGraphs` and returns the embeddings the per-node paths
give (up to float summation order).
"""

from collections.abc import Sequence
import math
from typing import Any, NamedTuple

import numpy as np

# Widest neighbour table; rarer higher degrees use the overflow list.
MAX_DEGREE = 8


class Compressed(NamedTuple):
  """One graph's colour classes per level (host arrays, unpadded).

  Level 0 rows are classes of (op, features); level k >= 1 rows are the
  classes after k refinement rounds, each represented by one node.

  Attributes:
    op: int32[n0] op id of each level-0 class.
    feat: float32[n0, F] its features.
    own: per level k >= 1, int32[nk]: the level-(k-1) class of the row.
    preds: per level, int32[nk, d_in]: level-(k-1) classes of the row's
      first `d_in` predecessors, -1 where there are fewer.
    succs: per level, int32[nk, d_out]: the same for successors.
    extra_in: per level, int32[q, 2]: (row, level-(k-1) class) of the
      predecessors beyond the table (rows of degree > `max_degree`).
    extra_out: per level, int32[q, 2]: the same for successors.
    in_degree: per level, float32[nk].
    out_degree: per level, float32[nk].
    count: per level, float32[nk] nodes in each class.
    n_node: nodes of the graph.
  """
  op: np.ndarray
  feat: np.ndarray
  own: tuple[np.ndarray, ...]
  preds: tuple[np.ndarray, ...]
  succs: tuple[np.ndarray, ...]
  extra_in: tuple[np.ndarray, ...]
  extra_out: tuple[np.ndarray, ...]
  in_degree: tuple[np.ndarray, ...]
  out_degree: tuple[np.ndarray, ...]
  count: tuple[np.ndarray, ...]
  n_node: int

  def rows(self) -> tuple[int, ...]:
    """Classes per level, level 0 first."""
    return (len(self.op),) + tuple(len(o) for o in self.own)


def _table(dst: np.ndarray, src: np.ndarray, n: int, width: int
           ) -> tuple[np.ndarray, np.ndarray]:
  """`[n, width]` table of each node's `src` neighbours (-1 padded), and the
  `(node, neighbour)` pairs that did not fit."""
  order = np.argsort(dst, kind='stable')
  d, s = dst[order], src[order]
  start = np.searchsorted(d, np.arange(n))
  pos = np.arange(len(d)) - start[d]
  table = np.full((n, width), -1, np.int64)
  fit = pos < width
  table[d[fit], pos[fit]] = s[fit]
  return table, np.stack([d[~fit], s[~fit]], 1)


def _classes(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(first node of each distinct row of `key`, class of every node)."""
  # Columns of small values are packed several to an int64 (exactly: each
  # gets the bits its range needs), so the sort below has fewer keys.
  key = key - key.min(0)
  bits = max(int(key.max()).bit_length(), 1)
  per = max(62 // bits, 1)
  if per > 1:
    packed = np.zeros((len(key), -(-key.shape[1] // per)), np.int64)
    for j in range(key.shape[1]):
      packed[:, j // per] = (packed[:, j // per] << bits) | key[:, j]
    key = packed
  # A stable lexicographic sort (first column most significant; faster
  # than np.unique(axis=0)); a class starts where a sorted row changes.
  order = np.lexsort(key.T[::-1])
  rows = key[order]
  starts = np.ones(len(rows), bool)
  starts[1:] = (rows[1:] != rows[:-1]).any(1)
  inverse = np.empty(len(rows), np.int64)
  inverse[order] = np.cumsum(starts) - 1
  first = order[starts]  # Stable: the smallest node of each class.
  # Number classes by first occurrence (a stable order; any order is exact).
  relabel = np.empty(len(first), np.int64)
  by_first = np.argsort(first)
  relabel[by_first] = np.arange(len(first))
  return first[by_first], relabel[inverse]


def compress(arrays: dict[str, np.ndarray], num_layers: int,
             max_degree: int = MAX_DEGREE, where: str = 'graph'
             ) -> Compressed:
  """Colour classes of one `graphs.graph_to_arrays` graph for `num_layers`.

  Raises:
    ValueError: (naming `where`) for an empty graph or edges naming nodes
      outside it.
  """
  op = np.asarray(arrays['op'])
  feat = np.asarray(arrays['feat'], np.float32)
  senders = np.asarray(arrays['senders'], np.int64)
  receivers = np.asarray(arrays['receivers'], np.int64)
  n = len(op)
  if n == 0:
    raise ValueError(f'{where}: the graph is empty (no nodes); nothing to '
                     'encode.')
  if len(senders) and (min(senders.min(), receivers.min()) < 0 or
                       max(senders.max(), receivers.max()) >= n):
    raise ValueError(f'{where}: an edge names a node outside 0..{n - 1}.')
  in_deg = np.bincount(receivers, minlength=n)
  out_deg = np.bincount(senders, minlength=n)
  d_in = int(min(max(in_deg.max(), 1), max_degree))
  d_out = int(min(max(out_deg.max(), 1), max_degree))
  in_tab, in_over = _table(receivers, senders, n, d_in)
  out_tab, out_over = _table(senders, receivers, n, d_out)
  # Nodes with overflowing edges are never merged with others.
  alone = np.where((in_deg > max_degree) | (out_deg > max_degree),
                   np.arange(n), -1)
  bits = np.ascontiguousarray(feat).view(np.int32).astype(np.int64)
  first, cls = _classes(np.concatenate([op[:, None].astype(np.int64), bits,
                                        alone[:, None]], 1))
  out = dict(op=op[first].astype(np.int32), feat=feat[first], own=[],
             preds=[], succs=[], extra_in=[], extra_out=[], in_degree=[],
             out_degree=[], count=[])
  stable = len(first) == n
  for _ in range(num_layers):
    if stable:  # A round that splits no class splits none later either.
      new = cls
    else:
      pin = np.sort(np.where(in_tab >= 0, cls[in_tab], -1), 1)
      pout = np.sort(np.where(out_tab >= 0, cls[out_tab], -1), 1)
      previous = len(first)
      first, new = _classes(np.concatenate(
          [cls[:, None], pin, pout, alone[:, None]], 1))
      stable = len(first) == previous
    row_of = np.full(n, -1, np.int64)
    row_of[first] = np.arange(len(first))
    out['own'].append(cls[first].astype(np.int32))
    rep_in, rep_out = in_tab[first], out_tab[first]
    out['preds'].append(np.where(rep_in >= 0, cls[rep_in], -1).astype(
        np.int32))
    out['succs'].append(np.where(rep_out >= 0, cls[rep_out], -1).astype(
        np.int32))
    for name, over in (('extra_in', in_over), ('extra_out', out_over)):
      rows = row_of[over[:, 0]]
      keep = rows >= 0  # Overflowing nodes are alone, so each is a row.
      out[name].append(np.stack([rows[keep], cls[over[keep, 1]]], 1).astype(
          np.int32).reshape(-1, 2))
    out['in_degree'].append(in_deg[first].astype(np.float32))
    out['out_degree'].append(out_deg[first].astype(np.float32))
    out['count'].append(np.bincount(new, minlength=len(first)).astype(
        np.float32))
    cls = new
  return Compressed(n_node=n, **{k: (tuple(v) if isinstance(v, list) else v)
                                 for k, v in out.items()})


class Budget(NamedTuple):
  """Static shape of a `CompressedGraphs` batch (one compile each).

  Attributes:
    rows: rows per level (level 0 first).
    d_in: predecessor table width.
    d_out: successor table width.
    extra: overflow entries per level and direction.
    n_graph: graphs, including at least one padding graph.
    pairs: readout (row, graph) pairs per level k >= 1 of shared batches
      (`shared_batches`); () for per-graph batches, one pair per row.
  """
  rows: tuple[int, ...]
  d_in: int
  d_out: int
  extra: int
  n_graph: int
  pairs: tuple[int, ...] = ()


class CompressedGraphs(NamedTuple):
  """A padded batch of `Compressed` graphs (a pytree of arrays).

  Fields as in `Compressed`, concatenated over graphs with row offsets;
  table pads point at row `rows[k-1]` of the previous level, the all-zero
  row the encoder appends. The readout sums, per level, `count` times the
  state of row `member` into graph `graph` (ascending; padding pairs in the
  last, padding, graph): one pair per row in per-graph batches, one per
  (class, graph holding it) in shared ones. `n_node`: int32[n_graph], 0 for
  padding graphs.
  """
  op: Any
  feat: Any
  own: tuple[Any, ...]
  preds: tuple[Any, ...]
  succs: tuple[Any, ...]
  extra_in: tuple[Any, ...]
  extra_out: tuple[Any, ...]
  in_degree: tuple[Any, ...]
  out_degree: tuple[Any, ...]
  count: tuple[Any, ...]
  graph: tuple[Any, ...]
  n_node: Any
  member: tuple[Any, ...]

  @property
  def num_layers(self) -> int:
    return len(self.own)


def _need(items: Sequence[Compressed]) -> tuple[tuple[int, ...], int, int,
                                                 int, int]:
  rows = tuple(sum(r) for r in zip(*(c.rows() for c in items)))
  d_in = max(p.shape[1] for c in items for p in c.preds)
  d_out = max(p.shape[1] for c in items for p in c.succs)
  extra = max(sum(len(c.extra_in[k]) for c in items) for k in
              range(len(items[0].own)))
  extra = max(extra, max(sum(len(c.extra_out[k]) for c in items) for k in
                         range(len(items[0].own))))
  return rows, d_in, d_out, extra, len(items)


def _fits(need, budget: Budget) -> bool:
  rows, d_in, d_out, extra, n = need
  return (all(r <= b for r, b in zip(rows, budget.rows)) and
          d_in <= budget.d_in and d_out <= budget.d_out and
          extra <= budget.extra and n + 1 <= budget.n_graph)


def budget_for(items: Sequence[Compressed], batch_size: int,
               multiple: int = 64) -> Budget:
  """A `Budget` that fits any `batch_size` of `items` (worst case)."""
  if not items:
    raise ValueError('budget_for: no graphs given.')
  up = lambda v: int(math.ceil(v / multiple) * multiple)
  levels = list(zip(*(c.rows() for c in items)))
  rows = tuple(up(sum(sorted(r, reverse=True)[:batch_size])) for r in levels)
  most = sorted((max(len(e) for e in c.extra_in + c.extra_out)
                 for c in items), reverse=True)
  extra = up(sum(most[:batch_size]))
  return Budget(rows, max(p.shape[1] for c in items for p in c.preds),
                max(p.shape[1] for c in items for p in c.succs), extra,
                batch_size + 1)


def _check_items(items: Sequence['Compressed'], caller: str) -> None:
  """Raises ValueError (named after `caller`) for no graphs, or graphs
  compressed for different layer counts."""
  if not items:
    raise ValueError(f'{caller}: no graphs given.')
  layers = {len(c.own) for c in items}
  if len(layers) != 1:
    raise ValueError(f'{caller}: graphs compressed for different layer '
                     f'counts {sorted(layers)}.')


def batch(items: Sequence[Compressed], budget: Budget) -> CompressedGraphs:
  """Pads and concatenates compressed graphs into one static-shape batch.

  Raises:
    ValueError: no graphs, graphs compressed for different layer counts, or
      a batch over `budget` (the message names the budget and the need).
  """
  _check_items(items, 'batch')
  need = _need(items)
  if len(budget.rows) != len(need[0]) or not _fits(need, budget):
    raise ValueError(
        f'Padding budget too small: the batch needs rows per level '
        f'{need[0]}, d_in={need[1]}, d_out={need[2]}, '
        f'extra={need[3]}, {need[4]} graphs (+1 padding graph); the budget '
        f'is {budget}.')
  g = budget.n_graph
  rows = budget.rows
  pad_row = lambda v, k, fill, shape=(): np.concatenate(
      [v, np.full((rows[k] - len(v),) + shape, fill, v.dtype)])
  offsets = np.cumsum([[0] * len(rows)] + [c.rows() for c in items], 0)
  op = pad_row(np.concatenate([c.op for c in items]), 0, 0)
  feat = pad_row(np.concatenate([c.feat for c in items]), 0, 0.0,
                 items[0].feat.shape[1:])
  fields = {k: [] for k in ('own', 'preds', 'succs', 'extra_in', 'extra_out',
                            'in_degree', 'out_degree', 'count', 'graph')}
  for k in range(1, len(rows)):
    prev_pad = rows[k - 1]  # The zero row the encoder appends.
    shift = lambda v, i: np.where(v >= 0, v + offsets[i][k - 1], prev_pad)
    fields['own'].append(pad_row(np.concatenate(
        [shift(c.own[k - 1], i) for i, c in enumerate(items)]), k, 0))
    for name, width in (('preds', budget.d_in), ('succs', budget.d_out)):
      parts = []
      for i, c in enumerate(items):
        v = shift(getattr(c, name)[k - 1], i)
        parts.append(np.pad(v, ((0, 0), (0, width - v.shape[1])),
                            constant_values=prev_pad))
      fields[name].append(pad_row(np.concatenate(parts), k, prev_pad,
                                  (width,)).astype(np.int32))
    for name in ('extra_in', 'extra_out'):
      v = np.concatenate([getattr(c, name)[k - 1] + [offsets[i][k],
                                                     offsets[i][k - 1]]
                          for i, c in enumerate(items)]).reshape(-1, 2)
      # Pads add the zero row to the last row (keeps rows ascending).
      pad = np.tile([[rows[k] - 1, prev_pad]], (budget.extra - len(v), 1))
      fields[name].append(np.concatenate([v, pad]).astype(np.int32))
    for name in ('in_degree', 'out_degree', 'count'):
      fields[name].append(pad_row(np.concatenate(
          [getattr(c, name)[k - 1] for c in items]), k, 0.0))
    fields['graph'].append(pad_row(np.concatenate(
        [np.full(c.rows()[k], i, np.int32) for i, c in enumerate(items)]),
                                   k, g - 1))
  n_node = np.zeros(g, np.int32)
  n_node[:len(items)] = [c.n_node for c in items]
  member = tuple(np.arange(r, dtype=np.int32) for r in rows[1:])
  return CompressedGraphs(op=op, feat=feat, n_node=n_node, member=member,
                          **{k: tuple(v) for k, v in fields.items()})


def batches(items: Sequence[Compressed], budget: Budget):
  """Yields `(CompressedGraphs, n_real_graphs)`, packing greedily in order.

  Each batch takes as many consecutive graphs as fit `budget`.

  Raises:
    ValueError: a single graph over the budget (naming it and the budget).
  """
  chunk: list[Compressed] = []
  for i, c in enumerate(items):
    if not _fits(_need([c]), budget):
      raise ValueError(f'graph {i} does not fit the padding budget {budget} '
                       f'alone: it needs rows per level {c.rows()}.')
    if chunk and not _fits(_need(chunk + [c]), budget):
      yield batch(chunk, budget), len(chunk)
      chunk = []
    chunk.append(c)
  if chunk:
    yield batch(chunk, budget), len(chunk)


def packing_budget(items: Sequence[Compressed], rows: int,
                   n_graph: int | None = None, multiple: int = 64) -> Budget:
  """A `Budget` of about `rows` rows in the widest level, for packing.

  Levels get rows in proportion to their totals over `items` (plus room for
  the largest graph), so greedily packed batches fill every level about
  equally, and no more than all of `items` need (padding rows cost as much
  as real ones); `n_graph` defaults to as many graphs as the smallest would
  fit.
  """
  if not items:
    raise ValueError('packing_budget: no graphs given.')
  up = lambda v: int(math.ceil(v / multiple) * multiple)
  levels = np.array([c.rows() for c in items], np.int64)
  totals = levels.sum(0)
  share = totals / totals.max()
  sizes = tuple(up(min(rows * s + m, t)) for s, m, t in
                zip(share, levels.max(0), totals))
  if n_graph is None:
    n_graph = int(max(sizes) // max(levels.max(1).min(), 1)) + 2
  n_graph = min(n_graph, len(items) + 1)
  most = max(max(len(e) for e in c.extra_in + c.extra_out) for c in items)
  return Budget(sizes, max(p.shape[1] for c in items for p in c.preds),
                max(p.shape[1] for c in items for p in c.succs),
                up(most * 4) if most else 0, n_graph)


def _bits(feat: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(feat, np.float32).view(np.int32).astype(
      np.int64)


def _alone(c: Compressed, k: int) -> np.ndarray:
  """Rows of level k + 1 with edges beyond their table (overflowing)."""
  return ((c.in_degree[k] > c.preds[k].shape[1]) |
          (c.out_degree[k] > c.succs[k].shape[1]))


def _widen(table: np.ndarray, width: int, fill: int) -> np.ndarray:
  """`table` with columns of `fill` added up to `width` (np.pad is slow)."""
  out = np.full((len(table), width), fill, np.int64)
  out[:, :table.shape[1]] = table
  return out


def _neighbour_ids(table: np.ndarray, prev: np.ndarray, width: int
                   ) -> np.ndarray:
  """Sorted joint ids of a table's entries, -1 padded to `width`."""
  ids = _widen(np.where(table >= 0, prev[np.maximum(table, 0)], -1), width,
               -1)
  return np.sort(ids, 1)


def colour_ids(items: Sequence[Compressed]) -> list[tuple[np.ndarray, ...]]:
  """Joint colour ids of the rows of many compressed graphs, per level.

  Rows of any graphs get the same id at level k exactly when their layer-k
  inputs are provably equal: level 0 by (op, feature bits), level k by the
  level-(k-1) ids of the row's own class and of its sorted predecessors
  and successors. Overflowing (hub) rows get ids of their own. Ids are
  dense, 0..(distinct classes - 1) per level.

  Returns:
    per graph, per level (level 0 first), int64[rows] ids.

  Raises:
    ValueError: no graphs, or graphs compressed for different layer counts.
  """
  _check_items(items, 'colour_ids')
  split = np.cumsum([len(c.op) for c in items])[:-1]
  key = np.concatenate([np.concatenate([c.op[:, None].astype(np.int64),
                                        _bits(c.feat)], 1) for c in items])
  ids = [[v] for v in np.split(_classes(key)[1], split)]
  for k in range(len(items[0].own)):
    own = [prev[-1][c.own[k]] for c, prev in zip(items, ids)]
    flat = np.concatenate(own)
    distinct = int(flat.max()) + 1
    if len(flat) == distinct and np.bincount(flat).max() == 1:
      # Each class of the previous level is one row here: nothing splits,
      # and nothing merges that differed before (e.g. continuous features).
      for prev, v in zip(ids, own):
        prev.append(v)
      continue
    d_in = max(c.preds[k].shape[1] for c in items)
    d_out = max(c.succs[k].shape[1] for c in items)
    key = np.concatenate([np.concatenate([
        o[:, None],
        _neighbour_ids(c.preds[k], prev[-1], d_in),
        _neighbour_ids(c.succs[k], prev[-1], d_out),
        _alone(c, k)[:, None]], 1) for c, prev, o in zip(items, ids, own)])
    # Overflowing rows are keyed by their position: never merged.
    key[:, -1] = np.where(key[:, -1] > 0, np.arange(len(key)), -1)
    split = np.cumsum([len(c.own[k]) for c in items])[:-1]
    for prev, v in zip(ids, np.split(_classes(key)[1], split)):
      prev.append(v)
  return [tuple(v) for v in ids]


def shared_batch(items: Sequence[Compressed],
                 ids: Sequence[tuple[np.ndarray, ...]],
                 budget: Budget) -> CompressedGraphs:
  """One static-shape batch with one row per distinct joint colour.

  Args:
    items: the batch's compressed graphs.
    ids: their `colour_ids` (computed over these graphs or any superset).
    budget: a `Budget` with `pairs` (`sharing_budget`).

  Raises:
    ValueError: a batch over `budget` (the message names both).
  """
  if not items or len(items) != len(ids):
    raise ValueError(f'shared_batch: {len(items)} graphs and {len(ids)} '
                     'colour id lists given.')
  need = _shared_need(items, ids)
  if not _shared_fits(need, budget):
    raise ValueError(
        f'Padding budget too small: the shared batch needs rows per level '
        f'{need[0]}, pairs {need[1]}, d_in={need[2]}, d_out={need[3]}, '
        f'extra={need[4]}, {need[5]} graphs (+1 padding graph); the budget '
        f'is {budget}.')
  g, rows = budget.n_graph, budget.rows
  cat = lambda f: np.concatenate([f(c, i) for i, c in enumerate(items)])
  # Per level: sorted distinct ids (the batch's rows) and each one's first
  # holder, as an index into the concatenated rows of all graphs.
  uniq, first = zip(*(np.unique(cat(lambda c, i, k=k: ids[i][k]),
                                return_index=True)
                      for k in range(len(rows))))
  pad = lambda v, k, fill: np.concatenate(
      [v, np.full((rows[k] - len(v),) + v.shape[1:], fill, v.dtype)])
  op = pad(cat(lambda c, i: c.op)[first[0]], 0, 0)
  feat = pad(cat(lambda c, i: c.feat)[first[0]], 0, 0.0)
  fields = {k: [] for k in ('own', 'preds', 'succs', 'extra_in', 'extra_out',
                            'in_degree', 'out_degree', 'count', 'graph',
                            'member')}
  for k in range(1, len(rows)):
    prev_pad = rows[k - 1]
    # Batch row of each graph's level-(k-1) / level-k classes.
    at_prev = [np.searchsorted(uniq[k - 1], v[k - 1]) for v in ids]
    at = [np.searchsorted(uniq[k], v[k]) for v in ids]
    fields['own'].append(pad(cat(
        lambda c, i: at_prev[i][c.own[k - 1]])[first[k]], k, 0).astype(
            np.int32))
    for name, width in (('preds', budget.d_in), ('succs', budget.d_out)):
      def table(c, i, name=name, width=width):
        t = getattr(c, name)[k - 1]
        return _widen(np.where(t >= 0, at_prev[i][np.maximum(t, 0)],
                               prev_pad), width, prev_pad)
      fields[name].append(pad(cat(table)[first[k]], k, prev_pad).astype(
          np.int32))
    for name in ('extra_in', 'extra_out'):
      # Only overflowing rows have extras, and they are never shared.
      v = cat(lambda c, i, name=name: np.stack(
          [at[i][getattr(c, name)[k - 1][:, 0]],
           at_prev[i][getattr(c, name)[k - 1][:, 1]]], 1).reshape(-1, 2))
      fill = np.tile([[rows[k] - 1, prev_pad]], (budget.extra - len(v), 1))
      fields[name].append(np.concatenate([v, fill]).astype(np.int32))
    for name in ('in_degree', 'out_degree'):
      fields[name].append(pad(cat(
          lambda c, i, name=name: getattr(c, name)[k - 1])[first[k]], k, 0.0))
    pairs = budget.pairs[k - 1]
    pad_pair = lambda v, fill: np.concatenate(
        [v, np.full(pairs - len(v), fill, v.dtype)])
    fields['member'].append(pad_pair(cat(lambda c, i: at[i]), 0).astype(
        np.int32))
    fields['graph'].append(pad_pair(cat(lambda c, i: np.full(
        len(at[i]), i, np.int32)), g - 1))
    fields['count'].append(pad_pair(cat(lambda c, i: c.count[k - 1]), 0.0))
  n_node = np.zeros(g, np.int32)
  n_node[:len(items)] = [c.n_node for c in items]
  return CompressedGraphs(op=op, feat=feat, n_node=n_node,
                          **{k: tuple(v) for k, v in fields.items()})


def shared_rows(items: Sequence[Compressed],
                ids: Sequence[tuple[np.ndarray, ...]]) -> tuple[int, ...]:
  """Rows each layer runs when `items` share their colour classes in one
  batch (`colour_ids` of them): the distinct classes per level."""
  return _shared_need(items, ids)[0]


def _shared_need(items, ids):
  rows = tuple(len(np.unique(np.concatenate([v[k] for v in ids])))
               for k in range(len(ids[0])))
  per_graph, d_in, d_out, extra, n = _need(items)
  return rows, per_graph[1:], d_in, d_out, extra, n


def _shared_fits(need, budget: Budget) -> bool:
  rows, pairs, d_in, d_out, extra, n = need
  return (len(budget.pairs) == len(pairs) and
          all(r <= b for r, b in zip(rows, budget.rows)) and
          all(p <= b for p, b in zip(pairs, budget.pairs)) and
          d_in <= budget.d_in and d_out <= budget.d_out and
          extra <= budget.extra and n + 1 <= budget.n_graph)


def shared_batches(items: Sequence[Compressed], budget: Budget,
                   ids: Sequence[tuple[np.ndarray, ...]] | None = None):
  """Yields `(CompressedGraphs, n_real_graphs)` of shared colour classes.

  Packs consecutive graphs greedily while the batch's distinct classes
  (`colour_ids`, computed here unless given), readout pairs, overflow
  entries and graphs fit `budget`.

  Raises:
    ValueError: a single graph over the budget (naming it and the budget).
  """
  ids = colour_ids(items) if ids is None else ids
  size = [max(int(v[k].max()) for v in ids) + 1 for k in range(len(ids[0]))]
  # stamp[k][id]: the last batch holding id; owner: a scratch array that
  # counts distinct ids without sorting (each id's last writer wins).
  stamp = [np.full(s, -1, np.int64) for s in size]
  owner = [np.zeros(s, np.int64) for s in size]

  def new_rows(v, b):
    out = []
    for k, x in enumerate(v):
      x = x[stamp[k][x] != b]
      owner[k][x] = np.arange(len(x))
      out.append(int((owner[k][x] == np.arange(len(x))).sum()))
    return out

  start, b, rows, pairs, extra = 0, 0, [0] * len(size), None, 0
  for i, (c, v) in enumerate(zip(items, ids)):
    per_graph, d_in, d_out, more, _ = _need([c])
    if not _shared_fits((per_graph, per_graph[1:], d_in, d_out, more, 1),
                        budget):
      raise ValueError(f'graph {i} does not fit the padding budget {budget} '
                       f'alone: it needs rows per level {c.rows()}.')
    new = new_rows(v, b)
    if i > start and not (
        all(r + n <= m for r, n, m in zip(rows, new, budget.rows)) and
        all(p + q <= m for p, q, m in zip(pairs, per_graph[1:],
                                          budget.pairs)) and
        extra + more <= budget.extra and i - start + 2 <= budget.n_graph):
      yield shared_batch(items[start:i], ids[start:i], budget), i - start
      start, b, rows, extra = i, b + 1, [0] * len(size), 0
      new = new_rows(v, b)
    if i == start:
      pairs = [0] * (len(size) - 1)
    rows = [r + n for r, n in zip(rows, new)]
    pairs = [p + q for p, q in zip(pairs, per_graph[1:])]
    extra += more
    for k, x in enumerate(v):
      stamp[k][x] = b
  yield shared_batch(items[start:], ids[start:], budget), len(items) - start


def sharing_budget(items: Sequence[Compressed],
                   ids: Sequence[tuple[np.ndarray, ...]], rows: int,
                   pairs: int | None = None, n_graph: int | None = None,
                   multiple: int = 64) -> Budget:
  """A `Budget` of about `rows` shared rows in the widest level.

  Levels get rows in proportion to their distinct classes over `items`
  (plus room for the largest graph), pairs per level `pairs` (default 4x
  the level's rows), neither more than all of `items` need; `n_graph`
  defaults to as many graphs as the pairs of the smallest would fill.
  """
  if not items:
    raise ValueError('sharing_budget: no graphs given.')
  up = lambda v: int(math.ceil(v / multiple) * multiple)
  levels = np.array([c.rows() for c in items], np.int64)
  distinct = np.array([max(int(v[k].max()) for v in ids) + 1
                       for k in range(levels.shape[1])])
  share = distinct / distinct.max()
  sizes = tuple(up(min(rows * s + m, t)) for s, m, t in
                zip(share, levels.max(0), distinct))
  pair_sizes = tuple(up(min(max(pairs or 4 * r, m), t)) for r, m, t in
                     zip(sizes[1:], levels.max(0)[1:], levels.sum(0)[1:]))
  if n_graph is None:
    n_graph = int(max(pair_sizes) // max(levels[:, 1:].max(1).min(), 1)) + 2
  n_graph = min(n_graph, len(items) + 1)
  most = max(max(len(e) for e in c.extra_in + c.extra_out) for c in items)
  return Budget(sizes, max(p.shape[1] for c in items for p in c.preds),
                max(p.shape[1] for c in items for p in c.succs),
                up(most * 4) if most else 0, n_graph, pair_sizes)
