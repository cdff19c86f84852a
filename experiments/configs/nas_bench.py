r"""NAS-Bench-201 check of the archi2vec encoders (GNN vs WL/graph2vec).

Command:

  python experiments/main.py --config=experiments/configs/nas_bench.py \
      --workdir=runs/nas_bench

Same as `fennec nas-bench --config=experiments/configs/nas_bench.py
--out=runs/nas_bench` and `fennec nas-bench --train_fraction=0.01 --seeds=5
--out=runs/nas_bench`. 156 training cells per seed, Kendall tau on the other
15,469 cells, for CIFAR-10, CIFAR-100 and ImageNet16-120, mean ± std over 5
seeds; on CIFAR-10 also FLAN's protocol: 78 / 128 / 256 cells drawn from a
fixed 7,813-cell half (`nas_bench.flan_split`, permutation seed 0), Kendall
tau on the other 7,812 cells. FLAN's published numbers
(abdelfattah-lab/flan_nas, nb201_samp_eff.csv) rank CIFAR-10 *validation*
accuracy; the bundled table has only the 200-epoch test accuracy, used here.

Runtime on the 2-core CPU shared with other jobs (load average 10-13): 17 min
23 s wall, 9 min 45 s CPU (graph2vec 140 s; the GNN 464 s for the 1% rows,
407 s for the FLAN rows; `--flan_sizes=` skips those). Measured Kendall tau:

  | method           | cifar10       | cifar100      | imagenet16_120 |
  | gnn (1%)         | 0.813 ± 0.007 | 0.799 ± 0.006 | 0.784 ± 0.007  |
  | wl (1%)          | 0.452 ± 0.052 | 0.547 ± 0.033 | 0.625 ± 0.013  |
  | gnn, FLAN 78     | 0.768 ± 0.021 |   (FLAN 0.788)                 |
  | gnn, FLAN 128    | 0.797 ± 0.011 |   (FLAN 0.829)                 |
  | gnn, FLAN 256    | 0.848 ± 0.003 |   (FLAN 0.870)                 |
  | wl, FLAN 78/128/256 | 0.270 / 0.216 / 0.444 |                      |

Before (MSE + ranking loss, one width-64 model, 600 steps, sparse batches):
gnn 0.741 ± 0.016 / 0.748 ± 0.015 / 0.721 ± 0.012 in 14 min 12 s at load ~14
(no FLAN rows). The GNN defaults (`nas_bench.GNNConfig`: ranking loss alone,
5 models of width 32, 300 steps) were chosen by 3-fold inner validation on the
1% training cells of seeds 0-2 (`nas_bench.inner_validation`), never on test
cells; the GNNConfig docstring gives those numbers.

Tiny variant for tests (400 cells, 1 seed, 30 steps, FLAN size 40):
`--config=experiments/configs/nas_bench.py:tiny`, measured
22 s wall at load 5.9 on the shared 2-core CPU.
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
    config.flan_sizes = (40,)
    config.gnn.update(hidden=16, num_layers=2, embed_dim=16, steps=30,
                      ensemble=2, eval_batch=256)
    config.wl.update(dim=16, epochs=2, batch_size=256)
  return config
