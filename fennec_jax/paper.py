"""The paper-faithful Fennec (`FennecPaper`): the released code's recipe.

Every improvement in `fennec_jax.recommender.Fennec` is measured against this
baseline, so it follows the paper's released code (PAPER.md) step by step:

1. Transfer phase. A performance matrix P (models x historical tasks), in the
   paper the FDA score (`fda_matrix`: LDA on a model's penultimate features of
   a 500-image class-balanced probe, PCA 32, mean true-class posterior; any
   non-negative history works too) is factorized by unregularized
   non-negative matrix factorization, k = 5: P ~ U V^T, U [M, k], V [T, k]
   (`nmf`: Lee & Seung multiplicative updates for the squared error, in JAX;
   sklearn's `NMF(solver='mu')` update rule and random init). Missing
   entries: the paper's matrix is dense; here the updates are masked (only
   observed entries enter the numerators and denominators), which is the
   exact multiplicative-update rule of the masked squared error. A model or
   task with no observation gets a zero vector (logged).
2. Task vector. A random forest (25 trees, `fennec_jax.forest`) regresses
   each historical task's probe-image proxy embeddings onto that task's
   vector v_j; a new task's vector v* is the mean of its images'
   predictions, and its transfer score is s^T_i = u_i . v*.
3. Meta phase. archi2vec as in the paper: the traced architecture DAG ->
   Weisfeiler-Lehman labels (2 iterations) -> PV-DBOW graph2vec (128-d) ->
   k-means clusters (`fennec_jax.archi2vec.wl.archi2vec_clusters`). A
   linear least-squares regression on `[#params, #conv+linear layers,
   cluster one-hot, #train images of the task, #classes]` fit on the
   observed historical (model, task) entries of P predicts the meta score
   s^M_i.
4. Merge. s_i = 0.5 s^T_i + 0.5 s^M_i on the raw scores, as the paper does
   (`PaperConfig.standardize_merge=True` z-scores each over the models first,
   an option the paper does not have).

Deviations, all configurable back to the paper: `PaperConfig.embedding_pca`
(default 64) PCA-projects the proxy embeddings before the forest, because an
exact CART forest over 768-d inputs costs minutes per fit on a CPU (None
reproduces the paper); negative entries of P are an error unless
`shift='min'` (then P - min(P) is factorized and min(P) added back).

Bad input: a new task without images, model ids missing from the
architecture inputs, a history task without images (left out of the forest,
logged), a task observed on one model only (kept; its vector is poorly
determined) — clear errors or these documented fallbacks, never NaN scores.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import hashlib
import json
import os
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from fennec_jax import forest as forest_lib
from fennec_jax import history as history_lib

_META_FILE = 'fennec_paper.json'
_ARRAYS_FILE = 'arrays.npz'
_FORMAT_VERSION = 1
# Ops that are a conv or linear layer when they read parameters.
LAYER_OPS = ('conv_general_dilated', 'dot_general')
# Ops that only move or cast a parameter (a bf16 cast of a kernel, ...).
_PARAM_PASS_OPS = frozenset({'convert_element_type', 'reshape', 'transpose',
                             'broadcast_in_dim', 'squeeze', 'expand_dims',
                             'copy', 'copy_p', 'slice'})
TASK_KEYS = ('num_train', 'num_classes')
_TASK_KEY_ALIASES = {'num_train': ('num_train', 'train_size',
                                   'num_train_images'),
                     'num_classes': ('num_classes',)}


@dataclasses.dataclass(frozen=True)
class PaperConfig:
  """The paper's recipe (defaults = the released code unless noted).

  Attributes:
    rank: k of the NMF (5).
    nmf_iterations: multiplicative-update iterations (one jitted loop).
    num_trees: trees of the embedding -> task-vector forest (25).
    max_features: features per split (None = all, sklearn's default).
    max_depth: None = full trees (sklearn's default).
    min_samples_leaf: sklearn's default 1.
    embedding_pca: PCA the (training) proxy embeddings to this many dims
      before the forest; None = the paper (raw embeddings). See module doc.
    images_per_task: a history task with more images is subsampled (seeded)
      to this many for the forest (the paper's 100 probe images); None
      keeps all. New tasks use all the images they are given.
    wl_iterations: Weisfeiler-Lehman iterations of graph2vec (2).
    graph2vec_dim: PV-DBOW embedding size (128).
    num_clusters: k-means clusters of the architecture embeddings.
    transfer_weight: s = w s^T + (1 - w) s^M (0.5).
    standardize_merge: z-score s^T and s^M over the models before merging
      (not in the paper).
    shift: 'none' (negative P is an error) or 'min' (factorize P - min P).
    seed: root seed of the NMF init, the forest, graph2vec and k-means.
  """
  rank: int = 5
  nmf_iterations: int = 1000
  num_trees: int = 25
  max_features: Any = None
  max_depth: int | None = None
  min_samples_leaf: int = 1
  embedding_pca: int | None = 64
  images_per_task: int | None = 100
  wl_iterations: int = 2
  graph2vec_dim: int = 128
  num_clusters: int = 4
  transfer_weight: float = 0.5
  standardize_merge: bool = False
  shift: str = 'none'
  seed: int = 0

  def validate(self) -> None:
    """Raises ValueError naming the bad field."""
    if self.images_per_task is not None and self.images_per_task < 1:
      raise ValueError('PaperConfig.images_per_task must be None or >= 1, '
                       f'got {self.images_per_task!r}.')
    for name in ('rank', 'nmf_iterations', 'num_trees', 'wl_iterations',
                 'graph2vec_dim', 'num_clusters', 'min_samples_leaf'):
      v = getattr(self, name)
      if int(v) != v or v < 1:
        raise ValueError(f'PaperConfig.{name} must be an int >= 1, got '
                         f'{v!r}.')
    if self.embedding_pca is not None and self.embedding_pca < 1:
      raise ValueError('PaperConfig.embedding_pca must be None or >= 1, got '
                       f'{self.embedding_pca!r}.')
    if not 0.0 <= self.transfer_weight <= 1.0:
      raise ValueError('PaperConfig.transfer_weight must be in [0, 1], got '
                       f'{self.transfer_weight!r}.')
    if self.shift not in ('none', 'min'):
      raise ValueError(f"PaperConfig.shift={self.shift!r}; valid: 'none', "
                       "'min'.")
    self.forest_config().validate()

  def forest_config(self) -> forest_lib.ForestConfig:
    return forest_lib.ForestConfig(
        num_trees=self.num_trees, max_features=self.max_features,
        max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
        seed=self.seed)

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


# -- 1. transfer phase ---------------------------------------------------------


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
  from fennec_jax import estimators  # pylint: disable=g-import-not-at-top
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


@functools.partial(jax.jit, static_argnames=('num_iterations',))
def _nmf_loop(x, mask, w, h, *, num_iterations):
  eps = jnp.finfo(x.dtype).eps
  mx = mask * x

  def body(_, wh):
    w, h = wh
    w = w * (mx @ h) / ((mask * (w @ h.T)) @ h + eps)
    h = h * (mx.T @ w) / ((mask * (w @ h.T)).T @ w + eps)
    return w, h

  w, h = jax.lax.fori_loop(0, num_iterations, body, (w, h))
  resid = mask * (x - w @ h.T)
  return w, h, jnp.sum(resid ** 2)


class NMFResult(NamedTuple):
  """P ~ model_factors @ task_factors.T (all entries >= 0).

  Attributes:
    model_factors: [M, k] u_i.
    task_factors: [T, k] v_j.
    loss: squared error over the observed entries.
  """
  model_factors: np.ndarray
  task_factors: np.ndarray
  loss: float


def nmf_init(scores: np.ndarray, mask: np.ndarray, rank: int, seed: int
             ) -> tuple[np.ndarray, np.ndarray]:
  """sklearn's 'random' NMF init: sqrt(mean / k) |N(0, 1)| (observed mean)."""
  avg = np.sqrt(max(float(scores[mask].mean()), 0.0) / rank)
  rng = np.random.default_rng(seed)
  w = avg * np.abs(rng.standard_normal((scores.shape[0], rank)))
  h = avg * np.abs(rng.standard_normal((scores.shape[1], rank)))
  return w, h


def nmf(scores: Any, mask: Any = None, *, rank: int = 5,
        num_iterations: int = 1000, seed: int = 0,
        init: tuple[Any, Any] | None = None) -> NMFResult:
  """Masked non-negative matrix factorization by multiplicative updates.

  Minimizes sum_observed (P_ij - u_i . v_j)^2 over U, V >= 0 with Lee &
  Seung's updates, W first then H as sklearn's 'mu' solver (eps = machine
  epsilon in the denominators):

    U <- U * ((M*P) V) / ((M*(U V^T)) V + eps)
    V <- V * ((M*P)^T U) / ((M*(U V^T))^T U + eps)

  Args:
    scores: [M, T] non-negative scores (NaN / anything where unobserved).
    mask: [M, T] bool, True where observed (default: finite entries).
    rank: k.
    num_iterations: updates (a fixed count: one compiled loop).
    seed: seeds the random init (`nmf_init`).
    init: optional (U0 [M, k], V0 [T, k]) non-negative initial factors.

  Returns:
    An `NMFResult` (float32 factors as numpy arrays).

  Raises:
    ValueError: negative or non-finite observed entries, no observation,
      bad shapes.
  """
  scores = np.asarray(scores, np.float64)
  mask = np.isfinite(scores) if mask is None else np.asarray(mask, bool)
  if scores.ndim != 2 or mask.shape != scores.shape:
    raise ValueError(f'scores must be [M, T] with a mask of the same shape; '
                     f'got {scores.shape} and {mask.shape}.')
  if not mask.any():
    raise ValueError('nmf: no observed entries.')
  if not np.isfinite(scores[mask]).all():
    raise ValueError('nmf: observed scores must be finite.')
  if (scores[mask] < 0).any():
    i, j = np.argwhere(mask & (scores < 0))[0]
    raise ValueError(f'nmf: scores must be >= 0; entry ({i}, {j}) is '
                     f'{scores[i, j]} (use PaperConfig(shift="min")).')
  if init is None:
    w, h = nmf_init(scores, mask, rank, seed)
  else:
    w, h = (np.asarray(a, np.float64) for a in init)
    if (w.shape != (scores.shape[0], rank) or h.shape != (scores.shape[1],
                                                          rank)
        or (w < 0).any() or (h < 0).any()):
      raise ValueError(f'nmf init must be non-negative [M, {rank}] and '
                       f'[T, {rank}], got {w.shape}, {h.shape}.')
  x = np.where(mask, scores, 0.0)
  w, h, loss = _nmf_loop(jnp.asarray(x, jnp.float32),
                         jnp.asarray(mask, jnp.float32),
                         jnp.asarray(w, jnp.float32),
                         jnp.asarray(h, jnp.float32),
                         num_iterations=int(num_iterations))
  return NMFResult(np.asarray(w), np.asarray(h), float(loss))


# -- 3. meta phase: architecture features --------------------------------------


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
  """Parameter count of a traced graph (`graph.graph['param_sizes']`)."""
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


# Clusters by (graph2vec documents, config): leave-one-task-out refits see
# the same architectures every time, and graph2vec costs ~20 CPU s for 30
# graphs of a few hundred nodes. Bounded; the oldest entry goes first.
_CLUSTER_CACHE: dict[str, np.ndarray] = {}
_CLUSTER_CACHE_SIZE = 8


def graph2vec_clusters(graphs: Sequence[nx.DiGraph], config: PaperConfig
                       ) -> np.ndarray:
  """archi2vec as in the paper: WL + PV-DBOW graph2vec + k-means.

  The same computation as `wl.archi2vec_clusters` (WL documents of the
  nodes' `op` labels, `wl.Graph2Vec`, `wl.kmeans`), memoized in-process by
  the documents and the configuration (the result is deterministic).

  Args:
    graphs: traced architecture DAGs (nodes labelled by `op`).
    config: gives `wl_iterations`, `graph2vec_dim`, `num_clusters` (clipped
      to the number of graphs) and `seed`.

  Returns:
    [n] cluster ids.
  """
  from fennec_jax.archi2vec import wl  # pylint: disable=g-import-not-at-top
  k = min(config.num_clusters, len(graphs))
  docs = [wl.wl_document(g, config.wl_iterations) for g in graphs]
  key = hashlib.blake2b(json.dumps(
      [config.graph2vec_dim, config.wl_iterations, config.seed, k, docs]
  ).encode(), digest_size=16).hexdigest()
  if key not in _CLUSTER_CACHE:
    model = wl.Graph2Vec(dim=config.graph2vec_dim,
                         iterations=config.wl_iterations,
                         seed=config.seed).fit_documents(docs)
    _, clusters = wl.kmeans(model.embeddings, k, seed=config.seed)
    while len(_CLUSTER_CACHE) >= _CLUSTER_CACHE_SIZE:
      del _CLUSTER_CACHE[next(iter(_CLUSTER_CACHE))]
    _CLUSTER_CACHE[key] = np.asarray(clusters, np.int64)
  return _CLUSTER_CACHE[key].copy()


# -- the recommender -----------------------------------------------------------


class PaperScores(NamedTuple):
  """Scores of every model for B new tasks.

  Attributes:
    merged: [B, M] s = w s^T + (1 - w) s^M (what `recommend` ranks by).
    transfer: [B, M] s^T = U v*.
    meta: [B, M] s^M, the linear meta regression.
    task_vectors: [B, k] v*, the mean forest prediction over the images.
  """
  merged: np.ndarray
  transfer: np.ndarray
  meta: np.ndarray
  task_vectors: np.ndarray


class PaperRecommendation(NamedTuple):
  """Ranked models for B tasks: ids/indices/scores [B, top], best first."""
  model_ids: list[list[str]]
  indices: np.ndarray
  scores: np.ndarray
  all_scores: PaperScores


def _as_float(value: Any, what: str) -> float:
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f'{what}: {value!r} is not a number.') from None
  if not np.isfinite(v):
    raise ValueError(f'{what}: {value!r} is not finite.')
  return v


class FennecPaper:
  """The paper's Fennec: NMF + forest task vectors + archi2vec meta + merge.

  Example:
    paper = FennecPaper().fit(history, image_embeddings={task: [n, D]},
                              graphs={model_id: traced_dag})
    rec = paper.recommend([new_images], [{'num_train': 5000,
                                           'num_classes': 10}], top=5)
    paper.save('/abs/dir'); FennecPaper.load('/abs/dir')
  """

  def __init__(self, config: PaperConfig = PaperConfig()):
    config.validate()
    self.config = config
    self.model_ids: tuple[str, ...] = ()
    self.task_ids: tuple[str, ...] = ()
    self.model_factors: np.ndarray | None = None   # [M, k]
    self.task_factors: np.ndarray | None = None    # [T, k]
    self.offset = 0.0
    self.nmf_loss: float | None = None
    self.forest: forest_lib.RandomForestRegressor | None = None
    self.pca_mean: np.ndarray | None = None        # [D]
    self.pca_basis: np.ndarray | None = None       # [D, p]
    self.model_features: np.ndarray | None = None  # [M, F_model]
    self.clusters: np.ndarray | None = None        # [M] or None
    self.use_task_features = False
    self.meta_mean: np.ndarray | None = None
    self.meta_scale: np.ndarray | None = None
    self.meta_coef: np.ndarray | None = None       # [1 + F]
    self._num_forest_rows = 0

  # -- fitting -----------------------------------------------------------------

  def fit(self, history: Any, image_embeddings: Mapping[str, Any],
          graphs: Mapping[str, nx.DiGraph] | None = None,
          model_meta: Mapping[str, Mapping[str, Any]] | None = None,
          task_meta: Mapping[str, Mapping[str, Any]] | None = None
          ) -> 'FennecPaper':
    """Fits all three phases on a history.

    Args:
      history: a `fennec_jax.History`; its scores are P (e.g. `fda_matrix`).
      image_embeddings: `{task_id: [n, D]}` proxy embeddings of the
        historical tasks' probe images (tasks without any, or without an
        observed score, are left out of the forest, logged; at least 2
        tasks must be in it).
      graphs: `{model_id: DAG}` traced architectures: give #params, #layers
        and the graph2vec clusters.
      model_meta: `{model_id: {'num_params', 'num_layers', 'cluster'}}`,
        overriding or replacing what graphs give (also read from the
        history's model metadata columns of the same names).
      task_meta: `{task_id: {'num_train', 'num_classes'}}` (also read from
        the history's task metadata: `num_train`/`train_size`,
        `num_classes`). The task columns enter the meta regression only if
        every historical task has both (else left out, logged).

    Returns:
      self.

    Raises:
      ValueError: bad embeddings, models missing from graphs/metadata,
        negative P without shift='min', unknown ids.
    """
    c = self.config
    self.model_ids = tuple(history.model_ids)
    self.task_ids = tuple(history.task_ids)
    scores = np.asarray(history.scores, np.float64)
    mask = np.asarray(history.mask, bool)
    # Phase 1: NMF.
    self.offset = 0.0
    if c.shift == 'min':
      self.offset = float(scores[mask].min())
    p = np.where(mask, scores - self.offset, 0.0)
    few = [self.task_ids[j] for j in np.flatnonzero(mask.sum(0) < 2)]
    if few:
      logging.info('FennecPaper: %d tasks have < 2 observed models (kept; '
                   'their vectors are poorly determined): %s', len(few),
                   few[:10])
    empty = int((mask.sum(1) == 0).sum())
    if empty:
      logging.info('FennecPaper: %d models have no observation; their '
                   'vectors are 0 (transfer score 0).', empty)
    res = nmf(p, mask, rank=c.rank, num_iterations=c.nmf_iterations,
              seed=c.seed)
    self.model_factors = np.asarray(res.model_factors, np.float64)
    self.task_factors = np.asarray(res.task_factors, np.float64)
    self.nmf_loss = res.loss
    # Phase 2: the forest from image embeddings to task vectors.
    self._fit_forest(image_embeddings, mask.any(0))
    # Phase 3: meta regression.
    self.model_features, self.clusters = self._model_features(
        graphs, model_meta, history)
    task_feats = self._history_task_features(task_meta, history)
    self.use_task_features = task_feats is not None
    rows, cols = np.nonzero(mask)
    x = self._design(rows, task_feats[cols] if self.use_task_features
                     else None)
    y = p[rows, cols]
    self.meta_mean = x.mean(0)
    scale = x.std(0)
    self.meta_scale = np.where(scale > 0, scale, 1.0)
    xs = np.concatenate([np.ones((len(x), 1)),
                         (x - self.meta_mean) / self.meta_scale], 1)
    self.meta_coef = np.linalg.lstsq(xs, y, rcond=None)[0]
    logging.info('FennecPaper: NMF loss %.4g on %d entries, forest on %d '
                 'images, meta regression on %d pairs (%d features).',
                 res.loss, int(mask.sum()), self._num_forest_rows, len(y),
                 x.shape[1])
    return self

  def _fit_forest(self, image_embeddings, observed_tasks):
    if not isinstance(image_embeddings, Mapping):
      raise ValueError('image_embeddings must be a {task_id: [n, D]} '
                       f'mapping, got {type(image_embeddings).__name__}.')
    unknown = sorted(set(image_embeddings) - set(self.task_ids))
    if unknown:
      raise ValueError(f'image_embeddings name tasks not in the history: '
                       f'{unknown[:10]}.')
    xs, ys, dim, subsampled = [], [], None, 0
    unobserved = [t for j, t in enumerate(self.task_ids)
                  if t in image_embeddings and not observed_tasks[j]]
    if unobserved:
      logging.info('FennecPaper: %d tasks with images have no observed '
                   'score (no task vector); left out of the forest: %s',
                   len(unobserved), unobserved[:10])
    for j, task in enumerate(self.task_ids):
      if task not in image_embeddings or not observed_tasks[j]:
        continue
      e = np.asarray(image_embeddings[task], np.float64)
      if e.ndim != 2 or e.shape[0] < 1 or not np.isfinite(e).all():
        raise ValueError(f'image_embeddings[{task!r}] must be a finite '
                         f'[n >= 1, D] array, got shape {e.shape}.')
      cap = self.config.images_per_task
      if cap is not None and len(e) > cap:
        keep = np.random.default_rng([self.config.seed, j]).choice(
            len(e), size=cap, replace=False)
        e = e[np.sort(keep)]
        subsampled += 1
      if dim is not None and e.shape[1] != dim:
        raise ValueError(f'image_embeddings[{task!r}] has dim {e.shape[1]}, '
                         f'other tasks {dim}.')
      dim = e.shape[1]
      xs.append(e)
      ys.append(np.broadcast_to(self.task_factors[j],
                                (len(e), self.config.rank)))
    if subsampled:
      logging.info('FennecPaper: %d tasks subsampled to %d images for the '
                   'forest.', subsampled, self.config.images_per_task)
    missing = len(self.task_ids) - len(xs)
    if missing:
      logging.info('FennecPaper: %d of %d history tasks have no images; the '
                   'forest is fit on the others.', missing, len(self.task_ids))
    if len(xs) < 2:
      raise ValueError(f'FennecPaper needs the images of at least 2 history '
                       f'tasks, got {len(xs)}.')
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    self.pca_mean = x.mean(0)
    p = self.config.embedding_pca
    if p is not None and p < x.shape[1]:
      # Top eigenvectors of the D x D scatter (cheaper than an SVD of x).
      xc = x - self.pca_mean
      _, vecs = np.linalg.eigh(xc.T @ xc)
      self.pca_basis = vecs[:, ::-1][:, :p]
    else:
      self.pca_basis = np.eye(x.shape[1])
    self.forest = forest_lib.RandomForestRegressor(
        self.config.forest_config()).fit(self._project(x), y)
    self._num_forest_rows = len(x)

  def _project(self, x: np.ndarray) -> np.ndarray:
    return (x - self.pca_mean) @ self.pca_basis

  def _model_features(self, graphs, model_meta, history):
    """[M, 2] (#params, #layers) and [M] clusters (or None)."""
    m = len(self.model_ids)
    model_meta = dict(model_meta or {})
    unknown = sorted(set(model_meta) - set(self.model_ids))
    if unknown:
      raise ValueError(f'model_meta names models not in the history: '
                       f'{unknown[:10]}.')
    values = {k: [None] * m for k in ('num_params', 'num_layers', 'cluster')}
    hist_meta = getattr(history, 'model_metadata', {}) or {}
    for k in values:
      if k in hist_meta:
        for i, v in enumerate(hist_meta[k]):
          if v is not None and not (isinstance(v, float) and np.isnan(v)):
            values[k][i] = v
    if graphs is not None:
      missing = [mid for mid in self.model_ids if mid not in graphs]
      if missing:
        raise ValueError(f'graphs lack {len(missing)} history models: '
                         f'{missing[:10]}.')
      ordered = [graphs[mid] for mid in self.model_ids]
      for i, g in enumerate(ordered):
        try:
          values['num_params'][i] = count_params(g)
        except ValueError:
          if values['num_params'][i] is None:  # Else: history metadata.
            raise
        values['num_layers'][i] = count_layers(g)
      for i, cl in enumerate(graph2vec_clusters(ordered, self.config)):
        values['cluster'][i] = int(cl)
    for i, mid in enumerate(self.model_ids):
      for k, v in model_meta.get(mid, {}).items():
        if k not in values:
          raise ValueError(f'model_meta[{mid!r}] key {k!r}; valid: '
                           f'{list(values)}.')
        values[k][i] = v
    for k in ('num_params', 'num_layers'):
      missing = [self.model_ids[i] for i in range(m) if values[k][i] is None]
      if missing:
        raise ValueError(f'{k} is unknown for models {missing[:10]}: give '
                         'graphs or model_meta.')
    feats = np.asarray([[_as_float(values[k][i], f'{k} of '
                                   f'{self.model_ids[i]!r}')
                         for k in ('num_params', 'num_layers')]
                        for i in range(m)])
    have = [v is not None for v in values['cluster']]
    if not any(have):
      logging.info('FennecPaper: no architecture clusters (no graphs or '
                   "'cluster' metadata); the meta regression omits them.")
      return feats, None
    if not all(have):
      missing = [self.model_ids[i] for i in range(m) if not have[i]]
      raise ValueError(f'cluster is unknown for models {missing[:10]} '
                       'while others have one.')
    clusters = np.asarray([int(_as_float(v, 'cluster'))
                           for v in values['cluster']])
    return feats, clusters

  def _history_task_features(self, task_meta, history):
    task_meta = dict(task_meta or {})
    unknown = sorted(set(task_meta) - set(self.task_ids))
    if unknown:
      raise ValueError(f'task_meta names tasks not in the history: '
                       f'{unknown[:10]}.')
    hist_meta = getattr(history, 'task_metadata', {}) or {}
    out = np.full((len(self.task_ids), len(TASK_KEYS)), np.nan)
    for col, key in enumerate(TASK_KEYS):
      for alias in _TASK_KEY_ALIASES[key]:
        if alias in hist_meta:
          out[:, col] = np.asarray(hist_meta[alias], np.float64)
          break
      for j, task in enumerate(self.task_ids):
        if key in task_meta.get(task, {}):
          out[j, col] = _as_float(task_meta[task][key],
                                  f'task_meta[{task!r}][{key!r}]')
    if np.isnan(out).any():
      missing = [self.task_ids[j] for j in np.flatnonzero(
          np.isnan(out).any(1))]
      logging.info('FennecPaper: %d tasks lack %s (e.g. %s); the meta '
                   'regression omits the task columns.', len(missing),
                   TASK_KEYS, missing[:5])
      return None
    return out

  def _design(self, rows: np.ndarray, task_feats: np.ndarray | None
              ) -> np.ndarray:
    """Meta design rows [#params, #layers, cluster one-hot, task cols]."""
    parts = [self.model_features[rows]]
    if self.clusters is not None:
      k = int(self.clusters.max()) + 1
      parts.append(np.eye(k)[self.clusters[rows]])
    if task_feats is not None:
      parts.append(task_feats)
    return np.concatenate(parts, 1)

  # -- predicting --------------------------------------------------------------

  def _check_fitted(self):
    if self.forest is None:
      raise ValueError('FennecPaper is not fitted: call fit() or load().')

  def _task_feature_rows(self, task_meta, num_tasks):
    if not self.use_task_features:
      return None
    if task_meta is None or len(task_meta) != num_tasks:
      raise ValueError(f'this FennecPaper uses task metadata: give task_meta '
                       f'as {num_tasks} dicts with keys {TASK_KEYS}.')
    out = np.zeros((num_tasks, len(TASK_KEYS)))
    for b, meta in enumerate(task_meta):
      for col, key in enumerate(TASK_KEYS):
        if key not in meta:
          raise ValueError(f'task_meta[{b}] lacks {key!r} (has '
                           f'{sorted(meta)}).')
        out[b, col] = _as_float(meta[key], f'task_meta[{b}][{key!r}]')
    return out

  def score_components(
      self, image_embeddings: Sequence[Any] | Mapping[str, Any],
      task_meta: Sequence[Mapping[str, Any]] | None = None) -> PaperScores:
    """Scores every model for B new tasks, phase by phase.

    Args:
      image_embeddings: B arrays [n_b, D] (or a `{name: [n, D]}` mapping, in
        its order) of the new tasks' probe-image proxy embeddings.
      task_meta: B dicts `{'num_train', 'num_classes'}` (needed if the fit
        used task metadata; ignored otherwise). They shift every model's
        meta score equally, so they do not change the ranking.

    Returns:
      `PaperScores` ([B, M] merged, transfer, meta; [B, k] task vectors).

    Raises:
      ValueError: a task without images, wrong embedding dim, non-finite
        values, missing task metadata.
    """
    self._check_fitted()
    if isinstance(image_embeddings, Mapping):
      names = list(image_embeddings)
      image_embeddings = [image_embeddings[k] for k in names]
    else:
      names = [str(b) for b in range(len(image_embeddings))]
    if not image_embeddings:
      raise ValueError('predict needs at least one task.')
    dim = self.pca_mean.shape[0]
    arrays = []
    for name, e in zip(names, image_embeddings):
      e = np.asarray(e, np.float64)
      if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError(f'task {name}: needs images: a [n >= 1, {dim}] '
                         f'embedding array, got shape {e.shape}.')
      if e.shape[1] != dim or not np.isfinite(e).all():
        raise ValueError(f'task {name}: embeddings must be finite [n, {dim}]'
                         f', got shape {e.shape}.')
      arrays.append(e)
    # One forest pass over all tasks' images, then per-task means.
    pred = self.forest.predict(self._project(np.concatenate(arrays)))
    ends = np.cumsum([len(e) for e in arrays])
    v = np.stack([p.mean(0) for p in np.split(pred, ends[:-1])])
    transfer = v @ self.model_factors.T + self.offset
    m = len(self.model_ids)
    tf = self._task_feature_rows(task_meta, len(v))
    meta = np.empty_like(transfer)
    for b in range(len(v)):
      x = self._design(np.arange(m), None if tf is None
                       else np.broadcast_to(tf[b], (m, tf.shape[1])))
      xs = np.concatenate([np.ones((m, 1)),
                           (x - self.meta_mean) / self.meta_scale], 1)
      meta[b] = xs @ self.meta_coef + self.offset
    w = self.config.transfer_weight
    if self.config.standardize_merge:
      merged = w * _zscore(transfer) + (1 - w) * _zscore(meta)
    else:
      merged = w * transfer + (1 - w) * meta
    return PaperScores(merged, transfer, meta, v)

  def predict(self, image_embeddings: Sequence[Any] | Mapping[str, Any],
              task_meta: Sequence[Mapping[str, Any]] | None = None
              ) -> np.ndarray:
    """[B, M] merged scores s (see `score_components` for the inputs)."""
    return self.score_components(image_embeddings, task_meta).merged

  def recommend(self, image_embeddings: Sequence[Any] | Mapping[str, Any],
                task_meta: Sequence[Mapping[str, Any]] | None = None,
                top: int = 5) -> PaperRecommendation:
    """The top models by merged score (see `score_components`)."""
    self._check_fitted()
    if not 1 <= top <= len(self.model_ids):
      raise ValueError(f'top={top} must be in [1, {len(self.model_ids)}].')
    scores = self.score_components(image_embeddings, task_meta)
    idx = np.argsort(-scores.merged, axis=1, kind='stable')[:, :top]
    return PaperRecommendation(
        model_ids=[[self.model_ids[i] for i in row] for row in idx],
        indices=idx, scores=np.take_along_axis(scores.merged, idx, 1),
        all_scores=scores)

  # -- persistence -------------------------------------------------------------

  def save(self, path: str) -> None:
    """Writes `path/fennec_paper.json` + `path/arrays.npz`.

    Raises:
      ValueError: if not fitted or `path` exists.
    """
    self._check_fitted()
    path = os.path.abspath(path)
    if os.path.exists(path):
      raise ValueError(f'{path} exists; choose a new checkpoint directory.')
    os.makedirs(path)
    arrays = {'model_factors': self.model_factors,
              'task_factors': self.task_factors,
              'pca_mean': self.pca_mean, 'pca_basis': self.pca_basis,
              'model_features': self.model_features,
              'meta_mean': self.meta_mean, 'meta_scale': self.meta_scale,
              'meta_coef': self.meta_coef}
    if self.clusters is not None:
      arrays['clusters'] = self.clusters
    arrays.update({f'forest_{k}': v
                   for k, v in self.forest.to_arrays().items()})
    np.savez(os.path.join(path, _ARRAYS_FILE), **arrays)
    meta = {'format_version': _FORMAT_VERSION,
            'config': self.config.to_json(),
            'model_ids': list(self.model_ids),
            'task_ids': list(self.task_ids),
            'offset': self.offset, 'nmf_loss': self.nmf_loss,
            'use_task_features': self.use_task_features}
    with open(os.path.join(path, _META_FILE), 'w') as f:
      json.dump(meta, f, indent=1)

  @classmethod
  def load(cls, path: str, config: PaperConfig | None = None
           ) -> 'FennecPaper':
    """Reads a checkpoint written by `save`.

    Args:
      path: the checkpoint directory.
      config: the expected configuration; another saved one is an error
        naming the differing fields (None accepts the saved one).

    Returns:
      The fitted FennecPaper.

    Raises:
      ValueError: not a FennecPaper checkpoint, another format version or
        another configuration.
    """
    path = os.path.abspath(path)
    meta_path = os.path.join(path, _META_FILE)
    if not os.path.exists(meta_path):
      raise ValueError(f'{path} is not a FennecPaper checkpoint (no '
                       f'{_META_FILE}).')
    with open(meta_path) as f:
      meta = json.load(f)
    if meta.get('format_version') != _FORMAT_VERSION:
      raise ValueError(f'{meta_path}: format_version '
                       f'{meta.get("format_version")!r}; this code reads '
                       f'{_FORMAT_VERSION}.')
    saved = meta['config']
    if config is not None and config.to_json() != saved:
      want = config.to_json()
      diff = {k: (want.get(k), saved.get(k)) for k in sorted(set(want) |
                                                             set(saved))
              if want.get(k) != saved.get(k)}
      raise ValueError(f'{path} was made with another PaperConfig; '
                       f'differences (expected vs saved): {diff}')
    out = cls(PaperConfig(**saved))
    with np.load(os.path.join(path, _ARRAYS_FILE)) as data:
      arrays = {k: data[k] for k in data.files}
    out.model_ids = tuple(meta['model_ids'])
    out.task_ids = tuple(meta['task_ids'])
    out.offset = float(meta['offset'])
    out.nmf_loss = meta['nmf_loss']
    out.use_task_features = bool(meta['use_task_features'])
    for k in ('model_factors', 'task_factors', 'pca_mean', 'pca_basis',
              'model_features', 'meta_mean', 'meta_scale', 'meta_coef'):
      setattr(out, k, arrays[k])
    out.clusters = arrays.get('clusters')
    out.forest = forest_lib.RandomForestRegressor.from_arrays(
        {k[len('forest_'):]: v for k, v in arrays.items()
         if k.startswith('forest_')}, out.config.forest_config())
    return out


def _zscore(x: np.ndarray) -> np.ndarray:
  sd = x.std(1, keepdims=True)
  return (x - x.mean(1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def restrict(performance: Any, like: Any) -> Any:
  """`performance` (e.g. an FDA History) on the models and tasks of `like`.

  Rows follow `like.model_ids`, columns `like.task_ids`; the metadata is
  `like`'s. Used to fit the paper on its FDA matrix while the protocol's
  history holds fine-tuning accuracy.

  Raises:
    ValueError: a model or task of `like` missing from `performance`.
  """
  for kind, ids, have in (('models', like.model_ids, performance.model_ids),
                          ('tasks', like.task_ids, performance.task_ids)):
    missing = sorted(set(ids) - set(have))
    if missing:
      raise ValueError(f'the performance matrix lacks {len(missing)} '
                       f'{kind}: {missing[:10]}.')
  rows = [performance.model_index(m) for m in like.model_ids]
  cols = [performance.task_index(t) for t in like.task_ids]
  return history_lib.History(
      model_ids=like.model_ids, task_ids=like.task_ids,
      scores=performance.scores[np.ix_(rows, cols)],
      mask=performance.mask[np.ix_(rows, cols)],
      model_metadata=dict(like.model_metadata),
      task_metadata=dict(like.task_metadata), name=performance.name,
      score_name=performance.score_name)


def paper_method(image_embeddings: Mapping[str, Any],
                 graphs: Mapping[str, nx.DiGraph] | None = None,
                 model_meta: Mapping[str, Mapping[str, Any]] | None = None,
                 task_meta: Mapping[str, Mapping[str, Any]] | None = None,
                 config: PaperConfig = PaperConfig(),
                 performance: Any = None):
  """A `fennec_jax.benchmarks.baselines.Method` running `FennecPaper`.

  Fit on the training history (target column removed) once per target, then
  scored from the target's images; the K observed scores are ignored (the
  paper has no fold-in), so every draw gets the same scores.

  Args:
    image_embeddings: `{task_id: [n, D]}` for the history's tasks.
    graphs: as `FennecPaper.fit`.
    model_meta: as `FennecPaper.fit`.
    task_meta: as `FennecPaper.fit`; the target's entry is used to predict.
    config: the recipe.
    performance: optional History of the paper's P (e.g. FDA scores from
      `fda_matrix`) over the same models and at least the training tasks;
      fit on it (restricted to the training tasks) instead of on the
      protocol's history.

  Returns:
    `method(train, target, observed) -> [B, M]`.
  """
  def method(train: Any, target: str, observed: np.ndarray) -> np.ndarray:
    if target not in image_embeddings:
      raise ValueError(f'fennec_paper: no images of target {target!r}.')
    if performance is not None:
      train = restrict(performance, train)
    train_emb = {t: e for t, e in image_embeddings.items()
                 if t in train.task_ids}
    train_meta = None if task_meta is None else {
        t: v for t, v in task_meta.items() if t in train.task_ids}
    paper = FennecPaper(config).fit(train, train_emb, graphs, model_meta,
                                    train_meta)
    tm = None
    if paper.use_task_features:
      if task_meta is None or target not in task_meta:
        raise ValueError(f'fennec_paper: no task_meta of target {target!r}.')
      tm = [task_meta[target]]
    scores = paper.predict([image_embeddings[target]], tm)[0]
    return np.broadcast_to(scores, observed.shape).copy()

  return method
