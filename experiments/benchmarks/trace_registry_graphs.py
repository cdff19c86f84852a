r"""Traces the registry architectures of the public tables' models to files.

The public tables (sfda_group1, model_spider_single, parc_controlled,
parc_all, transfergraph_image) name torchvision / timm architectures that the
model registry (`fennec_jax/models/`) defines in Flax; `archi2vec.trace` on
abstract shapes gives their graphs with no weights and no download. This
writes them (primitive-level, attributes the encoders read: `op`, `shape`,
`dtype`, `param_size`) to `fennec_jax/benchmarks/registry_graphs/<arch>.json`
and an `index.json`, which `fennec_jax.benchmarks.registry_graphs` reads.

  PYTHONPATH=. nice -n 10 .venv/bin/python \
      experiments/benchmarks/trace_registry_graphs.py

Resumable: an architecture whose file exists is skipped (`--force` redoes).
"""

import json
import os
import time

from absl import app
from absl import flags
import networkx as nx

from fennec_jax import files
from fennec_jax.archi2vec import graphs as graphs_lib
from fennec_jax.archi2vec import trace as trace_lib
from fennec_jax.benchmarks import registry_graphs

_OUT = flags.DEFINE_string('out', registry_graphs.DATA_DIR, 'Output folder.')
_ARCHS = flags.DEFINE_list('archs', list(registry_graphs.ARCHS +
                                         registry_graphs.ZOO_EXTRA),
                           'Registry architectures to trace.')
_FORCE = flags.DEFINE_bool('force', False, 'Retrace existing files.')
_KEEP = ('op', 'shape', 'dtype', 'param_size')


def slim(g: nx.DiGraph) -> nx.DiGraph:
  """`g` with only the node attributes the encoders read."""
  h = nx.DiGraph(name=g.graph.get('name', ''))
  h.graph['param_sizes'] = {'total': int(sum(
      g.graph.get('param_sizes', {}).values()))}
  for n, a in g.nodes(data=True):
    h.add_node(n, **{k: a[k] for k in _KEEP if k in a})
  h.add_edges_from(g.edges())
  return h


def main(argv):
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  index = {}
  for arch in _ARCHS.value:
    name = f'{arch}.json'
    index[arch] = name
    path = os.path.join(_OUT.value, name)
    if os.path.exists(path) and not _FORCE.value:
      continue
    t0 = time.time()
    g = slim(trace_lib.trace(arch))
    files.write_atomically(path, lambda tmp, g=g: graphs_lib.write_graph(
        g, tmp))
    print(f'{arch}: {g.number_of_nodes()} nodes, {g.number_of_edges()} '
          f'edges, {time.time() - t0:.1f} s')
  files.write_text(os.path.join(_OUT.value, 'index.json'),
                   json.dumps(index, indent=1, sort_keys=True) + '\n')


if __name__ == '__main__':
  app.run(main)
