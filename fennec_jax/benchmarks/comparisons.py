"""Comparisons outside the evaluate protocols: task maps and joint vs post-hoc.

`task_maps`: leave one task out on the offline benchmark at K = 0 with the
methods that need no zoo forward pass (Fennec with the 'neighbors' and
'ridge' task maps, popularity), over several probe draws; with `k_shot` > 0
also images + scores vs scores only on the models not revealed.

`joint_models_out` / `joint_tasks_out`: the joint space (`fennec_jax.joint`,
side information inside the fit) against post-hoc Fennec (space fit, then a
map from side information) for a held-out model or task.

The runners `task_maps` and `joint_eval` (`fennec_jax.benchmarks.runner`)
write their results; these functions only compute.
"""

import time
from collections.abc import Mapping
from typing import Any, Sequence

from absl import logging
import numpy as np
from scipy import stats

from fennec_jax import joint
from fennec_jax import model_metadata
from fennec_jax import recommender
from fennec_jax import space as space_lib
from fennec_jax.archi2vec import graphs as graphs_lib
from fennec_jax.benchmarks import baselines
from fennec_jax.benchmarks import models_out
from fennec_jax.benchmarks import offline
from fennec_jax.benchmarks import protocol
from fennec_jax.benchmarks.offline import source as offline_source

TASK_SIDES = ('metadata', 'proxy')
JOINT_PROTOCOLS = ('models', 'tasks')


# -- task maps over probe draws -----------------------------------------------


def task_maps_seed(history: Any, source: offline_source.ImageSource,
                   seed: int, num_images: int, k_shot: int,
                   targets: Sequence[str] | None = None
                   ) -> dict[str, list[float]]:
  """Per-target weighted tau of each method for one probe draw.

  Args:
    history: the offline History.
    source: probes of every task (`offline.source.OfflineSource`).
    seed: probe draw, space seed and the draw of the K revealed models.
    num_images: class-balanced probe images per task through the proxy.
    k_shot: observed scores per target in the images + scores comparison;
      0 skips it.
    targets: held-out tasks, in order (default every task).

  Returns:
    `{method: [weighted tau per target]}` for 'fennec', 'fennec_ridge',
    'popularity' and, when `k_shot`, `fennec_<k>`, `space_<k>` and
    'fennec_0_same_models'.
  """
  feats, _ = offline_source.proxy_task_features(source, history.task_ids,
                                                num_images, seed)
  rng = np.random.default_rng(seed)
  out = {'fennec': [], 'fennec_ridge': [], 'popularity': []}
  if k_shot:
    out.update({f'fennec_{k_shot}': [], f'space_{k_shot}': [],
                'fennec_0_same_models': []})
  for target in targets or history.task_ids:
    j = history.task_index(target)
    train = protocol.without_task(history, j)
    true = history.scores[:, j]
    for name, task_map in (('fennec', 'neighbors'), ('fennec_ridge', 'ridge')):
      config = recommender.FennecConfig(
          space=space_lib.SpaceConfig(seed=seed), task_map=task_map)
      fennec = recommender.Fennec(config).fit(
          train, task_embeddings={t: feats[t] for t in train.task_ids})
      pred = fennec.predict(task_embeddings=[feats[target]])[0][0]
      out[name].append(float(stats.weightedtau(pred, true)[0]))
      if name == 'fennec' and k_shot:
        seen = rng.choice(len(true), k_shot, replace=False)
        rest = np.setdiff1d(np.arange(len(true)), seen)
        obs = [{history.model_ids[i]: float(true[i]) for i in seen}]
        both = fennec.predict(task_embeddings=[feats[target]],
                              observed=obs)[0][0]
        scores_only = fennec.predict(observed=obs)[0][0]
        for key, p in ((f'fennec_{k_shot}', both),
                       (f'space_{k_shot}', scores_only),
                       ('fennec_0_same_models', pred)):
          out[key].append(float(stats.weightedtau(p[rest], true[rest])[0]))
    pop = baselines.popularity_scores(train.scores, train.mask)
    out['popularity'].append(float(stats.weightedtau(pop, true)[0]))
  return out


def task_maps(history: Any, source: offline_source.ImageSource,
              seeds: int = 4, num_images: int = 100, k_shot: int = 5,
              targets: Sequence[str] | None = None) -> dict[str, Any]:
  """`task_maps_seed` for seeds 0..seeds-1 and the summary over seeds.

  Args:
    history: the offline History.
    source: probes of every task.
    seeds: probe draws.
    num_images: probe images per task through the proxy.
    k_shot: observed scores per target (0 skips the comparison).
    targets: held-out tasks (default every task).

  Returns:
    A JSON-ready dict: `mean_weighted_tau_per_seed` (each seed's mean over
    targets), `mean_weighted_tau` and `min_over_seeds` (over seeds),
    `per_target` and `seconds`.

  Raises:
    ValueError: `seeds` < 1 or an unknown target.
  """
  if seeds < 1:
    raise ValueError(f'seeds must be >= 1, got {seeds}.')
  targets = list(targets or history.task_ids)
  unknown = sorted(set(targets) - set(history.task_ids))
  if unknown:
    raise ValueError(f'unknown targets {unknown}; valid: '
                     f'{list(history.task_ids)}.')
  start = time.time()
  per_seed = {}
  for seed in range(seeds):
    per_seed[seed] = task_maps_seed(history, source, seed, num_images, k_shot,
                                    targets)
    logging.info('seed %d: %s', seed, {k: round(float(np.mean(v)), 3)
                                        for k, v in per_seed[seed].items()})
  means = {m: [float(np.mean(per_seed[s][m])) for s in per_seed]
           for m in per_seed[0]}
  return {
      'targets': targets,
      'seeds': seeds,
      'num_images': num_images,
      'k_shot': k_shot,
      'mean_weighted_tau_per_seed': means,
      'mean_weighted_tau': {m: float(np.mean(v)) for m, v in means.items()},
      'min_over_seeds': {m: float(np.min(v)) for m, v in means.items()},
      'per_target': {m: {s: per_seed[s][m] for s in per_seed}
                     for m in means},
      'seconds': time.time() - start,
  }


# -- joint vs post-hoc side information ---------------------------------------


def _row(method: str, name: str, pred: np.ndarray, true: np.ndarray,
         others_of: Sequence[np.ndarray] | None) -> dict[str, Any]:
  """Pearson, weighted tau and rank error of one held-out row/column."""
  defined = len(true) >= 2 and np.std(pred) > 0 and np.std(true) > 0
  pct = models_out.percentile_rank
  errs = [abs(pct(p, o) - pct(y, o))
          for p, y, o in zip(pred, true, others_of)] if others_of else []
  return {'method': method, 'item': name,
          'pearson': (float(stats.pearsonr(pred, true)[0]) if defined
                      else float('nan')),
          'weighted_tau': (float(stats.weightedtau(pred, true)[0])
                           if defined else float('nan')),
          'rank_error': float(np.mean(errs)) if errs else float('nan')}


def joint_models_out(history: Any, config: joint.JointConfig,
                     max_models: int = 0, graphs: bool = False
                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Leave one model out: post-hoc rows (`evaluate_models_out`) + joint.

  Each held-out model (observed on >= 3 tasks; a subset of `max_models`
  drawn with `config.seed` when set) is placed from its metadata features
  (`model_metadata.model_features`).

  Args:
    history: the History.
    config: the joint space; its `rank` and `seed` also set the post-hoc
      space.
    max_models: held-out models (0 = every eligible one).
    graphs: also fit 'joint_graph' (metadata + the archi2vec GNN on the
      offline zoo's traced graphs; the offline benchmark only).

  Returns:
    `(rows, extra)`: rows `{method, item, pearson, weighted_tau,
    rank_error}`; extra holds timings, `num_heldout` and the feature names.
  """
  emb, names = model_metadata.model_features(history.model_metadata,
                                             history.name)
  logging.info('metadata features: %s', names)
  counts = history.mask.sum(1)
  eligible = [m for i, m in enumerate(history.model_ids) if counts[i] >= 3]
  if max_models and max_models < len(eligible):
    rs = np.random.default_rng(config.seed)
    eligible = sorted(rs.choice(eligible, max_models, replace=False))
  t0 = time.time()
  rows = models_out.evaluate_models_out(
      history, emb, models=eligible, space_config={'rank': config.rank},
      seed=config.seed)
  rows = [dict(r, item=r.pop('model')) for r in rows
          if r['model'] != protocol.MEAN]
  posthoc_s = time.time() - t0
  t0 = time.time()
  for model in eligible:
    i = history.model_index(model)
    keep = np.arange(history.num_models) != i
    tasks = np.flatnonzero(history.mask[i])
    js = joint.fit_joint(history.scores[keep], history.mask[keep],
                         model_side=emb[keep], config=config)
    pred = np.asarray(js.predict(model_side=emb[i:i + 1]))[tasks, 0]
    others = [history.scores[keep & history.mask[:, t], t] for t in tasks]
    rows.append(_row('joint', model, pred, history.scores[i, tasks], others))
    logging.info('joint: %s done', model)
  joint_s = time.time() - t0
  if graphs:
    rows += _models_out_graphs(history, emb, eligible, config)
  return rows, {'fennec_cold_seconds': posthoc_s, 'joint_seconds': joint_s,
                'num_heldout': len(eligible), 'features': names}


def _models_out_graphs(history: Any, emb: np.ndarray, eligible: list[str],
                       config: joint.JointConfig) -> list[dict[str, Any]]:
  """`joint_graph` rows: metadata + GNN on the offline zoo's graphs."""
  gs = [offline.load_graph(m) for m in history.model_ids]
  vocab = graphs_lib.OpVocab.from_graphs(gs)
  arrays = [graphs_lib.graph_to_arrays(g, vocab) for g in gs]
  budget = graphs_lib.padding_budget([len(a['op']) for a in arrays],
                                     [len(a['senders']) for a in arrays],
                                     len(arrays))

  def padded(items):
    return graphs_lib.pad_graphs(graphs_lib.to_graphs_tuple(items), *budget)

  rows = []
  for model in eligible:
    i = history.model_index(model)
    keep = np.arange(history.num_models) != i
    tasks = np.flatnonzero(history.mask[i])
    js = joint.fit_joint(
        history.scores[keep], history.mask[keep], model_side=emb[keep],
        model_graphs=padded([a for a, k in zip(arrays, keep) if k]),
        vocab_size=len(vocab), config=config)
    pred = np.asarray(js.predict(model_side=emb[i:i + 1],
                                 model_graphs=padded([arrays[i]])))[tasks, 0]
    others = [history.scores[keep & history.mask[:, t], t] for t in tasks]
    rows.append(_row('joint_graph', model, pred, history.scores[i, tasks],
                     others))
    logging.info('joint_graph: %s done', model)
  return rows


def proxy_task_side(history: Any, data_dir: str | None = None) -> np.ndarray:
  """[T, D] mean proxy embedding of each task's probe images (offline)."""
  source = offline_source.OfflineSource(data_dir)
  feats, _ = offline_source.proxy_task_features(source, history.task_ids)
  return np.stack([feats[t].mean(0) for t in history.task_ids])


def metadata_task_side(history: Any) -> np.ndarray:
  """[T, F] log10 of the numeric task metadata.

  A missing value gets the column mean plus a missing-indicator column;
  missing or constant columns are left out.

  Raises:
    ValueError: no usable numeric task metadata.
  """
  cols = []
  for key in sorted(history.task_metadata):
    v = np.asarray(history.task_metadata[key], np.float64)
    x = np.log10(np.maximum(v, 1.0))
    miss = np.isnan(x)
    if miss.all() or np.nanstd(x) == 0:
      logging.info('task metadata %s missing/constant; left out.', key)
      continue
    cols.append(np.where(miss, np.nanmean(x), x))
    if miss.any():
      logging.info('task metadata %s: %d missing, mean-filled.', key,
                   miss.sum())
      cols.append(miss.astype(np.float64))
  if not cols:
    raise ValueError(f'{history.name}: no usable numeric task metadata.')
  return np.stack(cols, 1)


def joint_tasks_out(history: Any, side: np.ndarray,
                    config: joint.JointConfig
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Leave one task out: joint vs post-hoc Fennec vs popularity.

  The post-hoc counterpart of the joint model's linear side-information map
  is Fennec with the 'ridge' task map (side information -> fitted task
  vectors), with the same rank and seed.

  Args:
    history: the History.
    side: `[T, F]` task side information (`metadata_task_side` or
      `proxy_task_side`).
    config: the joint space.

  Returns:
    `(rows, extra)`: rows `{method, item, pearson, weighted_tau,
    rank_error}` (rank_error NaN); extra holds the time and sizes.
  """
  fennec_config = recommender.FennecConfig(space=space_lib.SpaceConfig(
      rank=config.rank, seed=config.seed), task_map='ridge')
  rows = []
  t0 = time.time()
  for j, task in enumerate(history.task_ids):
    keep = np.arange(history.num_tasks) != j
    models = np.flatnonzero(history.mask[:, j])
    true = history.scores[models, j]
    js = joint.fit_joint(history.scores[:, keep], history.mask[:, keep],
                         task_side=side[keep], config=config)
    pred = np.asarray(js.predict(task_side=side[j:j + 1]))[0, models]
    rows.append(_row('joint', task, pred, true, None))
    fennec = recommender.Fennec(fennec_config).fit(
        history.subset(tasks=keep), task_embeddings=side[keep])
    post = fennec.predict(task_embeddings=side[j:j + 1])[0][0, models]
    rows.append(_row('fennec_posthoc', task, post, true, None))
    pop = baselines.popularity_scores(history.scores[:, keep],
                                      history.mask[:, keep])[models]
    rows.append(_row('popularity', task, pop, true, None))
    logging.info('tasks: %s done', task)
  return rows, {'seconds': time.time() - t0, 'num_heldout':
                history.num_tasks, 'task_features': side.shape[1]}


def method_means(rows: Sequence[dict[str, Any]], keys: Sequence[str]
                 ) -> dict[str, dict[str, float]]:
  """`{method: {key: nanmean over the method's rows}}`."""
  methods = sorted({r['method'] for r in rows})
  return {m: {k: float(np.nanmean([r[k] for r in rows if r['method'] == m]))
              for k in keys} for m in methods}


# -- K-shot intervals on held-out targets --------------------------------------


def kshot_coverage(history: Any, k_shot: int, num_seeds: int = 10,
                   targets: Sequence[str] | None = None, seed: int = 0,
                   kshot_config: space_lib.KShotConfig | None = None
                   ) -> dict[str, Any]:
  """Coverage of the K-shot fold-in's 68% / 95% intervals, leave one task out.

  For each target: the space and its K-shot fold-in are fit on the other
  tasks, K of the target's scores are revealed (the protocol's draws), and
  the fraction of the unobserved true scores inside predicted +- 1 (1.96)
  calibrated std is counted.

  Returns:
    `{'coverage_68', 'coverage_95'}` (means over targets of the per-target
    fractions) and `per_target` {target: (c68, c95)}.
  """
  kshot_config = kshot_config or space_lib.KShotConfig(seed=seed)
  intervals = {}
  for target in targets or protocol.default_targets(history, True):
    j = history.task_index(target)
    train = protocol.without_task(history, j)
    fitted = space_lib.fit(train.scores, train.mask,
                           space_lib.SpaceConfig(seed=seed))
    fold = space_lib.kshot_calibrate.calibrate(
        fitted, train.scores, train.mask, [k_shot], kshot_config,
        meta=space_lib.kshot_gp.metadata_factor(
            train.model_metadata, train.num_models, train.name))
    obs = protocol.draw_observed(history.mask[:, j], k_shot, num_seeds,
                                 target, seed)
    observed = np.where(obs, history.scores[:, j][None], np.nan)
    pred, std = space_lib.kshot.predict(
        fitted, fold, *space_lib.kshot.gather_observed(observed))
    intervals[target] = (observed, pred, std)
  return coverage_of_intervals(history, intervals)


def coverage_of_intervals(history: Any, intervals: Mapping[str, Any]
                          ) -> dict[str, Any]:
  """`kshot_coverage`'s numbers from recorded intervals.

  Args:
    history: the evaluated history.
    intervals: {target: (observed [B, M] with NaN where unobserved,
      predicted [B, M], std [B, M])}, e.g. recorded by
      `methods.space_method(intervals=...)` during `fennec evaluate`.

  Returns:
    As `kshot_coverage`: the fraction of each target's observed but
    unrevealed true scores within predicted +- 1 (1.96) std, per target
    and averaged over targets.
  """
  per_target = {}
  for target, (observed, pred, std) in intervals.items():
    j = history.task_index(target)
    obs = ~np.isnan(np.asarray(observed))
    inside = np.abs(history.scores[:, j][None] - pred) / std
    ok = history.mask[:, j][None] & ~obs
    per_target[target] = tuple(float(np.mean(inside[ok] <= z))
                               for z in (1.0, 1.96))
  vals = np.asarray(list(per_target.values()))
  return {'coverage_68': float(vals[:, 0].mean()),
          'coverage_95': float(vals[:, 1].mean()), 'per_target': per_target}
