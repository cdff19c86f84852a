r"""archi2vec speed: tracing big registry models, GNN encoding throughput.

  python experiments/benchmarks/archi2vec_bench.py --out=runs/archi2vec_bench
  python experiments/benchmarks/archi2vec_bench.py --num_graphs=1000 \
      --out=/tmp/a2v                                  # quick look

1. Tracing: `trace(name)` wall time (abstract shapes only: eval_shape of the
   initializer + make_jaxpr + graph building) for `--models` (default
   ResNet-152 and ViT-L/16 from the model registry), plus node/edge counts of
   the primitive-level and module-level graphs. Target: <= 10 s each on the
   2-core CPU.
2. Encoding: `--num_graphs` synthetic random DAGs with up to `--max_nodes`
   nodes (sizes uniform in [max_nodes/10, max_nodes], a chain plus random skip
   edges, random ops from a 64-op vocabulary), packed greedily into padded
   batches of one static budget (`--batch_nodes` nodes), embedded by the
   default `GraphEncoder` in one jitted loop (one compile). Reports graphs/s
   and nodes/s of the device loop (host packing timed separately).

Writes `OUT/archi2vec_bench.json` and `OUT/archi2vec_bench.md`. Runs on any
JAX backend; on a machine without jraph, put jraph's pure-Python package on
PYTHONPATH (e.g. copy `.venv/lib/python3.11/site-packages/jraph`).
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

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
_VOCAB_SIZE = 64


def trace_models(names):
  """Wall time and sizes of tracing each registry model."""
  from fennec_jax.archi2vec import trace as trace_lib  # pylint: disable=g-import-not-at-top
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
  from fennec_jax.archi2vec import graphs as graphs_lib  # pylint: disable=g-import-not-at-top
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


def encode_throughput():
  """Graphs/s of the jitted GNN encoder over padded batches."""
  from fennec_jax.archi2vec import gnn  # pylint: disable=g-import-not-at-top
  rs = np.random.default_rng(_SEED.value)
  lo = max(2, _MAX_NODES.value // 10)
  sizes = rs.integers(lo, _MAX_NODES.value + 1, _NUM_GRAPHS.value)
  t0 = time.perf_counter()
  arrays = [random_dag_arrays(rs, int(n)) for n in sizes]
  gen_seconds = time.perf_counter() - t0
  total_nodes = int(sizes.sum())
  total_edges = int(sum(len(a['senders']) for a in arrays))
  batch_nodes = max(_BATCH_NODES.value, _MAX_NODES.value + 1)
  batch_edges = int(batch_nodes * 1.5)
  max_graphs = batch_nodes // lo + 2
  t0 = time.perf_counter()
  batches = pack(arrays, batch_nodes, max_graphs, batch_edges)
  pack_seconds = time.perf_counter() - t0
  init, embed = gnn.make_encoder(_VOCAB_SIZE, hidden=_HIDDEN.value,
                                 num_layers=_LAYERS.value)
  params = jax.jit(init)(jax.random.key(0), batches[0][0])
  fn = jax.jit(embed)
  device_batches = [(jax.device_put(b), n) for b, n in batches]
  t0 = time.perf_counter()
  jax.block_until_ready(fn(params, device_batches[0][0]))
  compile_seconds = time.perf_counter() - t0
  times = []
  for _ in range(_REPEATS.value):
    t0 = time.perf_counter()
    outs = [fn(params, b) for b, _ in device_batches]
    jax.block_until_ready(outs)
    times.append(time.perf_counter() - t0)
  best = min(times)
  res = dict(num_graphs=_NUM_GRAPHS.value, max_nodes=_MAX_NODES.value,
             total_nodes=total_nodes, total_edges=total_edges,
             batches=len(batches), batch_nodes=batch_nodes,
             batch_edges=batch_edges, max_graphs_per_batch=max_graphs,
             hidden=_HIDDEN.value, layers=_LAYERS.value,
             generate_seconds=gen_seconds, pack_seconds=pack_seconds,
             compile_seconds=compile_seconds, pass_seconds=times,
             graphs_per_second=_NUM_GRAPHS.value / best,
             nodes_per_second=total_nodes / best,
             real_node_fraction=total_nodes / (len(batches) * batch_nodes))
  logging.info('encode: %d graphs (%d nodes) in %d batches: best pass %.2fs '
               '-> %.0f graphs/s, %.3g nodes/s (compile %.1fs, packing %.1fs)',
               _NUM_GRAPHS.value, total_nodes, len(batches), best,
               res['graphs_per_second'], res['nodes_per_second'],
               compile_seconds, pack_seconds)
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
  with open(os.path.join(_OUT.value, 'archi2vec_bench.json'), 'w') as f:
    json.dump(result, f, indent=1)
  lines = [f'# archi2vec benchmark ({result["device"]}, jax {jax.__version__},'
           f' load {result["load_average"][0]:.1f})', '',
           '| model | trace s | nodes | edges | params | module nodes |',
           '|---|---|---|---|---|---|']
  for r in result['trace']:
    lines.append(f'| {r["model"]} | {r["seconds"]:.2f} | {r["nodes"]} | '
                 f'{r["edges"]} | {r["params"]:,} | {r["module_nodes"]} |')
  e = result['encode']
  if e:
    lines += ['', f'Encoding {e["num_graphs"]} graphs of <= {e["max_nodes"]} '
              f'nodes ({e["total_nodes"]:,} nodes, {e["batches"]} padded '
              f'batches): **{e["graphs_per_second"]:.0f} graphs/s** '
              f'({e["nodes_per_second"]:.3g} nodes/s; compile '
              f'{e["compile_seconds"]:.1f} s, host packing '
              f'{e["pack_seconds"]:.1f} s).']
  with open(os.path.join(_OUT.value, 'archi2vec_bench.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
