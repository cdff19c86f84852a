r"""The images protocol on the offline benchmark: methods see the
target's probe images; every estimator runs the whole zoo, timed.

Command (all 26 targets, K = 0, one draw):

  python experiments/main.py --config=experiments/configs/images.py \
      --workdir=runs/offline_images

Same as `fennec evaluate --benchmark=offline --protocol=images --k_shots=0
--seeds=1 --out=runs/offline_images`. Runtime: 21 min on the shared 2-core CPU
(README). Expected (README, weighted tau [95% CI], s / target): fennec 0.640
[0.588, 0.689] at 0.135 s, reg_hscore 0.627 at 2.27 s, fennec_paper 0.613,
fennec_ridge 0.597, popularity 0.582, logme 0.525. Recorded in
`experiments/benchmarks/results/offline_images_*`.

Tiny variant for tests (2 targets, estimators logme and reg_hscore, no
fennec_paper, 100 space steps, on the committed offline data):
`--config=experiments/configs/images.py:tiny`, measured
516 s wall at load 13.5 on the shared 2-core CPU:
the zoo forward passes dominate (30 models compiled and run on each
target's probe, ~3 min per target here), not the estimators.
"""

import ml_collections

from fennec_jax.benchmarks import runner


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The images-protocol config; `arg='tiny'` shrinks it for tests."""
  if arg not in (None, '', 'tiny'):
    raise ValueError(f'unknown config variant {arg!r}; valid: tiny.')
  config = runner.default_config('images')
  config.k_shots = (0,)
  config.num_seeds = 1
  if arg == 'tiny':
    config.targets = ('shape_color', 'count_parity')
    config.models = ('mlp_s__fashion_all', 'cnn_s__shape_polygon',
                     'resnet_s__count_big', 'vit_s__fashion_upper',
                     'mixer_s__shape_rotation', 'cnn_s__fashion_lower',
                     'resnet_s__shape_pairs', 'mlp_s__count_lines')
    config.estimators = ('logme', 'reg_hscore')
    config.paper = False
    config.space.max_steps = 100
  return config
