r"""Leave one model out: architecture embedding + metadata vs metadata alone.

An evaluation, not a test. Each eligible model of the offline benchmark
(observed on >= 3 tasks) is hidden and placed by the post-hoc model map of
`Fennec.add_models` from its metadata features (`fennec_cold`) or from those
plus the top principal components of the WL subtree counts of its traced
graph (`fennec_cold_arch`, `models_out.wl_graph_features`), beside the
task's mean score (`mean_model`) and the nearest model in either feature
space (`nearest_model`, `nearest_model_arch`).

Command:

  PYTHONPATH=. nice -n 10 .venv/bin/python \
      experiments/benchmarks/models_out_arch.py --out=/tmp/models_out_arch

Writes `DIR/models_out_arch.csv` (per model and `MEAN` rows) and prints the
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
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the space.')


def main(argv):
  del argv
  t0 = time.time()
  history = offline.load()
  graphs = [offline.load_graph(m) for m in history.model_ids]
  rows = models_out.evaluate_models_out_arch(
      history, graphs, space_config={'rank': _RANK.value} if _RANK.value
      else None, seed=_SEED.value, components=_COMPONENTS.value)
  os.makedirs(_OUT.value, exist_ok=True)
  path = os.path.join(_OUT.value, 'models_out_arch.csv')
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
