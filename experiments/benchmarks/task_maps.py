r"""Fennec's task maps on the offline benchmark, over probe draws.

A flag front end of the 'task_maps' runner (the experiment config is
experiments/configs/task_maps.py; the logic
`fennec_jax.benchmarks.comparisons.task_maps`): leave one task out on all
26 offline targets at K = 0 with Fennec's 'neighbors' and 'ridge' task maps
and popularity, over `--seeds` probe draws; with `--k_shot=K` also images +
scores against scores only on the models not revealed.

Command (7.3 min for 4 seeds on the 2-core CPU at load ~14; 35 s idle
before the K-shot fold-in's calibration):

  .venv/bin/python experiments/benchmarks/task_maps.py --seeds=4 \
      --out=experiments/benchmarks/results

Writes `DIR/task_maps_offline.json` and `DIR/config.json`.
"""

import json

from absl import app
from absl import flags

from fennec_jax.benchmarks import runner

_SEEDS = flags.DEFINE_integer('seeds', 4, 'Probe draws (seeds 0..N-1).')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 100,
                                   'Probe images per task through the proxy.')
_K_SHOT = flags.DEFINE_integer('k_shot', 5, 'Observed scores per target in '
                               'the images + scores comparison; 0 skips it.')
_OUT = flags.DEFINE_string('out', 'runs/task_maps', 'Output directory.')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  config = runner.default_config('task_maps')
  config.seeds = _SEEDS.value
  config.num_images = _NUM_IMAGES.value
  config.k_shot = _K_SHOT.value
  result = runner.run(config, _OUT.value)
  print(json.dumps({k: result[k] for k in (
      'mean_weighted_tau_per_seed', 'mean_weighted_tau', 'min_over_seeds',
      'seconds')}, indent=1))


if __name__ == '__main__':
  app.run(main)
