r"""Leave one model out: an unseen model placed from its metadata.

Command:

  python experiments/main.py --config=experiments/configs/models_out.py \
      --workdir=runs/models_out

Same as `fennec evaluate --benchmark=parc_controlled --protocol=models
--out=runs/models_out`; writes `models_out.csv`. Expected (README, mean rank
error, lower is better): fennec_cold 0.160, mean_model 0.258, nearest_model
0.270. On transfergraph_image (`--config.benchmark=transfergraph_image`)
nearest_model wins (0.188 against 0.246). Runtime: not recorded in the
repository.

Tiny variant for tests (model_spider_single: 10 models; 100 space steps):
`--config=experiments/configs/models_out.py:tiny`, measured
37 s wall at load 11.7 on the shared 2-core CPU.
"""

import ml_collections

from fennec_jax.benchmarks import runner


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The leave-one-model-out config; `arg='tiny'` shrinks it for tests."""
  if arg not in (None, '', 'tiny'):
    raise ValueError(f'unknown config variant {arg!r}; valid: tiny.')
  config = runner.default_config('models_out')
  config.benchmark = 'parc_controlled'
  if arg == 'tiny':
    config.benchmark = 'model_spider_single'
    config.space.max_steps = 100
  return config
