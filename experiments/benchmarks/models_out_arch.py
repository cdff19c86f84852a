r"""Leave one model out: architecture embedding + metadata vs metadata alone.

An evaluation, not a test. Each eligible model of the offline benchmark
(observed on >= 3 tasks) is hidden and placed by the post-hoc model map of
`Fennec.add_models` from its metadata features (`fennec_cold`) or from those
plus the top principal components of an archi2vec embedding of its traced
graph (`fennec_cold_arch`): `--features=wl`, the WL subtree counts
(`models_out.wl_graph_features`), or `--features=gnn`, the masked-op
pretrained GNN encoder (`models_out.gnn_graph_features`), beside the
task's mean score (`mean_model`) and the nearest model in either feature
space (`nearest_model`, `nearest_model_arch`). `--hold_out=arch` hides the
model's architecture siblings with it (an unseen architecture).

Command:

  PYTHONPATH=. nice -n 10 .venv/bin/python \
      experiments/benchmarks/models_out_arch.py --features=wl \
      --out=/tmp/models_out_arch

`--table=sfda_group1` (or model_spider_single, parc_controlled, parc_all)
runs the same on a public table: its models' architectures come from
third_party/full_benchmark/checkpoints.csv and their graphs from the
registry traces in fennec_jax/benchmarks/registry_graphs/
(experiments/benchmarks/trace_registry_graphs.py); features are computed
once per distinct architecture. transfergraph_image is not usable: its
100 mapped models are all ViT-B/16 (one graph) and the other 80 name
Hugging Face classes without a registered configuration.

Writes `DIR/models_out_arch_<table>_<features>_<hold_out>.csv` (per model
and `MEAN` rows) and prints the mean rank error and weighted tau per method.
"""

import csv
import os
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from fennec_jax.benchmarks import models_out
from fennec_jax.benchmarks import offline
from fennec_jax.benchmarks import protocol
from fennec_jax.benchmarks import public
from fennec_jax.benchmarks import registry_graphs

_OUT = flags.DEFINE_string('out', '/tmp/models_out_arch', 'Output directory.')
_RANK = flags.DEFINE_integer('rank', 0, 'Space rank (0 = SpaceConfig '
                             'default).')
_COMPONENTS = flags.DEFINE_integer('components', 8,
                                   'Most WL principal components appended.')
_FEATURES = flags.DEFINE_enum('features', 'wl', ['wl', 'gnn'],
                              'Architecture embedding of the graphs.')
_GNN_STEPS = flags.DEFINE_integer('gnn_steps', 300,
                                  'Masked-op pretraining steps (gnn).')
_HOLD_OUT = flags.DEFINE_enum(
    'hold_out', 'model', ['model', 'arch'],
    "'model': the held-out model alone; 'arch': every model of its "
    'architecture too (an unseen architecture).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the space.')
_TABLE = flags.DEFINE_string(
    'table', 'offline', "'offline' (the offline zoo) or a public table whose "
    'models map to registry architectures (sfda_group1, '
    'model_spider_single, parc_controlled, parc_all).')


def load_table(name):
  """(history, per-model graph, per-model architecture) of a table.

  `offline`: the offline zoo and its traced graphs. A public table: its
  models whose checkpoint maps to a registry architecture
  (`registry_graphs.table_archs`, traced graphs in
  fennec_jax/benchmarks/registry_graphs/); the others are left out (named
  in a log line).
  """
  if name == 'offline':
    history = offline.load()
    archs = list(history.model_metadata['arch'])
    return history, [offline.load_graph(m) for m in history.model_ids], archs
  history = public.load_benchmark(name)
  mapped = registry_graphs.table_archs().get(name, {})
  known = set(registry_graphs.ARCHS + registry_graphs.ZOO_EXTRA)
  keep = np.array([mapped.get(m) in known for m in history.model_ids])
  if not keep.any():
    raise ValueError(f'{name}: no model maps to a registry architecture.')
  if not keep.all():
    logging.info('%s: %d of %d models have no registry graph, left out: '
                 '%s', name, (~keep).sum(), len(keep),
                 [m for m, k in zip(history.model_ids, keep) if not k][:10])
    history = history.subset(models=keep)
  archs = [mapped[m] for m in history.model_ids]
  cache = {a: registry_graphs.load(a) for a in sorted(set(archs))}
  return history, [cache[a] for a in archs], archs


def arch_features(graphs, archs):
  """Features of each distinct architecture, repeated per model."""
  unique = sorted(set(archs))
  first = [graphs[archs.index(a)] for a in unique]
  if len(unique) < 2:
    raise ValueError(f'one architecture ({unique}) for all models: the '
                     'graph carries no information here.')
  if _FEATURES.value == 'wl':
    feats = models_out.wl_graph_features(first, _COMPONENTS.value)
  else:
    feats = models_out.gnn_graph_features(first, _COMPONENTS.value,
                                          _GNN_STEPS.value, _SEED.value)
  return feats[[unique.index(a) for a in archs]]


def main(argv):
  del argv
  t0 = time.time()
  history, graphs, archs = load_table(_TABLE.value)
  if _TABLE.value != 'offline':
    arch = arch_features(graphs, archs)
  elif _FEATURES.value == 'wl':
    arch = models_out.wl_graph_features(graphs, _COMPONENTS.value)
  else:
    arch = models_out.gnn_graph_features(graphs, _COMPONENTS.value,
                                         _GNN_STEPS.value, _SEED.value)
  print(f'{arch.shape[1]} {_FEATURES.value} architecture features '
        f'({time.time() - t0:.0f} s)')
  rows = models_out.evaluate_models_out_arch(
      history, arch, space_config={'rank': _RANK.value} if _RANK.value
      else None, seed=_SEED.value,
      groups=archs if _HOLD_OUT.value == 'arch' else None)
  os.makedirs(_OUT.value, exist_ok=True)
  path = os.path.join(_OUT.value, f'models_out_arch_{_TABLE.value}_'
                      f'{_FEATURES.value}_{_HOLD_OUT.value}.csv')
  with tempfile.NamedTemporaryFile('w', newline='', dir=_OUT.value,
                                   delete=False) as f:
    w = csv.DictWriter(f, fieldnames=models_out.MODELS_OUT_COLUMNS)
    w.writeheader()
    for r in rows:
      w.writerow({k: (f'{v:.6f}' if isinstance(v, float) else v)
                  for k, v in r.items()})
  os.replace(f.name, path)
  print(f'{"method":20s} rank_error weighted_tau pearson  '
        f'({sum(r["model"] != protocol.MEAN for r in rows) // 5} models)')
  for r in rows:
    if r['model'] == protocol.MEAN:
      print(f'{r["method"]:20s} {r["rank_error"]:10.4f} '
            f'{r["weighted_tau"]:12.4f} {r["pearson"]:7.4f}')
  print(f'wrote {path} in {time.time() - t0:.0f} s')


if __name__ == '__main__':
  app.run(main)
