r"""Joint vs post-hoc side information (`fennec_jax.joint`).

Protocol `models` (cold-start model; the splits and metrics of
`fennec evaluate --protocol=models`): each held-out model (observed on >= 3
tasks) is placed from its metadata; `fennec_cold` (space fit, then a ridge
map metadata -> model features), `joint` (the metadata inside the fit, same
rank), `mean_model`, `nearest_model`. Protocol `tasks`: each task is placed
from its task metadata (`--config.task_side=proxy` on the offline benchmark:
its proxy embedding); `joint` against `fennec_posthoc` (ridge task map) and
`popularity`. Logic: `fennec_jax.benchmarks.comparisons`.

Command:

  python experiments/main.py --config=experiments/configs/joint_eval.py \
      --workdir=runs/joint_eval

Writes `joint_eval_<benchmark>_<protocol>.csv` and `.json` (means). Other
runs: `--config.protocol=tasks`; on the offline benchmark
`--config.benchmark=offline --config.protocol=tasks --config.task_side=proxy`
and `--config.benchmark=offline --config.graphs` (also `joint_graph`: the
archi2vec GNN on the models' traced graphs). Expected: no numbers are
recorded in the repository; README ("Known limits") states the joint space
is on par with the post-hoc maps on the public tables. Runtime: not recorded
in the repository.

Tiny variant for tests (2 held-out models, 200 joint steps):
`--config=experiments/configs/joint_eval.py:tiny`, measured
73 s wall at load 12.5 on the shared 2-core CPU.
"""

import ml_collections

from fennec_jax.benchmarks import runner


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The joint-vs-post-hoc config; `arg='tiny'` shrinks it for tests."""
  if arg not in (None, '', 'tiny'):
    raise ValueError(f'unknown config variant {arg!r}; valid: tiny.')
  config = runner.default_config('joint_eval')
  if arg == 'tiny':
    config.max_models = 2
    config.joint.max_steps = 200
  return config
