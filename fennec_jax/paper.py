"""The paper-faithful Fennec (`FennecPaper`): the released code's recipe.

Every improvement in `fennec_jax.recommender.Fennec` is measured against this
baseline, so it follows the paper's released code (PAPER.md) step by step:

1. Transfer phase. A performance matrix P (models x historical tasks), in the
   paper the FDA score (`paper_features.fda_matrix`: LDA on a model's
   penultimate features of a 500-image class-balanced probe, PCA 32, mean
   true-class posterior; any non-negative history works too) is factorized
   by unregularized non-negative matrix factorization, k = 5: P ~ U V^T,
   U [M, k], V [T, k] (`fennec_jax.nmf`: Lee & Seung multiplicative
   updates for the squared error, in JAX; sklearn's `NMF(solver='mu')`
   update rule and random init, masked where P is unobserved). A model or
   task with no observation gets a zero vector (logged).
2. Task vector. A random forest (25 trees, `fennec_jax.forest`) regresses
   each historical task's probe-image proxy embeddings onto that task's
   vector v_j; a new task's vector v* is the mean of its images'
   predictions, and its transfer score is s^T_i = u_i . v*.
3. Meta phase. archi2vec as in the paper: the traced architecture DAG ->
   Weisfeiler-Lehman labels (2 iterations) -> PV-DBOW graph2vec (128-d) ->
   k-means clusters. A linear least-squares regression on `[#params,
   #conv+linear layers, cluster one-hot, #train images of the task,
   #classes]` (all gathered by `fennec_jax.paper_features`) fit on the
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
from typing import Any, NamedTuple

from absl import logging
import networkx as nx
import numpy as np

from fennec_jax import checkpoint
from fennec_jax import forest as forest_lib
from fennec_jax import history as history_lib
from fennec_jax import nmf as nmf_lib
from fennec_jax import paper_features

# The checkpoint kind of `FennecPaper.save`.
_KIND = 'FennecPaper'
# Re-exported: the paper's factorization and performance matrix, reached as
# `paper.nmf` / `paper.fda_matrix` by scripts that run the recipe's steps.
nmf = nmf_lib.nmf
fda_matrix = paper_features.fda_matrix


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
    res = nmf_lib.nmf(p, mask, rank=c.rank,
                      num_iterations=c.nmf_iterations, seed=c.seed)
    self.model_factors = np.asarray(res.model_factors, np.float64)
    self.task_factors = np.asarray(res.task_factors, np.float64)
    self.nmf_loss = res.loss
    # Phase 2: the forest from image embeddings to task vectors.
    self._fit_forest(image_embeddings, mask.any(0))
    # Phase 3: meta regression.
    self.model_features, self.clusters = paper_features.model_features(
        self.model_ids, graphs, model_meta, history,
        num_clusters=c.num_clusters, wl_iterations=c.wl_iterations,
        graph2vec_dim=c.graph2vec_dim, seed=c.seed)
    task_feats = paper_features.history_task_features(
        self.task_ids, task_meta, history)
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
    tf = (paper_features.new_task_features(task_meta, len(v))
          if self.use_task_features else None)
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
    """Writes a `fennec_jax.checkpoint` of kind 'FennecPaper' at `path`.

    The arrays are the factors, the PCA, the meta regression and the
    forest's flat arrays; the manifest's meta holds the configuration, the
    ids and the scalars.

    Raises:
      ValueError: if not fitted or `path` exists.
    """
    self._check_fitted()
    arrays = {'model_factors': self.model_factors,
              'task_factors': self.task_factors,
              'pca_mean': self.pca_mean, 'pca_basis': self.pca_basis,
              'model_features': self.model_features,
              'meta_mean': self.meta_mean, 'meta_scale': self.meta_scale,
              'meta_coef': self.meta_coef,
              'forest': self.forest.to_arrays()}
    if self.clusters is not None:
      arrays['clusters'] = self.clusters
    meta = {'config': self.config.to_json(),
            'model_ids': list(self.model_ids),
            'task_ids': list(self.task_ids),
            'offset': self.offset, 'nmf_loss': self.nmf_loss,
            'use_task_features': self.use_task_features}
    checkpoint.save(path, _KIND, arrays, meta)

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
      checkpoint.CheckpointError: not a FennecPaper checkpoint, another
        format version, or damaged.
      ValueError: another configuration.
    """
    arrays, meta = checkpoint.load(path, _KIND)
    saved = meta['config']
    if config is not None and config.to_json() != saved:
      want = config.to_json()
      diff = {k: (want.get(k), saved.get(k)) for k in sorted(set(want) |
                                                             set(saved))
              if want.get(k) != saved.get(k)}
      raise ValueError(f'{path} was made with another PaperConfig; '
                       f'differences (expected vs saved): {diff}')
    out = cls(PaperConfig(**saved))
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
        arrays['forest'], out.config.forest_config())
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
