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

Writes `DIR/models_out_arch_<features>_<hold_out>.csv` (per model and `MEAN` rows) and prints the
mean rank error and weighted tau per method.
"""

import csv
import os
import tempfile
import time

from absl import app
from absl import flags

from fennec_jax.benchmarks import models_out
from fennec_jax.benchmarks import offline
from fennec_jax.benchmarks import protocol

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


def main(argv):
  del argv
  t0 = time.time()
  history = offline.load()
  graphs = [offline.load_graph(m) for m in history.model_ids]
  if _FEATURES.value == 'wl':
    arch = models_out.wl_graph_features(graphs, _COMPONENTS.value)
  else:
    arch = models_out.gnn_graph_features(graphs, _COMPONENTS.value,
                                         _GNN_STEPS.value, _SEED.value)
  print(f'{arch.shape[1]} {_FEATURES.value} architecture features '
        f'({time.time() - t0:.0f} s)')
  rows = models_out.evaluate_models_out_arch(
      history, arch, space_config={'rank': _RANK.value} if _RANK.value
      else None, seed=_SEED.value,
      groups=(list(history.model_metadata['arch'])
              if _HOLD_OUT.value == 'arch' else None))
  os.makedirs(_OUT.value, exist_ok=True)
  path = os.path.join(_OUT.value, f'models_out_arch_{_FEATURES.value}_{_HOLD_OUT.value}.csv')
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
