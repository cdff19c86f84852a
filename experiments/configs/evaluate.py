r"""Leave-one-task-out evaluation of the transfer space against baselines.

Command (the README's main job; 8 TransferGraph targets x K in {0,1,3,5,10} x
10 seeds; methods popularity, imagenet_acc, logme, reg_h_score, fennec_space,
paper_nmf):

  python experiments/main.py --config=experiments/configs/evaluate.py \
      --workdir=runs/evaluate

Same as `fennec evaluate --benchmark=transfergraph_image --out=runs/evaluate`.
Expected (README, mean over the 8 targets, Pearson / weighted tau at K=0):
fennec_space 0.799 / 0.666, popularity 0.834 / 0.618, paper_nmf 0.842 /
0.637; at K=5 fennec_space 0.805 / 0.690. Runtime on the 2-core CPU: 6.5 min
wall under load ~5 (README); the K-shot fold-in's calibration (about 12
transfer-space refits per target) dominates. Every task as a target: `--config.all_targets`. Another
benchmark: `--config.benchmark=model_spider_single`. A CSV:
`--config.benchmark= --config.history=FILE.csv`. The space's seed is
`--config.seed`; its other fields are under `--config.space.*`.

Tiny variant for tests (2 targets, K in {0,1}, 2 seeds, 50 space steps):
`--config=experiments/configs/evaluate.py:tiny`, measured
108 s wall at load 12.7 on the shared 2-core CPU.
"""

import ml_collections

from fennec_jax.benchmarks import runner


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The evaluation config; `arg='tiny'` shrinks it for tests."""
  if arg not in (None, '', 'tiny'):
    raise ValueError(f'unknown config variant {arg!r}; valid: tiny.')
  config = runner.default_config('evaluate')
  if arg == 'tiny':
    config.k_shots = (0, 1)
    config.num_seeds = 2
    config.targets = ('pets', 'dtd')
    config.space.max_steps = 50
    config.space.eval_every = 25
  return config
