"""The paper's meta-phase inputs: its performance matrix and model features.

FennecPaper (`fennec_jax.paper`) fits its transfer phase on P, in the paper
the FDA score of every (model, task) (`fda_matrix`), and its meta phase on a
linear regression over `[#params, #conv+linear layers, architecture cluster,
#train images, #classes]`. This module computes those inputs:

* `count_params` / `count_layers` of a traced architecture DAG
  (`fennec_jax.archi2vec.trace`);
* `graph2vec_clusters`: archi2vec as in the paper, WL labels -> PV-DBOW
  graph2vec -> k-means (`fennec_jax.archi2vec.wl`), memoized in-process;
* `model_features` / `history_task_features` / `new_task_features`: the
  regression's columns gathered from graphs, explicit metadata and the
  history's metadata columns, with errors naming the model or task that lacks
  a value.
"""

from collections.abc import Mapping, Sequence
import hashlib
import json
from typing import Any

from absl import logging
import networkx as nx
import numpy as np

from fennec_jax import estimators
from fennec_jax.archi2vec import wl

# Ops that are a conv or linear layer when they read parameters.
LAYER_OPS = ('conv_general_dilated', 'dot_general')
# Ops that only move or cast a parameter (a bf16 cast of a kernel, ...).
_PARAM_PASS_OPS = frozenset({'convert_element_type', 'reshape', 'transpose',
                             'broadcast_in_dim', 'squeeze', 'expand_dims',
                             'copy', 'copy_p', 'slice'})
# The task columns of the meta regression and the history metadata columns
# each is read from (first present wins).
TASK_KEYS = ('num_train', 'num_classes')
_TASK_KEY_ALIASES = {'num_train': ('num_train', 'train_size',
                                   'num_train_images'),
                     'num_classes': ('num_classes',)}
MODEL_KEYS = ('num_params', 'num_layers', 'cluster')


def as_float(value: Any, what: str) -> float:
  """`value` as a finite float.

  Args:
    value: a number (or a string of one).
    what: names the value in the error.

  Returns:
    float(value).

  Raises:
    ValueError: not a number, or not finite.
  """
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f'{what}: {value!r} is not a number.') from None
  if not np.isfinite(v):
    raise ValueError(f'{what}: {value!r} is not finite.')
  return v


# -- the performance matrix ----------------------------------------------------


def fda_matrix(features: Mapping[str, Mapping[str, Any]],
               labels: Mapping[str, Any], *,
               model_ids: Sequence[str] | None = None,
               task_ids: Sequence[str] | None = None,
               dim: int = 32, seed: int = 0) -> np.ndarray:
  """The paper's performance matrix: FDA scores of every (model, task).

  Args:
    features: `{model_id: {task_id: [n, d_model]}}` penultimate features of
      each task's probe images (the same images, in the same order, for every
      model of a task).
    labels: `{task_id: [n]}` class ids of those images.
    model_ids: row order (default: the order of `features`).
    task_ids: column order (default: the order of `labels`).
    dim: FDA's PCA dimension (32 in the paper).
    seed: FDA's seed.

  Returns:
    [M, T] float64 scores in [0, 1]; NaN where a model has no features of a
    task. Each task is scored for all its models in one batched
    `score_models('fda', ...)` call.

  Raises:
    ValueError: unknown ids, a task without labels, or what `score_models`
      rejects (naming the task).
  """
  model_ids = list(features) if model_ids is None else list(model_ids)
  task_ids = list(labels) if task_ids is None else list(task_ids)
  unknown = [m for m in model_ids if m not in features]
  if unknown:
    raise ValueError(f'fda_matrix: no features for models {unknown[:10]}.')
  out = np.full((len(model_ids), len(task_ids)), np.nan)
  for j, task in enumerate(task_ids):
    if task not in labels:
      raise ValueError(f'fda_matrix: task {task!r} has no labels; tasks with '
                       f'labels: {list(labels)[:10]}.')
    rows = [i for i, m in enumerate(model_ids) if task in features[m]]
    if not rows:
      logging.info('fda_matrix: no model has features of task %r.', task)
      continue
    try:
      out[rows, j] = estimators.score_models(
          'fda', [np.asarray(features[model_ids[i]][task]) for i in rows],
          np.asarray(labels[task]), dim=dim, seed=seed)
    except ValueError as e:
      raise ValueError(f'fda_matrix: task {task!r}: {e}') from e
  return out


# -- architecture features -----------------------------------------------------


def count_layers(graph: nx.DiGraph) -> int:
  """Number of conv + linear layers of a traced architecture graph.

  A node counts when its op is `conv_general_dilated` or `dot_general` and it
  reads a parameter, directly (its `params` attribute) or through a chain of
  ops that only move/cast parameters (e.g. a bf16 `convert_element_type` of
  a kernel). Attention's q.k and p.v products read no parameter and do not
  count. Control-flow nodes (a scanned block) that read parameters add the
  layer ops of their body once (`body_ops`), not once per iteration.

  Args:
    graph: a DAG from `fennec_jax.archi2vec.trace`.

  Returns:
    The count.
  """
  param_only = {}
  for n in nx.topological_sort(graph):
    a = graph.nodes[n]
    preds = list(graph.predecessors(n))
    param_only[n] = (a.get('op') in _PARAM_PASS_OPS
                     and bool(a.get('params') or preds)
                     and all(param_only[p] for p in preds))
  count = 0
  for n, a in graph.nodes(data=True):
    reads = bool(a.get('params')) or any(
        param_only[p] for p in graph.predecessors(n))
    if not reads:
      continue
    if a.get('op') in LAYER_OPS:
      count += 1
    elif a.get('body_ops'):
      count += sum(int(a['body_ops'].get(op, 0)) for op in LAYER_OPS)
  return count


def count_params(graph: nx.DiGraph) -> int:
  """Parameter count of a traced graph (`graph.graph['param_sizes']`).

  Args:
    graph: a DAG from `fennec_jax.archi2vec.trace`.

  Returns:
    The summed parameter sizes (0 for a graph that names no parameter).

  Raises:
    ValueError: the nodes name parameters but their sizes are unknown.
  """
  sizes = graph.graph.get('param_sizes')
  if sizes:
    return int(sum(sizes.values()))
  seen = {}
  for _, a in graph.nodes(data=True):
    for p in a.get('params') or ():
      seen.setdefault(p, None)
  if seen:
    raise ValueError('the graph names parameters but has no '
                     "graph['param_sizes']; give num_params in model_meta.")
  return 0


# Clusters by (graph2vec documents, settings): leave-one-task-out refits see
# the same architectures every time, and graph2vec costs ~20 CPU s for 30
# graphs of a few hundred nodes. Bounded; the oldest entry goes first.
_CLUSTER_CACHE: dict[str, np.ndarray] = {}
_CLUSTER_CACHE_SIZE = 8


def graph2vec_clusters(graphs: Sequence[nx.DiGraph], *, num_clusters: int,
                       wl_iterations: int, dim: int, seed: int
                       ) -> np.ndarray:
  """archi2vec as in the paper: WL + PV-DBOW graph2vec + k-means.

  The same computation as `wl.archi2vec_clusters` (WL documents of the
  nodes' `op` labels, `wl.Graph2Vec`, `wl.kmeans`), memoized in-process by
  the documents and the settings (the result is deterministic).

  Args:
    graphs: traced architecture DAGs (nodes labelled by `op`).
    num_clusters: k of k-means, clipped to the number of graphs.
    wl_iterations: Weisfeiler-Lehman iterations.
    dim: the PV-DBOW embedding size.
    seed: seeds graph2vec and k-means.

  Returns:
    [n] cluster ids.
  """
  k = min(num_clusters, len(graphs))
  docs = [wl.wl_document(g, wl_iterations) for g in graphs]
  key = hashlib.blake2b(json.dumps(
      [dim, wl_iterations, seed, k, docs]).encode(),
                        digest_size=16).hexdigest()
  if key not in _CLUSTER_CACHE:
    model = wl.Graph2Vec(dim=dim, iterations=wl_iterations,
                         seed=seed).fit_documents(docs)
    _, clusters = wl.kmeans(model.embeddings, k, seed=seed)
    while len(_CLUSTER_CACHE) >= _CLUSTER_CACHE_SIZE:
      del _CLUSTER_CACHE[next(iter(_CLUSTER_CACHE))]
    _CLUSTER_CACHE[key] = np.asarray(clusters, np.int64)
  return _CLUSTER_CACHE[key].copy()


# -- the regression's columns --------------------------------------------------


def model_features(model_ids: Sequence[str],
                   graphs: Mapping[str, nx.DiGraph] | None,
                   model_meta: Mapping[str, Mapping[str, Any]] | None,
                   history: Any, *, num_clusters: int, wl_iterations: int,
                   graph2vec_dim: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray | None]:
  """The model columns of the meta regression.

  Each value comes from, in increasing priority, the history's model
  metadata columns `MODEL_KEYS`, the traced graphs (#params, #layers and
  the graph2vec clusters) and `model_meta`.

  Args:
    model_ids: the rows, in order.
    graphs: `{model_id: DAG}` for every model, or None.
    model_meta: `{model_id: {key in MODEL_KEYS: value}}`, or None.
    history: an object with an optional `model_metadata` mapping of columns.
    num_clusters: graph2vec k-means clusters.
    wl_iterations: graph2vec Weisfeiler-Lehman iterations.
    graph2vec_dim: graph2vec embedding size.
    seed: graph2vec and k-means seed.

  Returns:
    ([M, 2] (#params, #layers), [M] cluster ids or None when no model has
    one).

  Raises:
    ValueError: unknown models or keys, models missing from `graphs`, a
      value missing or not a finite number (naming the models).
  """
  m = len(model_ids)
  model_meta = dict(model_meta or {})
  unknown = sorted(set(model_meta) - set(model_ids))
  if unknown:
    raise ValueError(f'model_meta names models not in the history: '
                     f'{unknown[:10]}.')
  values = {k: [None] * m for k in MODEL_KEYS}
  hist_meta = getattr(history, 'model_metadata', {}) or {}
  for k in values:
    if k in hist_meta:
      for i, v in enumerate(hist_meta[k]):
        if v is not None and not (isinstance(v, float) and np.isnan(v)):
          values[k][i] = v
  if graphs is not None:
    missing = [mid for mid in model_ids if mid not in graphs]
    if missing:
      raise ValueError(f'graphs lack {len(missing)} history models: '
                       f'{missing[:10]}.')
    ordered = [graphs[mid] for mid in model_ids]
    for i, g in enumerate(ordered):
      try:
        values['num_params'][i] = count_params(g)
      except ValueError:
        if values['num_params'][i] is None:  # Else: history metadata.
          raise
      values['num_layers'][i] = count_layers(g)
    clusters = graph2vec_clusters(
        ordered, num_clusters=num_clusters, wl_iterations=wl_iterations,
        dim=graph2vec_dim, seed=seed)
    for i, cl in enumerate(clusters):
      values['cluster'][i] = int(cl)
  for i, mid in enumerate(model_ids):
    for k, v in model_meta.get(mid, {}).items():
      if k not in values:
        raise ValueError(f'model_meta[{mid!r}] key {k!r}; valid: '
                         f'{list(values)}.')
      values[k][i] = v
  for k in ('num_params', 'num_layers'):
    missing = [model_ids[i] for i in range(m) if values[k][i] is None]
    if missing:
      raise ValueError(f'{k} is unknown for models {missing[:10]}: give '
                       'graphs or model_meta.')
  feats = np.asarray([[as_float(values[k][i], f'{k} of {model_ids[i]!r}')
                       for k in ('num_params', 'num_layers')]
                      for i in range(m)])
  have = [v is not None for v in values['cluster']]
  if not any(have):
    logging.info('FennecPaper: no architecture clusters (no graphs or '
                 "'cluster' metadata); the meta regression omits them.")
    return feats, None
  if not all(have):
    missing = [model_ids[i] for i in range(m) if not have[i]]
    raise ValueError(f'cluster is unknown for models {missing[:10]} '
                     'while others have one.')
  clusters = np.asarray([int(as_float(v, 'cluster'))
                         for v in values['cluster']])
  return feats, clusters


def history_task_features(task_ids: Sequence[str],
                          task_meta: Mapping[str, Mapping[str, Any]] | None,
                          history: Any) -> np.ndarray | None:
  """The task columns `TASK_KEYS` of the historical tasks.

  Args:
    task_ids: the history's tasks, in order.
    task_meta: `{task_id: {key in TASK_KEYS: value}}`, overriding the
      history's task metadata columns (`num_train`/`train_size`/
      `num_train_images`, `num_classes`).
    history: an object with an optional `task_metadata` mapping of columns.

  Returns:
    [T, 2] float64, or None (logged) when some task lacks a value: the
    regression then omits the task columns.

  Raises:
    ValueError: `task_meta` names unknown tasks or holds a non-number.
  """
  task_meta = dict(task_meta or {})
  unknown = sorted(set(task_meta) - set(task_ids))
  if unknown:
    raise ValueError(f'task_meta names tasks not in the history: '
                     f'{unknown[:10]}.')
  hist_meta = getattr(history, 'task_metadata', {}) or {}
  out = np.full((len(task_ids), len(TASK_KEYS)), np.nan)
  for col, key in enumerate(TASK_KEYS):
    for alias in _TASK_KEY_ALIASES[key]:
      if alias in hist_meta:
        out[:, col] = np.asarray(hist_meta[alias], np.float64)
        break
    for j, task in enumerate(task_ids):
      if key in task_meta.get(task, {}):
        out[j, col] = as_float(task_meta[task][key],
                               f'task_meta[{task!r}][{key!r}]')
  if np.isnan(out).any():
    missing = [task_ids[j] for j in np.flatnonzero(np.isnan(out).any(1))]
    logging.info('FennecPaper: %d tasks lack %s (e.g. %s); the meta '
                 'regression omits the task columns.', len(missing),
                 TASK_KEYS, missing[:5])
    return None
  return out


def new_task_features(task_meta: Sequence[Mapping[str, Any]] | None,
                      num_tasks: int) -> np.ndarray:
  """The task columns `TASK_KEYS` of `num_tasks` new tasks.

  Args:
    task_meta: one dict per task with every key of `TASK_KEYS`.
    num_tasks: how many tasks are scored.

  Returns:
    [num_tasks, 2] float64.

  Raises:
    ValueError: `task_meta` is missing, of another length, lacks a key or
      holds a non-number.
  """
  if task_meta is None or len(task_meta) != num_tasks:
    raise ValueError(f'this FennecPaper uses task metadata: give task_meta '
                     f'as {num_tasks} dicts with keys {TASK_KEYS}.')
  out = np.zeros((num_tasks, len(TASK_KEYS)))
  for b, meta in enumerate(task_meta):
    for col, key in enumerate(TASK_KEYS):
      if key not in meta:
        raise ValueError(f'task_meta[{b}] lacks {key!r} (has '
                         f'{sorted(meta)}).')
      out[b, col] = as_float(meta[key], f'task_meta[{b}][{key!r}]')
  return out
