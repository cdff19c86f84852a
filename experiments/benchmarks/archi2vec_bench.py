r"""archi2vec speed: tracing big registry models, GNN encoding throughput.

  python experiments/benchmarks/archi2vec_bench.py --out=runs/archi2vec_bench
  python experiments/benchmarks/archi2vec_bench.py --num_graphs=500 \
      --zoo_copies=10 --out=/tmp/a2v   # as recorded in results/

1. Tracing: `trace(name)` wall time (abstract shapes only: eval_shape of the
   initializer + make_jaxpr + graph building) for `--models` (default
   ResNet-152 and ViT-L/16 from the model registry), plus node/edge counts of
   the primitive-level and module-level graphs. Target: <= 10 s each on the
   2-core CPU.
2. Encoding large DAGs: `--num_graphs` synthetic random DAGs with up to
   `--max_nodes` nodes (sizes uniform in [max_nodes/10, max_nodes], a chain
   plus random skip edges, random ops from a 64-op vocabulary), packed
   greedily into padded batches of one static budget (`--batch_nodes`
   nodes), embedded in one jitted loop (one compile) by the per-edge jraph
   form (`reference.ReferenceGraphEncoder`, the encoder before aggregation
   came first), by `gnn.GraphEncoder` on the same `GraphsTuple`s
   (`encoder`) and on `compress.CompressedGraphs` of the same graphs
   (`encoder_compressed`: one row per colour class of each graph, gathers
   only) and on `compress.shared_batches` (`encoder_shared`: one row per
   colour class of each batch, however many of its graphs hold it), with
   the same parameters, passes alternating so all see the same machine
   load. Reports graphs/s of each device loop, their ratio, and the largest
   embedding difference relative to the embeddings' scale; host preparation
   (packing; compression; joint colours) is timed and reported apart, and
   again counted in.
3. The same on the registry zoo: the traced graphs of the 29 ImageNet-scale
   registry architectures (`benchmarks/registry_graphs`: the public tables'
   torchvision CNNs and ViT-B/16, plus the timm ViTs, DeiTs, CLIP, DINOv2,
   Swin, ConvNeXt), `--zoo_copies` times over. Random DAGs with continuous
   random features repeat no structure, so compression saves nothing there;
   traced networks repeat blocks. Copies of a graph share all their classes,
   so `encoder_shared` with `--zoo_copies` > 1 mostly measures the copies:
   `--zoo_copies=1` (distinct architectures only) is the honest figure.
4. Encoding NAS-Bench-201 cells: the first `--num_cells` of the 15,625 cells
   (<= 8 nodes), in batches of `--cell_batch`: reference and `GraphEncoder`
   on padded `GraphsTuple`s, and `GraphEncoder` on `DenseGraphs`.

The machine is shared and noisy: read the ratios (old and new timed in
alternation on the same graphs), not absolute graphs/s.

Writes `OUT/archi2vec_bench.json` and `OUT/archi2vec_bench.md`. Runs on any
JAX backend; on a machine without jraph, put jraph's pure-Python package on
PYTHONPATH (e.g. copy `.venv/lib/python3.11/site-packages/jraph`).
"""

import functools
import itertools
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from fennec_jax.archi2vec import compress
from fennec_jax.archi2vec import gnn
from fennec_jax.archi2vec import graphs as graphs_lib
from fennec_jax.archi2vec import nas_bench
from fennec_jax.archi2vec import reference
from fennec_jax.archi2vec import trace as trace_lib
from fennec_jax.benchmarks import registry_graphs

_OUT = flags.DEFINE_string('out', 'runs/archi2vec_bench', 'Output directory.')
_MODELS = flags.DEFINE_list('models', ['resnet152', 'vit_large_patch16_224'],
                            'Registry models to trace ([] to skip).')
_NUM_GRAPHS = flags.DEFINE_integer('num_graphs', 10_000, 'Graphs to encode.')
_MAX_NODES = flags.DEFINE_integer('max_nodes', 2_000, 'Largest graph size.')
_BATCH_NODES = flags.DEFINE_integer('batch_nodes', 65_536,
                                    'Padded nodes per batch.')
_HIDDEN = flags.DEFINE_integer('hidden', 64, 'Encoder width.')
_LAYERS = flags.DEFINE_integer('layers', 4, 'Encoder layers.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Timed passes over all graphs.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the synthetic graphs.')
_NUM_CELLS = flags.DEFINE_integer('num_cells', 15_625,
                                  'NAS-Bench-201 cells to encode (0: skip).')
_CELL_BATCH = flags.DEFINE_integer('cell_batch', 1024, 'Cells per batch.')
_ZOO_COPIES = flags.DEFINE_integer(
    'zoo_copies', 20, 'Passes over the registry zoo per timed pass (0: skip).')
_ZOO_BATCH_NODES = flags.DEFINE_integer('zoo_batch_nodes', 32_768,
                                        'Padded nodes per zoo batch.')
_VOCAB_SIZE = 64


def trace_models(names):
  """Wall time and sizes of tracing each registry model."""
  out = []
  for name in names:
    t0 = time.perf_counter()
    g = trace_lib.trace(name)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    m = trace_lib.module_graph(g)
    module_seconds = time.perf_counter() - t1
    row = dict(model=name, seconds=seconds, nodes=g.number_of_nodes(),
               edges=g.number_of_edges(),
               params=int(sum(g.graph['param_sizes'].values())),
               module_nodes=m.number_of_nodes(),
               module_edges=m.number_of_edges(),
               module_graph_seconds=module_seconds)
    logging.info('trace %s: %.2fs, %d nodes, %d edges, %d params; module '
                 'graph %d nodes (%.2fs)', name, seconds, row['nodes'],
                 row['edges'], row['params'], row['module_nodes'],
                 module_seconds)
    out.append(row)
  return out


def random_dag_arrays(rs, n):
  """A random DAG as `graph_to_arrays`-style arrays (topologically ordered)."""
  chain = np.arange(1, n)
  skip_to = np.nonzero(rs.random(n - 1) < 0.3)[0] + 1
  skip_from = (rs.random(len(skip_to)) * skip_to).astype(np.int32)
  senders = np.concatenate([chain - 1, skip_from]).astype(np.int32)
  receivers = np.concatenate([chain, skip_to]).astype(np.int32)
  feat = np.zeros((n, 5), np.float32)
  feat[:, 0] = rs.random(n) * 10
  feat[:, 3] = np.log1p(np.bincount(receivers, minlength=n))
  feat[:, 4] = np.log1p(np.bincount(senders, minlength=n))
  return dict(op=rs.integers(1, _VOCAB_SIZE, n).astype(np.int32), feat=feat,
              senders=senders, receivers=receivers)


def pack(arrays, batch_nodes, max_graphs, batch_edges):
  """Greedy packing into padded batches of one static budget."""
  batches, chunk, nodes, edges = [], [], 0, 0
  for a in arrays:
    n, e = len(a['op']), len(a['senders'])
    if chunk and (nodes + n + 1 > batch_nodes or edges + e > batch_edges or
                  len(chunk) + 1 >= max_graphs):
      batches.append((graphs_lib.pad_graphs(graphs_lib.to_graphs_tuple(chunk),
                                            batch_nodes, batch_edges,
                                            max_graphs), len(chunk)))
      chunk, nodes, edges = [], 0, 0
    chunk.append(a)
    nodes += n
    edges += e
  if chunk:
    batches.append((graphs_lib.pad_graphs(graphs_lib.to_graphs_tuple(chunk),
                                          batch_nodes, batch_edges,
                                          max_graphs), len(chunk)))
  return batches


def time_alternating(fns, repeats):
  """Best wall time of a pass over its batches for each of `fns` (by name).

  `fns[name] = (fn, batches)`, `batches` a list of `(batch, n_real)`. Passes
  alternate between the functions, so a change in machine load hits all of
  them alike. Returns `(best_seconds, all_seconds, outputs)` dicts; outputs
  are the real graphs' rows, in order.
  """
  for fn, batches in fns.values():  # Compile outside the timed passes.
    jax.block_until_ready(fn(batches[0][0]))
  outputs = {}
  seconds = {name: [] for name in fns}
  for _ in range(repeats):
    for name, (fn, batches) in fns.items():
      t0 = time.perf_counter()
      outs = jax.block_until_ready([fn(b) for b, _ in batches])
      seconds[name].append(time.perf_counter() - t0)
      outputs[name] = np.concatenate([np.asarray(o)[:n] for o, (_, n) in
                                      zip(outs, batches)])
  best = {name: min(v) for name, v in seconds.items()}
  return best, seconds, outputs


def variants(ref, params, encoders, batches):
  """The functions to time, name -> `(fn(batch), batches)`.

  `reference` is the per-edge encoder jitted as before (`jax.jit`, default
  compiler options); `reference_same_options` is it jitted as the encoder is
  (`gnn.jit_encoder`; CPU only), for a same-compiler comparison; then
  `encoders`, name -> `(jitted apply, batches)`.
  """
  fns = dict(reference=(jax.jit(ref.apply), batches))
  if jax.default_backend() == 'cpu':
    fns['reference_same_options'] = (gnn.jit_encoder(ref.apply), batches)
  fns.update(encoders)
  return {name: (functools.partial(lambda fn, b: fn(params, b), fn), bs)
          for name, (fn, bs) in fns.items()}


def relative_difference(actual, expected):
  """Largest |actual - expected| relative to the largest |expected|."""
  return float(np.abs(actual - expected).max() / np.abs(expected).max())


def compare_encoders(arrays, vocab_size, batch_nodes):
  """Times the reference and the encoder's paths on the same graphs.

  Padded `GraphsTuple` batches of `batch_nodes` nodes (greedy packing, one
  budget) for the reference and `encoder`; `encoder_compressed` gets the
  same graphs as `compress.CompressedGraphs` (colour classes, gather-only
  tables), packed to about `batch_nodes` rows in the widest level. Host
  preparation (packing, compression) is timed apart from the device loops.
  """
  lo = min(len(a['op']) for a in arrays)
  total_nodes = int(sum(len(a['op']) for a in arrays))
  total_edges = int(sum(len(a['senders']) for a in arrays))
  batch_nodes = max(batch_nodes, max(len(a['op']) for a in arrays) + 1)
  batch_edges = max(int(batch_nodes * 1.5),
                    max(len(a['senders']) for a in arrays))
  max_graphs = batch_nodes // lo + 2
  t0 = time.perf_counter()
  batches = pack(arrays, batch_nodes, max_graphs, batch_edges)
  pack_seconds = time.perf_counter() - t0
  t0 = time.perf_counter()
  items = [compress.compress(a, _LAYERS.value) for a in arrays]
  compress_seconds = time.perf_counter() - t0
  t0 = time.perf_counter()
  budget = compress.packing_budget(items, batch_nodes)
  cbatches = list(compress.batches(items, budget))
  cpack_seconds = time.perf_counter() - t0
  t0 = time.perf_counter()
  ids = compress.colour_ids(items)
  ids_seconds = time.perf_counter() - t0
  t0 = time.perf_counter()
  sbudget = compress.sharing_budget(items, ids, batch_nodes)
  sbatches = list(compress.shared_batches(items, sbudget, ids))
  spack_seconds = time.perf_counter() - t0
  rows = np.array([c.rows() for c in items]).sum(0)
  # Rows each path runs: per node, per graph's class, per batch's class.
  start = np.cumsum([0] + [n for _, n in sbatches])
  shared_rows = np.array([compress.shared_rows(items[a:b], ids[a:b])
                          for a, b in zip(start[:-1], start[1:])])
  config = dict(hidden=_HIDDEN.value, num_layers=_LAYERS.value)
  model = gnn.GraphEncoder(vocab_size, **config)
  ref = reference.ReferenceGraphEncoder(vocab_size, **config)
  params = jax.jit(model.init)(jax.random.key(0), batches[0][0])
  batches = [(jax.device_put(b), n) for b, n in batches]
  cbatches = [(jax.device_put(b), n) for b, n in cbatches]
  sbatches = [(jax.device_put(b), n) for b, n in sbatches]
  new = gnn.jit_encoder(model.apply)
  t0 = time.perf_counter()
  jax.block_until_ready(new(params, batches[0][0]))
  compile_seconds = time.perf_counter() - t0
  fns = variants(ref, params, dict(encoder=(new, batches),
                                   encoder_compressed=(new, cbatches),
                                   encoder_shared=(new, sbatches)),
                 batches)
  best, seconds, out = time_alternating(fns, _REPEATS.value)
  n = len(arrays)
  host = dict(reference=pack_seconds, reference_same_options=pack_seconds,
              encoder=pack_seconds,
              encoder_compressed=compress_seconds + cpack_seconds,
              encoder_shared=compress_seconds + ids_seconds + spack_seconds)
  res = dict(num_graphs=n, max_nodes=max(len(a['op']) for a in arrays),
             total_nodes=total_nodes, total_edges=total_edges,
             batches=len(batches), batch_nodes=batch_nodes,
             batch_edges=batch_edges, max_graphs_per_batch=max_graphs,
             compressed_batches=len(cbatches),
             compressed_budget=budget._asdict(),
             shared_batches=len(sbatches), shared_budget=sbudget._asdict(),
             class_rows_per_level=rows.tolist(),
             shared_rows_per_level=shared_rows.sum(0).tolist(),
             layer_rows=dict(
                 encoder=_LAYERS.value * total_nodes,
                 encoder_compressed=int(rows[1:].sum()),
                 encoder_shared=int(shared_rows[:, 1:].sum())),
             layer_rows_per_batch=dict(
                 encoder=_LAYERS.value * total_nodes / len(batches),
                 encoder_compressed=float(rows[1:].sum() / len(cbatches)),
                 encoder_shared=float(shared_rows[:, 1:].sum() /
                                      len(sbatches))),
             layer_rows_saved=float(_LAYERS.value * total_nodes /
                                    rows[1:].sum()),
             hidden=_HIDDEN.value, layers=_LAYERS.value,
             pack_seconds=pack_seconds, compress_seconds=compress_seconds,
             compressed_pack_seconds=cpack_seconds,
             colour_ids_seconds=ids_seconds,
             shared_pack_seconds=spack_seconds, host_seconds=host,
             graphs_per_second_with_host={
                 k: n / (v + host[k]) for k, v in best.items()},
             speedup_with_host={
                 k: (best['reference'] + host['reference']) / (v + host[k])
                 for k, v in best.items()},
             compile_seconds=compile_seconds, pass_seconds=seconds,
             graphs_per_second={k: n / v for k, v in best.items()},
             nodes_per_second={k: total_nodes / v for k, v in best.items()},
             speedup={k: best['reference'] / v for k, v in best.items()},
             max_relative_difference={
                 k: relative_difference(out[k], out['reference'])
                 for k in ('encoder', 'encoder_compressed',
                           'encoder_shared')},
             real_node_fraction=total_nodes / (len(batches) * batch_nodes))
  logging.info('encode: %d graphs (%d nodes) in %d batches: graphs/s %s, '
               'speedup %s, max relative difference %s', n, total_nodes,
               len(batches), res['graphs_per_second'], res['speedup'],
               res['max_relative_difference'])
  return res


def encode_throughput():
  """Graphs/s of the per-edge reference and the encoder on random DAGs."""
  rs = np.random.default_rng(_SEED.value)
  lo = max(2, _MAX_NODES.value // 10)
  sizes = rs.integers(lo, _MAX_NODES.value + 1, _NUM_GRAPHS.value)
  t0 = time.perf_counter()
  arrays = [random_dag_arrays(rs, int(n)) for n in sizes]
  gen_seconds = time.perf_counter() - t0
  res = compare_encoders(arrays, _VOCAB_SIZE, _BATCH_NODES.value)
  res['generate_seconds'] = gen_seconds
  return res


def encode_zoo():
  """The same comparison on the registry zoo's traced graphs.

  Every architecture of `registry_graphs` (the public tables' and the other
  ImageNet-scale registry models), `--zoo_copies` times over, in the order
  of the architecture list repeated.
  """
  names = list(registry_graphs.ARCHS + registry_graphs.ZOO_EXTRA)
  t0 = time.perf_counter()
  graphs = [registry_graphs.load(a) for a in names]
  vocab = graphs_lib.OpVocab.from_graphs(graphs)
  base = [graphs_lib.graph_to_arrays(g, vocab) for g in graphs]
  load_seconds = time.perf_counter() - t0
  res = compare_encoders(base * _ZOO_COPIES.value, len(vocab),
                         _ZOO_BATCH_NODES.value)
  res.update(architectures=names, copies=_ZOO_COPIES.value,
             load_seconds=load_seconds,
             nodes={a: len(b['op']) for a, b in zip(names, base)},
             class_rows={a: list(compress.compress(b, _LAYERS.value).rows())
                         for a, b in zip(names, base)})
  return res


def all_cells(count):
  """The first `count` NAS-Bench-201 cell strings (ops in `OPS` order)."""
  cells = []
  for ops in itertools.islice(
      itertools.product(nas_bench.OPS, repeat=6), count):
    e = iter(ops)
    cells.append('|' + '|+|'.join('|'.join(f'{next(e)}~{j}' for j in range(i))
                                  for i in (1, 2, 3)) + '|')
  return cells


def encode_cells():
  """Cells/s of the reference, the encoder, and the encoder on dense batches."""
  t0 = time.perf_counter()
  vocab = nas_bench.VOCAB
  arrays = [graphs_lib.graph_to_arrays(nas_bench.cell_to_dag(c), vocab)
            for c in all_cells(_NUM_CELLS.value)]
  convert_seconds = time.perf_counter() - t0
  batch = _CELL_BATCH.value
  max_nodes = max(len(a['op']) for a in arrays)
  t0 = time.perf_counter()
  sparse = [(jax.device_put(b), n)
            for b, n in graphs_lib.batches(arrays, batch)]
  sparse_seconds = time.perf_counter() - t0
  t0 = time.perf_counter()
  dense = [(jax.device_put(b), n) for b, n in
           graphs_lib.dense_batches(arrays, batch, max_nodes)]
  dense_seconds = time.perf_counter() - t0
  config = dict(hidden=_HIDDEN.value, num_layers=_LAYERS.value)
  model = gnn.GraphEncoder(len(vocab), **config)
  ref = reference.ReferenceGraphEncoder(len(vocab), **config)
  params = jax.jit(model.init)(jax.random.key(0), sparse[0][0])
  new = gnn.jit_encoder(model.apply)
  best, seconds, out = time_alternating(
      variants(ref, params, dict(encoder=(new, sparse),
                                 encoder_dense=(new, dense)), sparse),
      _REPEATS.value)
  n = len(arrays)
  res = dict(num_cells=n, max_nodes=max_nodes, batch=batch,
             convert_seconds=convert_seconds,
             sparse_batch_seconds=sparse_seconds,
             dense_batch_seconds=dense_seconds, pass_seconds=seconds,
             graphs_per_second={k: n / v for k, v in best.items()},
             speedup={k: best['reference'] / v for k, v in best.items()},
             max_relative_difference={
                 k: relative_difference(out[k], out['reference'])
                 for k in ('encoder', 'encoder_dense')})
  logging.info('cells: %s graphs/s, speedup %s', res['graphs_per_second'],
               res['speedup'])
  return res


def main(argv):
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  result = dict(jax=jax.__version__, backend=jax.default_backend(),
                device=str(jax.devices()[0].device_kind),
                cpu_count=os.cpu_count(),
                load_average=list(os.getloadavg()))
  result['trace'] = trace_models(_MODELS.value) if _MODELS.value else []
  result['encode'] = encode_throughput() if _NUM_GRAPHS.value else None
  result['zoo'] = encode_zoo() if _ZOO_COPIES.value else None
  result['cells'] = encode_cells() if _NUM_CELLS.value else None
  result['load_average_after'] = list(os.getloadavg())
  with open(os.path.join(_OUT.value, 'archi2vec_bench.json'), 'w') as f:
    json.dump(result, f, indent=1)
  load = (result['load_average'][0], result['load_average_after'][0])
  lines = [f'# archi2vec benchmark ({result["device"]}, jax {jax.__version__},'
           f' {result["cpu_count"]} CPUs, load {load[0]:.1f} -> {load[1]:.1f})',
           '', f'`python {" ".join(sys.argv)}`', '']
  if result['trace']:
    lines += ['| model | trace s | nodes | edges | params | module nodes |',
              '|---|---|---|---|---|---|']
  for r in result['trace']:
    lines.append(f'| {r["model"]} | {r["seconds"]:.2f} | {r["nodes"]} | '
                 f'{r["edges"]} | {r["params"]:,} | {r["module_nodes"]} |')
  columns = ('reference', 'reference_same_options', 'encoder',
             'encoder_compressed', 'encoder_shared', 'encoder_dense')
  rows, host, with_host = [], [], []
  for key, what in (('encode', 'random DAGs of <= {max_nodes:,} nodes'),
                    ('zoo', 'registry zoo graphs ({copies} x '
                     '{architectures_count} architectures, <= {max_nodes:,} '
                     'nodes)'),
                    ('cells', 'NAS-Bench-201 cells (<= {max_nodes} nodes)')):
    r = result[key]
    if not r:
      continue
    count = r.get('num_graphs', r.get('num_cells'))
    g, x = r['graphs_per_second'], r['speedup']
    cells = [f'{g[c]:.1f} ({x[c]:.2f}x)' if c in g else '' for c in columns]
    diff = r['max_relative_difference']
    diff = max(diff.values()) if isinstance(diff, dict) else diff
    what = what.format(**r, architectures_count=len(r.get('architectures',
                                                          ())))
    rows.append(f'| {count:,} {what} | ' + ' | '.join(cells) +
                f' | {diff:.1e} |')
    if 'compress_seconds' in r:
      lr, lb = r['layer_rows'], r['layer_rows_per_batch']
      host.append(
          f'| {what} | {lr["encoder"]:,} / {lr["encoder_compressed"]:,} / '
          f'{lr["encoder_shared"]:,} | {lb["encoder"]:,.0f} / '
          f'{lb["encoder_compressed"]:,.0f} / {lb["encoder_shared"]:,.0f} | '
          f'{r["pack_seconds"]:.2f}'
          f' | {r["compress_seconds"] + r["compressed_pack_seconds"]:.2f} | '
          f'{r["colour_ids_seconds"] + r["shared_pack_seconds"]:.2f} |')
      g, x = r['graphs_per_second_with_host'], r['speedup_with_host']
      with_host.append(f'| {count:,} {what} | ' + ' | '.join(
          f'{g[c]:.1f} ({x[c]:.2f}x)' if c in g else '' for c in columns)
                       + ' |')
  if rows:
    lines += ['', 'Encoding, graphs/s (speedup over the reference) in the '
              'best of the alternating passes (device loops; host '
              'preparation below):', '',
              '| graphs | ' + ' | '.join(columns) +
              ' | max relative difference |',
              '|---' * (len(columns) + 2) + '|'] + rows
  if host:
    lines += ['', 'Layer rows run (layers 1..L, all graphs; then per batch): '
              'per node / per graph\'s colour class / per batch\'s shared '
              'class; host seconds to pack GraphsTuples, to compress and '
              'pack per graph, and then to number joint colours and pack '
              'shared batches:', '',
              '| graphs | layer rows | layer rows per batch | pack s | '
              'compress + pack s | + joint colours + shared pack s |',
              '|---|---|---|---|---|---|'] + host
    lines += ['', 'The same graphs/s (speedup) with host preparation counted '
              'in (best pass + its host seconds):', '',
              '| graphs | ' + ' | '.join(columns) + ' |',
              '|---' * (len(columns) + 1) + '|'] + with_host
  with open(os.path.join(_OUT.value, 'archi2vec_bench.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
