"""Traced graphs of the registry architectures behind the public tables.

The public tables' models are torchvision / timm checkpoints of a few
architectures that the model registry defines in Flax, so their architecture
graphs come from `archi2vec.trace` on abstract shapes (no weights).
`experiments/benchmarks/trace_registry_graphs.py` writes them to
`registry_graphs/` (committed, ~0.1-0.5 MB each); this module maps a public
table's model ids to architectures (`third_party/full_benchmark/
checkpoints.csv`, column `arch`) and loads the graphs.
"""

import csv
import functools
import json
import os

import networkx as nx

from fennec_jax.archi2vec import graphs as graphs_lib

DATA_DIR = os.path.join(os.path.dirname(__file__), 'registry_graphs')
CHECKPOINTS = os.path.join(os.path.dirname(__file__), '..', '..',
                           'third_party', 'full_benchmark', 'checkpoints.csv')
# Registry architectures named by the public tables' checkpoints.
ARCHS = ('alexnet', 'densenet121', 'densenet169', 'densenet201', 'googlenet',
         'inception_v3', 'mnasnet1_0', 'mobilenet_v2', 'resnet18', 'resnet34',
         'resnet50', 'resnet101', 'resnet152', 'vit_base_patch16_224')
# The other ImageNet-scale registry architectures: with ARCHS, the zoo whose
# encoding speed experiments/benchmarks/archi2vec_bench.py measures.
ZOO_EXTRA = ('clip_vit_b16', 'clip_vit_b32', 'clip_vit_l14', 'convnext_tiny',
             'deit_base_patch16_224', 'deit_small_patch16_224',
             'deit_tiny_patch16_224', 'dinov2_vit_b14', 'dinov2_vit_s14',
             'swin_small_patch4_window7_224', 'swin_tiny_patch4_window7_224',
             'vit_base_patch32_224', 'vit_large_patch16_224',
             'vit_small_patch16_224', 'vit_tiny_patch16_224')


@functools.cache
def table_archs(path: str = CHECKPOINTS) -> dict[str, dict[str, str]]:
  """{table: {model id: registry architecture}} for mapped checkpoints."""
  out: dict[str, dict[str, str]] = {}
  with open(path, newline='') as f:
    for i, row in enumerate(csv.DictReader(f)):
      for key in ('benchmark', 'model', 'arch'):
        if key not in row:
          raise ValueError(f'{path}: row {i + 2} has no {key!r} column.')
      if row['arch']:
        out.setdefault(row['benchmark'], {})[row['model']] = row['arch']
  return out


def load(arch: str, data_dir: str = DATA_DIR) -> nx.DiGraph:
  """The traced graph of registry architecture `arch`."""
  with open(os.path.join(data_dir, 'index.json')) as f:
    index = json.load(f)
  if arch not in index:
    raise ValueError(f'{data_dir}/index.json has no graph for {arch!r} '
                     f'(has {sorted(index)}); run experiments/benchmarks/'
                     'trace_registry_graphs.py --archs=' + arch)
  return graphs_lib.read_graph(os.path.join(data_dir, index[arch]))
