r"""Joint vs post-hoc side information (an evaluation, not a test).

Protocol `models` (cold-start model), the same splits and metrics as
`fennec evaluate --protocol=models` (`evaluate.evaluate_models_out`): each
held-out model (observed on >= 3 tasks; --max_models of them, a seeded
subset, when set) is removed from the history and placed from its metadata
features (`evaluate.metadata_embeddings`). Methods: `fennec_cold` (the
post-hoc Fennec: space fit, then a ridge map metadata -> model features),
`joint` (`joint.fit_joint` with the metadata as model side information, the
same rank and priors), `mean_model`, `nearest_model`. Metrics per model over
its tasks: Pearson, weighted tau, rank_error (|predicted - true| percentile
among the task's other models).

Protocol `tasks` (new task from task metadata): each task is left out; the
joint space places it from its task metadata (log of the numeric task
metadata columns); compared with `popularity` (the mean z-scored score of a
model over the other tasks, which ignores task information). Metrics per
task: Pearson and weighted tau over the task's observed models.

Command:

  .venv/bin/python experiments/benchmarks/joint_eval.py \
      --benchmark=parc_controlled --protocol=models --out=/tmp/joint_eval

On the offline benchmark (once its artifacts are in
`fennec_jax/benchmarks/offline_data/`), tasks are placed from their proxy
embeddings and cold models also from their graphs:

  .venv/bin/python experiments/benchmarks/joint_eval.py --benchmark=offline \
      --protocol=tasks --task_side=proxy --out=/tmp/joint_eval
  .venv/bin/python experiments/benchmarks/joint_eval.py --benchmark=offline \
      --protocol=models --graphs --out=/tmp/joint_eval

Writes `DIR/joint_eval_<benchmark>_<protocol>.csv` and `.json` (means).
"""

import csv
import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
from scipy import stats

from fennec_jax import joint
from fennec_jax.benchmarks import baselines
from fennec_jax.benchmarks import evaluate as evaluate_lib
from fennec_jax.benchmarks.offline import source as offline_source

_BENCHMARK = flags.DEFINE_string('benchmark', 'parc_controlled',
                                 'Bundled benchmark name.')
_PROTOCOL = flags.DEFINE_enum('protocol', 'models', ['models', 'tasks'],
                              'Leave one model out or one task out.')
_OUT = flags.DEFINE_string('out', '/tmp/joint_eval', 'Output directory.')
_MAX_MODELS = flags.DEFINE_integer(
    'max_models', 0, 'Held-out models (a seeded subset); 0 = all eligible.')
_RANK = flags.DEFINE_integer('rank', 1, 'Rank of both spaces.')
_HIDDEN = flags.DEFINE_integer('hidden', 0, 'Joint side-head hidden width.')
_HEAD_PRECISION = flags.DEFINE_float('head_precision', 0.1,
                                     'Joint side-head L2 precision.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed.')
_TASK_SIDE = flags.DEFINE_enum(
    'task_side', 'metadata', ['metadata', 'proxy'],
    "Task side information for --protocol=tasks: 'metadata' (numeric task "
    "metadata) or 'proxy' (--benchmark=offline only: the mean proxy "
    'embedding of 100 probe images, offline.source.proxy_task_features).')
_GRAPHS = flags.DEFINE_bool(
    'graphs', False, '--protocol=models on --benchmark=offline: also fit '
    "'joint_graph' (metadata + the archi2vec GNN on the models' traced "
    'graphs, trained end to end).')


def _row(method, name, pred, true, others_of):
  """Pearson, weighted tau and rank error of one held-out row/column."""
  defined = len(true) >= 2 and np.std(pred) > 0 and np.std(true) > 0
  pct = evaluate_lib._percentile  # pylint: disable=protected-access
  errs = [abs(pct(p, o) - pct(y, o))
          for p, y, o in zip(pred, true, others_of)] if others_of else []
  return {'method': method, 'item': name,
          'pearson': (float(stats.pearsonr(pred, true)[0]) if defined
                      else float('nan')),
          'weighted_tau': (float(stats.weightedtau(pred, true)[0])
                           if defined else float('nan')),
          'rank_error': float(np.mean(errs)) if errs else float('nan')}


def _joint_config():
  return joint.JointConfig(rank=_RANK.value, hidden=_HIDDEN.value,
                           head_precision=_HEAD_PRECISION.value,
                           seed=_SEED.value)


def models_out(history):
  """Leave one model out: post-hoc rows (evaluate_models_out) + joint."""
  emb, names = evaluate_lib.metadata_embeddings(history)
  logging.info('metadata features: %s', names)
  counts = history.mask.sum(1)
  eligible = [m for i, m in enumerate(history.model_ids) if counts[i] >= 3]
  if _MAX_MODELS.value and _MAX_MODELS.value < len(eligible):
    rs = np.random.default_rng(_SEED.value)
    eligible = sorted(rs.choice(eligible, _MAX_MODELS.value, replace=False))
  t0 = time.time()
  rows = evaluate_lib.evaluate_models_out(
      history, emb, models=eligible, space_config={'rank': _RANK.value},
      seed=_SEED.value)
  rows = [dict(r, item=r.pop('model')) for r in rows
          if r['model'] != evaluate_lib.MEAN]
  posthoc_s = time.time() - t0
  t0 = time.time()
  for model in eligible:
    i = history.model_index(model)
    keep = np.arange(history.num_models) != i
    tasks = np.flatnonzero(history.mask[i])
    js = joint.fit_joint(history.scores[keep], history.mask[keep],
                         model_side=emb[keep], config=_joint_config())
    pred = np.asarray(js.predict(model_side=emb[i:i + 1]))[tasks, 0]
    others = [history.scores[keep & history.mask[:, t], t] for t in tasks]
    rows.append(_row('joint', model, pred, history.scores[i, tasks], others))
    logging.info('joint: %s done', model)
  joint_s = time.time() - t0
  if _GRAPHS.value:
    rows += _models_out_graphs(history, emb, eligible)
  return rows, {'fennec_cold_seconds': posthoc_s, 'joint_seconds': joint_s,
                'num_heldout': len(eligible), 'features': names}


def _models_out_graphs(history, emb, eligible):
  """`joint_graph` rows: metadata + GNN on the offline zoo's graphs."""
  from fennec_jax.archi2vec import graphs as graphs_lib  # pylint: disable=g-import-not-at-top
  from fennec_jax.benchmarks import offline  # pylint: disable=g-import-not-at-top
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
        vocab_size=len(vocab), config=_joint_config())
    pred = np.asarray(js.predict(model_side=emb[i:i + 1],
                                 model_graphs=padded([arrays[i]])))[tasks, 0]
    others = [history.scores[keep & history.mask[:, t], t] for t in tasks]
    rows.append(_row('joint_graph', model, pred, history.scores[i, tasks],
                     others))
    logging.info('joint_graph: %s done', model)
  return rows


def _proxy_features(history):
  """[T, D] mean proxy embedding of each task's probe images."""
  source = offline_source.OfflineSource()
  feats, _ = offline_source.proxy_task_features(source, history.task_ids)
  return np.stack([feats[t].mean(0) for t in history.task_ids])


def _task_features(history):
  """log10 of numeric task metadata; a missing value gets the column mean
  plus a missing-indicator column."""
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


def tasks_out(history):
  """Leave one task out: joint vs post-hoc Fennec (ridge from task metadata
  to fitted task vectors) vs popularity."""
  from fennec_jax import recommender  # pylint: disable=g-import-not-at-top
  from fennec_jax import space as space_lib  # pylint: disable=g-import-not-at-top
  side = (_proxy_features(history) if _TASK_SIDE.value == 'proxy'
          else _task_features(history))
  # The post-hoc counterpart of the joint model's linear side-information
  # map is the ridge task map (the results recorded in results/ use it).
  fennec_config = recommender.FennecConfig(space=space_lib.SpaceConfig(
      rank=_RANK.value, seed=_SEED.value), task_map='ridge')
  rows = []
  t0 = time.time()
  for j, task in enumerate(history.task_ids):
    keep = np.arange(history.num_tasks) != j
    models = np.flatnonzero(history.mask[:, j])
    true = history.scores[models, j]
    js = joint.fit_joint(history.scores[:, keep], history.mask[:, keep],
                         task_side=side[keep], config=_joint_config())
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
                history.num_tasks, 'task_side': _TASK_SIDE.value,
                'task_features': side.shape[1]}


def main(argv):
  del argv
  from fennec_jax import benchmarks  # pylint: disable=g-import-not-at-top
  history = benchmarks.load_benchmark(_BENCHMARK.value)
  fn = models_out if _PROTOCOL.value == 'models' else tasks_out
  rows, extra = fn(history)
  methods = sorted({r['method'] for r in rows})
  keys = ('pearson', 'weighted_tau')
  if _PROTOCOL.value == 'models':
    keys += ('rank_error',)
  means = {m: {k: float(np.nanmean([r[k] for r in rows
                                    if r['method'] == m])) for k in keys}
           for m in methods}
  os.makedirs(_OUT.value, exist_ok=True)
  stem = os.path.join(_OUT.value,
                      f'joint_eval_{_BENCHMARK.value}_{_PROTOCOL.value}')
  with open(stem + '.csv', 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=['method', 'item', 'pearson',
                                      'weighted_tau', 'rank_error'])
    w.writeheader()
    w.writerows(rows)
  summary = {'benchmark': _BENCHMARK.value, 'protocol': _PROTOCOL.value,
             'rank': _RANK.value, 'hidden': _HIDDEN.value,
             'head_precision': _HEAD_PRECISION.value, 'means': means,
             **extra}
  with open(stem + '.json', 'w') as f:
    json.dump(summary, f, indent=1)
  for m in methods:
    logging.info('%-14s %s', m, '  '.join(f'{k} {v:.3f}'
                                          for k, v in means[m].items()))
  print(json.dumps(summary, indent=1))


if __name__ == '__main__':
  app.run(main)
