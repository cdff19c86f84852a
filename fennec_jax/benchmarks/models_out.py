"""Leave one model out (`fennec evaluate --protocol=models`): cold-start
models placed from their metadata.

Each held-out model's row is hidden; methods place it from its metadata
features (`model_metadata.model_features`) and predict its scores on the tasks it was
observed on. Metrics per model: Pearson, weighted tau and `rank_error`.
`evaluate_models_out_arch` adds the same placement from metadata plus an
archi2vec (WL subtree) embedding of each model's architecture graph.
"""

from collections.abc import Mapping, Sequence
import csv
import os
from typing import Any

from absl import logging
import numpy as np
from scipy import stats

import networkx as nx

from fennec_jax import model_metadata
from fennec_jax import recommender
from fennec_jax import space as space_lib
from fennec_jax.archi2vec import gnn
from fennec_jax.archi2vec import graphs as graphs_lib
from fennec_jax.archi2vec import wl
from fennec_jax.benchmarks import protocol

# The methods, in output order.
FENNEC_COLD = 'fennec_cold'
MEAN_MODEL = 'mean_model'
NEAREST_MODEL = 'nearest_model'
# The same placements from metadata + the architecture-graph embedding.
FENNEC_COLD_ARCH = 'fennec_cold_arch'
NEAREST_MODEL_ARCH = 'nearest_model_arch'

MODELS_OUT_COLUMNS = ('method', 'model', 'pearson', 'weighted_tau',
                      'rank_error')


def principal_scores(x: np.ndarray, components: int) -> np.ndarray:
  """Scores `[n, k]` on the top k <= components principal components of x.

  Components with zero variance are left out, so k is at most the number of
  distinct rows minus one (0 columns when every row is equal).
  """
  x = np.asarray(x, np.float64)
  x = x - x.mean(0)
  u, s, _ = np.linalg.svd(x, full_matrices=False)
  k = min(components, int((s > 1e-9 * max(s.max(initial=0.0), 1.0)).sum()))
  return u[:, :k] * s[:k]


def wl_graph_features(graphs: Sequence[nx.DiGraph], components: int = 8,
                      iterations: int = 2) -> np.ndarray:
  """Architecture features: principal components of WL subtree counts.

  Each graph's Weisfeiler-Lehman document (`archi2vec.wl.wl_document`, op
  labels only) is counted over the words of all graphs, log1p-scaled and
  projected on its top principal components. Deterministic and uses no
  scores, so it may see every model's graph without leakage; few
  components keep the cold-start ridge map from drowning the metadata.

  Args:
    graphs: one op-labelled graph per model.
    components: most components kept (fewer when the graphs span fewer).
    iterations: WL refinement steps.

  Returns:
    `[len(graphs), k]` features, k <= components.

  Raises:
    ValueError: no graphs or components < 1.
  """
  if not graphs:
    raise ValueError('wl_graph_features: no graphs given.')
  if components < 1:
    raise ValueError(f'components must be >= 1, got {components}.')
  docs = [wl.wl_document(g, iterations) for g in graphs]
  vocab = {w: j for j, w in enumerate(sorted({w for d in docs for w in d}))}
  return principal_scores(np.log1p(wl.feature_counts(docs, vocab)),
                          components)


def gnn_graph_features(graphs: Sequence[nx.DiGraph], components: int = 8,
                       steps: int = 300, seed: int = 0) -> np.ndarray:
  """Architecture features: the archi2vec GNN, masked-op pretrained.

  `archi2vec.gnn.GraphEncoder` (which also sees the nodes' numeric
  features, e.g. widths) is pretrained by masked-op prediction on these
  graphs (unsupervised: no scores), and its embeddings are projected on
  their top principal components.

  Args:
    graphs: one architecture graph per model.
    components: most components kept.
    steps: pretraining steps (all graphs in one batch).
    seed: seed of the init, masks and batches.

  Returns:
    `[len(graphs), k]` features, k <= components.
  """
  if not graphs:
    raise ValueError('gnn_graph_features: no graphs given.')
  vocab = graphs_lib.OpVocab.from_graphs(graphs)
  arrays = [graphs_lib.graph_to_arrays(g, vocab) for g in graphs]
  model = gnn.GraphEncoder(len(vocab))
  params, _ = gnn.pretrain(model, arrays, steps=steps,
                           batch_size=len(arrays), seed=seed)
  emb = gnn.embed_all(model.apply, params, arrays, batch_size=len(arrays))
  return principal_scores(emb, components)


def percentile_rank(value: float, others: np.ndarray) -> float:
  """Fraction of `others` below `value` (ties count half)."""
  return float(((others < value).sum() + 0.5 * (others == value).sum())
               / len(others))


def evaluate_models_out(
    history: Any,
    model_embeddings: np.ndarray,
    models: Sequence[str] | None = None,
    space_config: Mapping[str, Any] | None = None,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
  """Leave one model out: place an unseen model from its embedding.

  For each held-out model m (default: every model observed on >= 3 tasks)
  the methods see the history without m's row and m's embedding, and
  predict m's score on each task m was observed on. Metrics per model, over
  its tasks: Pearson and weighted tau of predicted vs true scores, and
  `rank_error`, the mean over tasks of |predicted - true| percentile of m
  among the task's other models (both against their true scores).

  Methods: `fennec_cold` (`Fennec.fit(model_embeddings=...)` +
  `add_models`), `mean_model` (the task's mean score: no model knowledge),
  `nearest_model` (the scores of the nearest model in standardized
  embedding space, the task mean where it has none).

  Args:
    history: the History.
    model_embeddings: `[M, E]` features of every model.
    models: held-out models (default as above).
    space_config: `SpaceConfig` overrides.
    seed: seed of the space.
    groups: optional group of every model (e.g. its architecture); when set,
      a held-out model's whole group is hidden with it (leave one group
      out: no sibling's scores and no sibling as nearest model).

  Returns:
    Rows `{method, model, pearson, weighted_tau, rank_error}` plus one
    `model=protocol.MEAN` row per method (NaN values left out of the mean).

  Raises:
    ValueError: embeddings of the wrong shape or an unknown model.
  """
  emb = np.asarray(model_embeddings, np.float64)
  if emb.ndim != 2 or emb.shape[0] != history.num_models:
    raise ValueError(f'model_embeddings must be [{history.num_models}, E], '
                     f'got {emb.shape}.')
  if groups is not None and len(groups) != history.num_models:
    raise ValueError(f'groups must hold one group per model '
                     f'({history.num_models}), got {len(groups)}.')
  counts = history.mask.sum(1)
  if models is None:
    models = [m for i, m in enumerate(history.model_ids) if counts[i] >= 3]
  overrides = dict(space_config or {})
  overrides.setdefault('seed', seed)
  config = recommender.FennecConfig(space=space_lib.SpaceConfig(**overrides))
  z = (emb - emb.mean(0)) / np.where(emb.std(0) > 0, emb.std(0), 1.0)
  rows = []
  for model in models:
    i = history.model_index(model)
    keep = np.arange(history.num_models) != i
    if groups is not None:
      keep &= np.array([g != groups[i] for g in groups])
    train = history.subset(models=keep)
    tasks = np.flatnonzero(history.mask[i])
    true = history.scores[i, tasks]
    fennec = recommender.Fennec(config).fit(train, model_embeddings=emb[keep])
    grown = fennec.add_models([f'{model}::cold'], emb[i:i + 1])
    task_means = np.array([history.scores[keep & history.mask[:, t], t].mean()
                           for t in tasks])
    nearest = np.flatnonzero(keep)[np.argmin(
        ((z[keep] - z[i]) ** 2).sum(1))]
    preds = {
        FENNEC_COLD: np.asarray(grown.space.predict(), np.float64)[-1,
                                                                     tasks],
        MEAN_MODEL: task_means,
        NEAREST_MODEL: np.where(history.mask[nearest, tasks],
                                  history.scores[nearest, tasks], task_means),
    }
    for name, pred in preds.items():
      errs = []
      for p, y, t in zip(pred, true, tasks):
        others = history.scores[keep & history.mask[:, t], t]
        errs.append(abs(percentile_rank(p, others) -
                        percentile_rank(y, others)))
      defined = len(tasks) >= 2 and np.std(pred) > 0 and np.std(true) > 0
      rows.append({
          'method': name, 'model': model,
          'pearson': (float(stats.pearsonr(pred, true)[0]) if defined
                      else float('nan')),
          'weighted_tau': (float(stats.weightedtau(pred, true)[0]) if defined
                           else float('nan')),
          'rank_error': float(np.mean(errs))})
    logging.info('models out: %s (%d tasks) done', model, len(tasks))
  for name in (FENNEC_COLD, MEAN_MODEL, NEAREST_MODEL):
    mine = [r for r in rows if r['method'] == name]
    rows.append({'method': name, 'model': protocol.MEAN, **{
        k: protocol.nanmean([r[k] for r in mine], f'{name} {k} over models')
        for k in ('pearson', 'weighted_tau', 'rank_error')}})
  return rows


def evaluate_models_out_arch(
    history: Any,
    arch_features: np.ndarray,
    models: Sequence[str] | None = None,
    space_config: Mapping[str, Any] | None = None,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
  """Leave one model out from metadata vs metadata + architecture features.

  Runs `evaluate_models_out` on `model_metadata.model_features` and again on those
  features with `arch_features` (e.g. `wl_graph_features`) appended; the
  second run's `fennec_cold` and `nearest_model` rows are renamed
  `FENNEC_COLD_ARCH` and `NEAREST_MODEL_ARCH` (its `mean_model` rows,
  identical, are dropped).

  Args:
    history: the History.
    arch_features: `[M, A]` architecture features, in model order.
    models: held-out models (default: every model observed on >= 3 tasks).
    space_config: `SpaceConfig` overrides.
    seed: seed of the space.
    groups: as `evaluate_models_out` (hide the held-out model's group).

  Returns:
    Rows as `evaluate_models_out`, five methods.

  Raises:
    ValueError: `arch_features` not `[M, A]`.
  """
  arch = np.asarray(arch_features, np.float64)
  if arch.ndim != 2 or arch.shape[0] != history.num_models:
    raise ValueError(f'arch_features must be [{history.num_models}, A], '
                     f'got {arch.shape}.')
  meta, _ = model_metadata.model_features(history.model_metadata,
                                         history.name)
  logging.info('models out: %d metadata + %d architecture features.',
               meta.shape[1], arch.shape[1])
  rows = evaluate_models_out(history, meta, models, space_config, seed,
                             groups)
  renamed = {FENNEC_COLD: FENNEC_COLD_ARCH, NEAREST_MODEL: NEAREST_MODEL_ARCH}
  for r in evaluate_models_out(history, np.concatenate([meta, arch], 1),
                               models, space_config, seed, groups):
    if r['method'] in renamed:
      rows.append(dict(r, method=renamed[r['method']]))
  return rows


def run_models_out(out_dir: str, benchmark: str | None = None,
                   history_path: str | None = None,
                   space_config: Mapping[str, Any] | None = None,
                   seed: int = 0, duplicates: str = 'error'
                   ) -> tuple[list[dict[str, Any]], str]:
  """`fennec evaluate --protocol=models`: cold-start models from metadata.

  Writes `out_dir/models_out.csv` (`MODELS_OUT_COLUMNS`).

  Args:
    out_dir: output directory (created).
    benchmark: bundled benchmark name (exclusive with `history_path`).
    history_path: long-format CSV file.
    space_config: `SpaceConfig` overrides.
    seed: seed of the space.
    duplicates: with `history_path`, how differing scores of one pair are
      resolved (`fennec_jax.history.DUPLICATE_POLICIES`).

  Returns:
    (rows of `evaluate_models_out`, csv path).
  """
  history, _ = protocol.load_history(benchmark, history_path, duplicates)
  emb, names = model_metadata.model_features(history.model_metadata,
                                             history.name)
  logging.info('models out: %d metadata features: %s', len(names), names)
  rows = evaluate_models_out(history, emb, space_config=space_config,
                             seed=seed)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, 'models_out.csv')
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=MODELS_OUT_COLUMNS)
    w.writeheader()
    for r in rows:
      w.writerow({k: (f'{v:.6f}' if isinstance(v, float) else v)
                  for k, v in r.items()})
  return rows, path
