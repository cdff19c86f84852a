r"""NAS-Bench-201 check of the archi2vec encoders (GNN vs WL/graph2vec).

Command:

  python experiments/main.py --config=experiments/configs/nas_bench.py \
      --workdir=runs/nas_bench

Same as `fennec nas-bench --config=experiments/configs/nas_bench.py
--out=runs/nas_bench` and `fennec nas-bench --train_fraction=0.01 --seeds=5
--out=runs/nas_bench`. 156 training cells per seed, Kendall tau on the other
15,469 cells, for CIFAR-10, CIFAR-100 and ImageNet16-120, mean over 5 seeds.
Runtime on the 2-core CPU at load ~14 (shared): 14 min 12 s wall, 4 min 14 s
CPU (graph2vec on all 15,625 cells ~3.5 min wall, then 20-50 s per (seed,
data set) for the GNN). Measured Kendall tau (mean ± std over 5 seeds):

  | method | cifar10       | cifar100      | imagenet16_120 |
  | gnn    | 0.741 ± 0.016 | 0.748 ± 0.015 | 0.721 ± 0.012  |
  | wl     | 0.452 ± 0.052 | 0.547 ± 0.033 | 0.625 ± 0.013  |

An ensemble of 3 GNNs per split (`--config.gnn.ensemble=3`, ~3x the GNN
time) reaches 0.757 ± 0.014 on CIFAR-10 (measured with `fennec nas-bench
--seeds=5 --methods=gnn --datasets=cifar10 --ensemble=3`, 10 min 36 s wall at
load ~14).

Tiny variant for tests (400 cells, 1 seed, 30 steps):
`--config=experiments/configs/nas_bench.py:tiny`, measured
54 s wall at load 13.4 on the shared 2-core CPU.
"""

import ml_collections

from fennec_jax.benchmarks import runner


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The NAS-Bench-201 config; `arg='tiny'` shrinks it for tests."""
  if arg not in (None, '', 'tiny'):
    raise ValueError(f'Unknown config argument {arg!r}; valid: tiny.')
  config = runner.default_config('nas_bench')
  if arg == 'tiny':
    config.limit = 400
    config.seeds = 1
    config.train_fraction = 0.1
    config.datasets = ('cifar10',)
    config.gnn.update(hidden=16, num_layers=2, embed_dim=16, steps=30,
                      eval_batch=256)
    config.wl.update(dim=16, epochs=2, batch_size=256)
  return config
