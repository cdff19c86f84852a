r"""Fennec's task maps on the offline benchmark, over probe draws.

Leave one task out on all 26 offline targets at K = 0 with the methods that
need no zoo forward pass (Fennec with the 'neighbors' map, the 'ridge' map,
popularity), for 4 probe draws; with 5 observed scores per target also images
+ scores (`fennec_5`) against scores only (`space_5`) and images only on the
same models (`fennec_0_same_models`). Logic:
`fennec_jax.benchmarks.comparisons.task_maps`.

Command:

  python experiments/main.py --config=experiments/configs/task_maps.py \
      --workdir=runs/task_maps

Writes `task_maps_offline.json`. Runtime: 7.3 min for 4 seeds on the 2-core
CPU at load ~14 (the same runner through experiments/benchmarks/task_maps.py;
35 s before the K-shot calibration; README). Expected (README; recorded in
`experiments/benchmarks/results/task_maps_offline.json`, mean weighted tau
over the 4 draws): fennec 0.639 (0.637-0.641 per draw), fennec_ridge 0.599,
popularity 0.582, fennec_5 0.646, fennec_0_same_models 0.636, space_5 0.605
(learned K-shot fold-in with its metadata term; 0.610 without it, 0.594 with
the plain fold-in).

Tiny variant for tests (2 targets, 1 draw of 20 images):
`--config=experiments/configs/task_maps.py:tiny`, measured
92 s wall at load 13.5 on the shared 2-core CPU.
"""

import ml_collections

from fennec_jax.benchmarks import runner


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The task-maps config; `arg='tiny'` shrinks it for tests."""
  if arg not in (None, '', 'tiny'):
    raise ValueError(f'unknown config variant {arg!r}; valid: tiny.')
  config = runner.default_config('task_maps')
  if arg == 'tiny':
    config.seeds = 1
    config.num_images = 20
    config.targets = ('shape_color', 'count_parity')
  return config
