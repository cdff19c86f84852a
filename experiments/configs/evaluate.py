r"""Leave-one-task-out evaluation of the transfer space against baselines.

Command (the README's main job; 8 TransferGraph targets x K in {0,1,3,5,10} x
10 seeds; methods popularity, imagenet_acc, logme, reg_h_score, fennec_space,
paper_nmf):

  python experiments/main.py --config=experiments/configs/evaluate.py \
      --workdir=runs/evaluate

Same as `fennec evaluate --benchmark=transfergraph_image --out=runs/evaluate`.
Runtime on the 2-core CPU: ~12 s of CPU time (measured 38 s wall while the
machine ran at load 15); two transfer-space fits per target dominate.
Every task as a target: `--config.all_targets`. Another benchmark:
`--config.benchmark=model_spider_single`. A CSV: `--config.benchmark=
--config.history=FILE.csv`.

Tiny variant for tests (2 targets, K in {0,1}, 2 seeds, 50 space steps; a few
seconds): `--config=experiments/configs/evaluate.py:tiny`.
"""

import dataclasses

import ml_collections

from fennec_jax import space


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The evaluation config; `arg='tiny'` shrinks it for tests."""
  config = ml_collections.ConfigDict()
  config.runner = 'evaluate'
  config.benchmark = 'transfergraph_image'
  config.history = ''  # A long-format CSV instead of a benchmark.
  config.k_shots = (0, 1, 3, 5, 10)
  config.num_seeds = 10
  config.targets = ()  # () = the benchmark's reported targets (or all).
  config.all_targets = False
  config.methods = ()  # () = every method that applies.
  config.seed = 0
  # Overrides of fennec_jax.space.SpaceConfig (its defaults, spelled out).
  defaults = dataclasses.asdict(space.SpaceConfig())
  config.space = ml_collections.ConfigDict(
      {k: v for k, v in defaults.items() if v is not None})
  if arg == 'tiny':
    config.k_shots = (0, 1)
    config.num_seeds = 2
    config.targets = ('pets', 'dtd')
    config.space.max_steps = 50
    config.space.eval_every = 25
  elif arg:
    raise ValueError(f'unknown config variant {arg!r}; valid: tiny.')
  return config
