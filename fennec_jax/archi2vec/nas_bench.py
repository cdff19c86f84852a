"""NAS-Bench-201 (NATS-Bench TSS) as an external check of the encoders.

The 15,625 cells of NAS-Bench-201 have known CIFAR-10, CIFAR-100 and
ImageNet16-120 test accuracies. A cell string `|op~0|+|op~0|op~1|+|op~0|op~1|
op~2|` lists, for cell nodes 1, 2, 3, the op on each edge j -> i. The encoders
work on op-on-node DAGs, so `cell_to_dag` turns every edge into a node
(`input` -> edge ops -> `output`; edge j -> i feeds every op leaving node i).
`none` edges carry no data and are removed, and ops that cannot reach the
output (or be reached from the input) are pruned, so cells that compute the
same function map to the same DAG.

The experiment (`run`): for each seed draw `train_fraction` of the cells,
train the GNN regressor (and the WL + ridge baseline) on them, and report
Kendall's tau between predicted and true accuracy on all other cells. On
CIFAR-10 it also runs FLAN's protocol (`flan_split`): 78 / 128 / 256 training
cells drawn from a fixed half of the cells, tested on the other half. FLAN
ranks by CIFAR-10 validation accuracy, which the bundled table lacks; these
rows use the same 200-epoch test accuracy as the rest.

The GNN trains on dense batches (`graphs.DenseGraphs`, cells have at most 8
nodes) with a pairwise logistic ranking loss; ensemble members train as one
vmapped batch.
"""

import csv
import dataclasses
import functools
import os
import pathlib
import time
from collections.abc import Sequence
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import optax
import scipy.stats

from fennec_jax import files
from fennec_jax.archi2vec import gnn
from fennec_jax.archi2vec import graphs as graphs_lib
from fennec_jax.archi2vec import wl

OPS = ('none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3',
       'avg_pool_3x3')
VOCAB = graphs_lib.OpVocab(['input', 'output', 'skip_connect', 'nor_conv_1x1',
                            'nor_conv_3x3', 'avg_pool_3x3'])
DATASETS = {
    'cifar10': 'CIFAR10TestAccuracy200Epochs',
    'cifar100': 'CIFAR100TestAccuracy200Epochs',
    'imagenet16_120': 'ImageNetTestAccuracy200Epochs',
}
CELL_COLUMN = 'ArchitectureString'
# FLAN (abdelfattah-lab/flan_nas, nb201_samp_eff.csv): training-set sizes of
# its sample-efficiency table, drawn from a fixed half of the cells.
FLAN_SIZES = (78, 128, 256)
FLAN_POOL_SEED = 0
DEFAULT_CSV = (pathlib.Path(__file__).resolve().parents[2] / 'third_party' /
               'nats_bench_tss' / 'nats_bench_tss_15625.csv')


def parse_cell(cell: str) -> list[list[tuple[str, int]]]:
  """`'|a~0|+|b~0|c~1|+|...|'` -> per cell node i=1..3, its `(op, j)` edges.

  Raises:
    ValueError: the string is not a 4-node NAS-Bench-201 cell.
  """
  groups = cell.strip().split('+')
  if len(groups) != 3:
    raise ValueError(f'Cell {cell!r}: expected 3 "+"-separated node groups, '
                     f'got {len(groups)}.')
  nodes = []
  for i, group in enumerate(groups, start=1):
    if not (group.startswith('|') and group.endswith('|')):
      raise ValueError(f'Cell {cell!r}: group {group!r} must be "|op~j|...|".')
    edges = []
    for item in group[1:-1].split('|'):
      op, sep, j = item.partition('~')
      if not sep or op not in OPS or not j.isdigit():
        raise ValueError(f'Cell {cell!r}: bad edge {item!r}; expected op~j '
                         f'with op in {OPS}.')
      edges.append((op, int(j)))
    if sorted(j for _, j in edges) != list(range(i)):
      raise ValueError(f'Cell {cell!r}: node {i} must have one edge from each '
                       f'of nodes 0..{i - 1}, got {edges}.')
    nodes.append(edges)
  return nodes


def cell_to_dag(cell: str, prune: bool = True) -> nx.DiGraph:
  """The op-on-node DAG of a NAS-Bench-201 cell string.

  Args:
    cell: NAS-Bench-201 architecture string.
    prune: drop op nodes not on an input -> output path (`none` edges are
      always dropped: they carry no data).

  Returns:
    DAG with nodes `in`, `e<j><i>` (op on edge j -> i) and `out`, each with
    an `op` attribute.
  """
  nodes = parse_cell(cell)
  g = nx.DiGraph(name=cell)
  g.add_node('in', op='input')
  into: dict[int, list[str]] = {0: ['in'], 1: [], 2: [], 3: []}
  for i, edges in enumerate(nodes, start=1):
    for op, j in sorted(edges, key=lambda e: e[1]):
      if op == 'none':
        continue
      name = f'e{j}{i}'
      g.add_node(name, op=op)
      for src in into[j]:
        g.add_edge(src, name)
      into[i].append(name)
  g.add_node('out', op='output')
  for src in into[3]:
    g.add_edge(src, 'out')
  if prune:
    live = (nx.descendants(g, 'in') | {'in'}) & (nx.ancestors(g, 'out') |
                                                 {'out'})
    g.remove_nodes_from([n for n in list(g) if n not in live | {'in', 'out'}])
  return g


def load_table(path: str | os.PathLike[str] | None = None
               ) -> tuple[list[str], dict[str, np.ndarray]]:
  """Cells and accuracies (%) from the NATS-Bench TSS CSV.

  Raises:
    ValueError: missing file or column, or a row with a bad accuracy/cell.
  """
  path = pathlib.Path(path or DEFAULT_CSV)
  if not path.exists():
    raise ValueError(f'{path}: NAS-Bench-201 table not found.')
  cells, acc = [], {k: [] for k in DATASETS}
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    need = [CELL_COLUMN] + list(DATASETS.values())
    missing = [c for c in need if c not in (reader.fieldnames or [])]
    if missing:
      raise ValueError(f'{path}: missing columns {missing}; has '
                       f'{reader.fieldnames}.')
    for row_no, row in enumerate(reader, start=2):
      try:
        parse_cell(row[CELL_COLUMN])
        for k, col in DATASETS.items():
          v = float(row[col])
          if not 0.0 <= v <= 100.0:
            raise ValueError(f'{col}={v} is not an accuracy in [0, 100]')
          acc[k].append(v)
      except ValueError as e:
        raise ValueError(f'{path}, row {row_no}: {e}') from None
      cells.append(row[CELL_COLUMN])
  return cells, {k: np.asarray(v, np.float64) for k, v in acc.items()}


@dataclasses.dataclass(frozen=True)
class GNNConfig:
  """GNN regressor hyper-parameters for the NAS-Bench-201 check.

  Chosen by 3-fold inner validation on the 1% protocol's training cells
  (CIFAR-10, seeds 0-2, Kendall tau on the held-out third; never the test
  cells): the pairwise ranking loss alone (`mse_weight` 0) 0.737 vs MSE +
  ranking 0.704 (width 64, 600 steps, one model); an ensemble of 5 models of
  width 32 trained 300 steps 0.750, of 3 such models 0.747, of 3 width-64
  models (600 steps) 0.750 at 3x the time
  (experiments/configs/nas_bench.py).
  """
  hidden: int = 32
  num_layers: int = 4
  embed_dim: int = 32
  steps: int = 300
  learning_rate: float = 2e-3
  weight_decay: float = 1e-3
  mse_weight: float = 0.0
  rank_weight: float = 1.0
  ensemble: int = 5
  eval_batch: int = 4096


def _pairwise_rank_loss(pred: jax.Array, y: jax.Array,
                        mask: jax.Array) -> jax.Array:
  """Logistic loss on every ordered pair of real graphs (RankNet)."""
  diff = pred[:, None] - pred[None, :]
  sign = jnp.sign(y[:, None] - y[None, :])
  w = mask[:, None] * mask[None, :] * (sign != 0)
  loss = jax.nn.softplus(-sign * diff)
  return (loss * w).sum() / jnp.maximum(w.sum(), 1.0)


@functools.lru_cache(maxsize=8)
def _gnn_functions(config: GNNConfig, vocab_size: int):
  """Jitted train / predict of an ensemble for one config, cached."""
  model = gnn.GraphRegressor(vocab_size, config.hidden, config.num_layers,
                             config.embed_dim)
  sched = optax.cosine_decay_schedule(config.learning_rate, config.steps)
  tx = optax.adamw(sched, weight_decay=config.weight_decay)

  def loss_fn(p, graph, target, mask):
    pred = model.apply(p, graph)
    mse = (((pred - target) ** 2) * mask).sum() / mask.sum()
    return (config.mse_weight * mse +
            config.rank_weight * _pairwise_rank_loss(pred, target, mask))

  def train_one(key, graph, target, mask):
    params = model.init(key, graph)

    def body(carry, _):
      p, o = carry
      loss, grads = jax.value_and_grad(loss_fn)(p, graph, target, mask)
      updates, o = tx.update(grads, o, p)
      return (optax.apply_updates(p, updates), o), loss
    (params, _), losses = jax.lax.scan(body, (params, tx.init(params)), None,
                                       length=config.steps)
    return params, losses

  # Dense cells have no scatter-adds, so the ensemble members train as one
  # vmapped batch.
  train = gnn.jit_encoder(jax.vmap(train_one, in_axes=(0, None, None, None)))
  predict = gnn.jit_encoder(
      lambda ps, graph: jax.vmap(model.apply, in_axes=(0, None))(
          ps, graph).mean(0))
  return train, predict


def fit_gnn(train_arrays: Sequence[dict[str, np.ndarray]], y: np.ndarray,
            config: GNNConfig, seed: int, n_node: int | None = None,
            n_graph: int | None = None) -> Any:
  """Trains an ensemble of `GraphRegressor`s on standardized targets.

  Cells are batched densely (`graphs.DenseGraphs`): all training cells in
  one batch, full-batch steps.

  Args:
    train_arrays: training graphs (`graphs.graph_to_arrays` dicts).
    y: their targets.
    config: hyper-parameters.
    seed: root seed of the ensemble's initializations.
    n_node: nodes per graph after padding (default: the largest graph);
      keep it fixed across calls to compile once.
    n_graph: graphs in the training batch after padding (default: all).

  Returns:
    `predict(arrays) -> np.ndarray`, the ensemble mean.
  """
  train, predict_fn = _gnn_functions(config, len(VOCAB))
  n = len(train_arrays)
  n_node = n_node or max(len(a['op']) for a in train_arrays)
  n_graph = n_graph or n
  graph = graphs_lib.to_dense(train_arrays, n_node, n_graph)
  mu, sd = float(np.mean(y)), float(np.std(y) + 1e-8)
  target = np.zeros(n_graph, np.float32)
  target[:n] = (y - mu) / sd
  mask = np.zeros(n_graph, np.float32)
  mask[:n] = 1.0
  keys = jax.random.split(jax.random.key(seed), config.ensemble)
  t0 = time.time()
  members, losses = train(keys, graph, target, mask)
  losses = np.asarray(losses).mean(0)
  logging.info('fit_gnn: seed %d, %d graphs, %d steps x %d models in %.1fs, '
               'loss %.4f -> %.4f', seed, n, config.steps, config.ensemble,
               time.time() - t0, losses[0], losses[-1])

  def predict(arrays: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    return gnn.embed_all(predict_fn, members, arrays, config.eval_batch,
                         dense_nodes=n_node)

  return predict


def kendall_tau(pred: np.ndarray, truth: np.ndarray) -> float:
  """Kendall's tau-b (scipy) between predictions and ground truth."""
  return float(scipy.stats.kendalltau(pred, truth).statistic)


def inner_validation(train_arrays: Sequence[dict[str, np.ndarray]],
                     y: np.ndarray, config: GNNConfig, seed: int,
                     folds: int = 3) -> float:
  """Mean Kendall tau over `folds` folds of the training cells alone.

  How `GNNConfig`'s defaults were chosen: each fold of the (shuffled)
  training cells is predicted by a GNN trained on the other folds; the test
  cells are never seen. Folds have equal sizes (a remainder of cells is left
  out), so one compilation serves every fold.

  Raises:
    ValueError: fewer than 2 cells per fold.
  """
  size = len(train_arrays) // folds
  if folds < 2 or size < 2:
    raise ValueError(f'inner_validation: {len(train_arrays)} cells in '
                     f'{folds} folds; need folds >= 2 and >= 2 cells each.')
  perm = np.random.default_rng(seed).permutation(len(train_arrays))
  n_node = max(len(a['op']) for a in train_arrays)
  taus = []
  for f in range(folds):
    held = perm[f * size:(f + 1) * size]
    fit = np.concatenate([perm[:f * size], perm[(f + 1) * size:folds * size]])
    predict = fit_gnn([train_arrays[i] for i in fit], y[fit], config,
                      seed=seed * folds + f, n_node=n_node)
    taus.append(kendall_tau(predict([train_arrays[i] for i in held]),
                            y[held]))
  return float(np.mean(taus))


def split(n: int, train_fraction: float, seed: int
          ) -> tuple[np.ndarray, np.ndarray]:
  """A seeded random train/test split of `n` items."""
  if not 0.0 < train_fraction < 1.0:
    raise ValueError(f'train_fraction must be in (0, 1), got {train_fraction}.')
  n_train = max(2, int(round(train_fraction * n)))
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def flan_split(n: int, size: int, seed: int
               ) -> tuple[np.ndarray, np.ndarray]:
  """FLAN's protocol: `size` training cells from a fixed half, test the rest.

  The training pool is a fixed half of the cells, the first `ceil(n / 2)`
  (7,813 of 15,625) of a permutation seeded by `FLAN_POOL_SEED`, the same for
  every seed; `seed` draws `size` cells from it. The test set is the other
  half (7,812 cells), whatever `size` is.

  Raises:
    ValueError: `size` outside [2, pool size].
  """
  perm = np.random.default_rng(FLAN_POOL_SEED).permutation(n)
  pool, test = perm[:(n + 1) // 2], perm[(n + 1) // 2:]
  if not 2 <= size <= len(pool):
    raise ValueError(f'FLAN protocol: {size} training cells; valid: 2..'
                     f'{len(pool)} (the training half of {n} cells).')
  train = np.random.default_rng(seed).choice(pool, size, replace=False)
  return np.sort(train), np.sort(test)


def _protocols(n: int, train_fraction: float, flan_sizes: Sequence[int],
               datasets: Sequence[str], seed: int):
  """`(protocol, dataset, train, test)` of one seed: the fraction split on
  every data set, then FLAN's splits on CIFAR-10 (its published numbers are
  CIFAR-10 only)."""
  tr, te = split(n, train_fraction, seed)
  for ds in datasets:
    yield main_protocol(train_fraction), ds, tr, te
  if 'cifar10' in datasets:
    for size in flan_sizes:
      yield (f'flan{size}', 'cifar10') + flan_split(n, size, seed)


def main_protocol(train_fraction: float) -> str:
  """Protocol name of the random-fraction split, e.g. 'fraction0.01'."""
  return f'fraction{train_fraction:g}'


def run(*, csv_path: str | os.PathLike[str] | None = None,
        train_fraction: float = 0.01, seeds: int = 5,
        datasets: Sequence[str] = tuple(DATASETS),
        methods: Sequence[str] = ('gnn', 'wl'),
        flan_sizes: Sequence[int] = FLAN_SIZES,
        gnn_config: GNNConfig | None = None,
        wl_config: dict[str, Any] | None = None,
        limit: int | None = None) -> list[dict[str, Any]]:
  """The NAS-Bench-201 check: per seed, protocol, dataset, method, Kendall tau.

  Args:
    csv_path: NATS-Bench TSS CSV (default: the copy in third_party/).
    train_fraction: fraction of cells used for training (0.01 -> 156).
    seeds: number of seeds (0..seeds-1); each draws its own splits.
    datasets: subset of `DATASETS`.
    methods: subset of ('gnn', 'wl').
    flan_sizes: training-set sizes of FLAN's protocol (`flan_split`), run on
      CIFAR-10 when it is in `datasets`; () skips it.
    gnn_config: GNN hyper-parameters.
    wl_config: keyword arguments of `wl.WLRegressor` / graph2vec.
    limit: use only the first `limit` cells (tests).

  Returns:
    rows `{'protocol', 'method', 'dataset', 'seed', 'n_train', 'n_test',
    'kendall_tau', 'seconds'}`; protocol is `main_protocol(train_fraction)`
    or `'flan<size>'`.
  """
  bad = [d for d in datasets if d not in DATASETS]
  if bad:
    raise ValueError(f'Unknown datasets {bad}; valid: {list(DATASETS)}.')
  bad = [m for m in methods if m not in ('gnn', 'wl')]
  if bad:
    raise ValueError(f'Unknown methods {bad}; valid: gnn, wl.')
  gnn_config = gnn_config or GNNConfig()
  cells, acc = load_table(csv_path)
  if limit:
    cells = cells[:limit]
    acc = {k: v[:limit] for k, v in acc.items()}
  for size in flan_sizes:  # Bad sizes fail before any training.
    flan_split(len(cells), size, 0)
  t0 = time.time()
  dags = [cell_to_dag(c) for c in cells]
  arrays = [graphs_lib.graph_to_arrays(g, VOCAB, strict=True) for g in dags]
  n_node = max(len(a['op']) for a in arrays)
  logging.info('nas_bench: %d cells -> DAGs in %.1fs', len(cells),
               time.time() - t0)
  wl_model = None
  if 'wl' in methods:
    t0 = time.time()
    wl_model = wl.Graph2Vec(**(wl_config or {})).fit(dags)
    wl_seconds = time.time() - t0
    logging.info('nas_bench: graph2vec on %d graphs in %.1fs', len(dags),
                 wl_seconds)
  rows = []
  for seed in range(seeds):
    for protocol, ds, tr, te in _protocols(len(cells), train_fraction,
                                           flan_sizes, datasets, seed):
      y = acc[ds]
      common = dict(protocol=protocol, dataset=ds, seed=seed,
                    n_train=len(tr), n_test=len(te))
      if 'gnn' in methods:
        t0 = time.time()
        predict = fit_gnn([arrays[i] for i in tr], y[tr], gnn_config,
                          seed=seed, n_node=n_node)
        t1 = time.time()
        pred = predict([arrays[i] for i in te])
        logging.info('nas_bench: predicted %d cells in %.1fs', len(te),
                     time.time() - t1)
        rows.append(dict(common, method='gnn',
                         kendall_tau=kendall_tau(pred, y[te]),
                         seconds=time.time() - t0))
      if wl_model is not None:
        t0 = time.time()
        pred = wl.ridge_fit_predict(wl_model.embeddings[tr], y[tr],
                                    wl_model.embeddings[te])
        rows.append(dict(common, method='wl',
                         kendall_tau=kendall_tau(pred, y[te]),
                         seconds=time.time() - t0))
      for r in rows[-len(methods):]:
        logging.info('nas_bench: seed %d %s %s %s tau=%.4f (%.1fs)', seed,
                     protocol, r['dataset'], r['method'], r['kendall_tau'],
                     r['seconds'])
  return rows


def run_from_config(config: Any, out_dir: str) -> list[dict[str, Any]]:
  """Runs the check from an `experiments/configs/nas_bench.py` config.

  Writes `out_dir/results.csv` and `per_seed.csv`; returns the rows.
  """
  rows = run(csv_path=config.csv or None,
             train_fraction=config.train_fraction, seeds=config.seeds,
             datasets=tuple(config.datasets), methods=tuple(config.methods),
             flan_sizes=tuple(config.flan_sizes),
             gnn_config=GNNConfig(**config.gnn.to_dict()),
             wl_config=config.wl.to_dict(), limit=config.limit or None)
  write_results(out_dir, rows)
  return rows


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Mean (and std) Kendall tau over seeds per (protocol, method, dataset)."""
  keys = list(dict.fromkeys((r['protocol'], r['method'], r['dataset'])
                            for r in rows))
  out = []
  for p, m, d in keys:
    taus = [r['kendall_tau'] for r in rows
            if (r['protocol'], r['method'], r['dataset']) == (p, m, d)]
    out.append(dict(protocol=p, method=m, dataset=d,
                    kendall_tau=float(np.mean(taus)),
                    std=float(np.std(taus)), seeds=len(taus)))
  return out


def format_table(summary: Sequence[dict[str, Any]]) -> str:
  """A markdown table: rows = method (and protocol), columns = dataset.

  The first protocol's rows are named by method alone, the others (FLAN's)
  `method [protocol]`.
  """
  first = summary[0]['protocol'] if summary else None
  label = lambda s: (s['method'] if s['protocol'] == first else
                     f'{s["method"]} [{s["protocol"]}]')
  methods = list(dict.fromkeys(label(s) for s in summary))
  dsets = list(dict.fromkeys(s['dataset'] for s in summary))
  cell = {(label(s), s['dataset']): s for s in summary}
  lines = ['| method | ' + ' | '.join(dsets) + ' |',
           '|---|' + '---|' * len(dsets)]
  for m in methods:
    vals = []
    for d in dsets:
      s = cell.get((m, d))
      vals.append('' if s is None else
                  f'{s["kendall_tau"]:.3f} ± {s["std"]:.3f}')
    lines.append(f'| {m} | ' + ' | '.join(vals) + ' |')
  return '\n'.join(lines)


def write_results(out_dir: str | os.PathLike[str],
                  rows: Sequence[dict[str, Any]]) -> dict[str, str]:
  """Writes `results.csv` and `per_seed.csv` (atomically).

  `results.csv` has columns `method,dataset,kendall_tau,std,seeds,protocol`
  (mean and std over seeds; protocol as in `run`), `per_seed.csv` one row
  per seed.
  """
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  summary = summarize(rows)
  paths = dict(results=str(out_dir / 'results.csv'),
               per_seed=str(out_dir / 'per_seed.csv'))
  fields = ['method', 'dataset', 'kendall_tau', 'std', 'seeds', 'protocol']
  _write_csv(paths['results'], fields, [
      dict(s, kendall_tau=f'{s["kendall_tau"]:.6f}', std=f'{s["std"]:.6f}')
      for s in summary])
  _write_csv(paths['per_seed'], ['protocol', 'method', 'dataset', 'seed',
                                 'n_train', 'n_test', 'kendall_tau',
                                 'seconds'], rows)
  return paths


def _write_csv(path: str, fields: Sequence[str],
               rows: Sequence[dict[str, Any]]) -> None:
  """Writes `rows` (their `fields`) to `path` atomically."""
  def write(tmp):
    with open(tmp, 'w', newline='') as f:
      w = csv.DictWriter(f, fieldnames=list(fields))
      w.writeheader()
      for r in rows:
        w.writerow({k: r[k] for k in fields})
  files.write_atomically(path, write)
