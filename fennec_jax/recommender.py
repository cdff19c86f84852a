"""Fennec: fit a transfer space on a history, recommend models for new tasks.

`Fennec.fit(history, task_embeddings=...)` fits the transfer space
(`fennec_jax.space`: raw score of model m on task t = phi[m] . w_t) and, when
task embeddings (proxy image embeddings) of the historical tasks are given,
a task map from embeddings to a new task's prior (`FennecConfig.task_map`,
`fennec_jax.task_maps`: 'neighbors', the default, or 'ridge').

A new task is then described by

* its embeddings only: w ~ N(map(e), C_e), with C_e the covariance of the
  map's leave-one-task-out residuals (so the prior is as wide as the map is
  wrong on held-out tasks);
* K observed scores only: the K-shot fold-in learned on the history
  (`space.kshot`, calibrated per K on first use: `FennecConfig.kshot`), or
  with `kshot=False` the population prior updated by the K scores (Bayesian
  linear regression, as `TransferSpace.fold_in`);
* both: the embedding prior updated by the K scores;
* neither: the population prior (documented fallback: roughly popularity).

`recommend` first asks the task map whether it can place each task
(`task_maps.TaskConfidence`: enough images, not farther from the history
than any historical task); a task it cannot place is ranked as one without
embeddings, and `Recommendation.confidence` says so.

`recommend` does this for many tasks at once: one batched posterior and one
`[B, d] @ [d, M]` matmul (`fennec_jax.posterior`) give every model's
predicted score and its uncertainty; the top models are returned ranked. The
task batch and K are padded to powers of two, so the kernels compile once
per bucket.

`save`/`load` write and read a `fennec_jax.checkpoint` of kind 'Fennec'
(with the history's scores, so a loaded Fennec recalibrates the K-shot
fold-in); loading with another configuration is a clear error.
"""

from collections.abc import Mapping, Sequence
import csv
import dataclasses
import json
import os
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import checkpoint
from fennec_jax import history as history_lib
from fennec_jax import neighbors as neighbors_lib
from fennec_jax import posterior as posterior_lib
from fennec_jax import space as space_lib
from fennec_jax.space import kshot_lazy
from fennec_jax import task_maps as task_maps_lib

# The paper's transfer phase (released code): unregularized non-negative MF
# of the raw score matrix with k = 5, no biases, no normalization.
PAPER_SPACE = dict(rank=5, nonneg=True, use_bias=False, prior_precision=0.0,
                   bias_prior_precision=0.0, normalization='none')

_CHECKPOINT_KIND = 'Fennec'
TASK_MAPS = task_maps_lib.TASK_MAPS
_MIN_MAP_SCORES = 3


@dataclasses.dataclass(frozen=True)
class FennecConfig:
  """How Fennec is fit.

  Attributes:
    space: the transfer space's configuration.
    task_map: how task embeddings give a new task's prior, a name in
      `TASK_MAPS` (`fennec_jax.task_maps`): 'neighbors' (votes of its images
      for the nearest historical tasks) or 'ridge' (a ridge map from its
      mean embedding direction).
    ridge_grid: candidate ridge penalties of the embedding -> task-vector
      map (standardized embeddings; also the model-embedding map of cold-
      start models); the one with the lowest leave-one-out error is used.
    neighbor_grid: candidate (k, smoothing) pairs of the 'neighbors' map,
      chosen by leave-one-task-out error.
    prior_shrinkage: the embedding prior's covariance is (1 - a) C + a
      diag(C) of the leave-one-out residual covariance C.
    kshot: tasks given only observed scores use the K-shot fold-in learned
      on the history (`space.kshot`: its predictions and calibrated std;
      `vectors` stay the plain posterior mean); False: the plain fold-in, as
      also with cold models and Fennecs without a stored history.
  """
  space: space_lib.SpaceConfig = space_lib.SpaceConfig()
  task_map: str = 'neighbors'
  ridge_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
  neighbor_grid: tuple[tuple[int, float], ...] = neighbors_lib.DEFAULT_GRID
  prior_shrinkage: float = 0.1
  kshot: bool = True

  def __post_init__(self):
    if self.task_map not in TASK_MAPS:
      raise ValueError(f'task_map={self.task_map!r}; valid: {TASK_MAPS}.')

  @classmethod
  def paper(cls) -> 'FennecConfig':
    """The paper-faithful transfer space (`PAPER_SPACE`), for comparison."""
    return cls(space=space_lib.SpaceConfig(**PAPER_SPACE))

  def to_json(self) -> dict[str, Any]:
    """The configuration as JSON-serializable data (checkpoint meta)."""
    return {'space': dataclasses.asdict(self.space),
            'task_map': self.task_map,
            'ridge_grid': list(self.ridge_grid),
            'neighbor_grid': [list(g) for g in self.neighbor_grid],
            'prior_shrinkage': self.prior_shrinkage, 'kshot': self.kshot}

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> 'FennecConfig':
    """Inverse of `to_json`."""
    return cls(space=space_lib.SpaceConfig(**data['space']),
               task_map=data['task_map'],
               ridge_grid=tuple(data['ridge_grid']),
               neighbor_grid=tuple(
                   (int(k), float(a)) for k, a in data['neighbor_grid']),
               prior_shrinkage=data['prior_shrinkage'],
               kshot=data.get('kshot', True))


class Recommendation(NamedTuple):
  """Ranked models for B tasks.

  Attributes:
    model_ids: [B][top] model ids, best first.
    indices: [B, top] their rows in the repository.
    predicted: [B, top] predicted scores (the history's score units).
    std: [B, top] predictive standard deviations.
    all_predicted: [B, M] predicted score of every model.
    all_std: [B, M] their standard deviations.
    vectors: [B, d] the tasks' posterior mean weight vectors.
    confidence: with task embeddings, per task its `TaskConfidence`; a task
      not `in_distribution` was ranked by the population prior (and its
      scores, if any). None without embeddings.
  """
  model_ids: list[list[str]]
  indices: np.ndarray
  predicted: np.ndarray
  std: np.ndarray
  all_predicted: np.ndarray
  all_std: np.ndarray
  vectors: np.ndarray
  confidence: list[task_maps_lib.TaskConfidence] | None = None


class Fennec:
  """The recommender: transfer space + optional embedding maps.

  Attributes:
    config: the `FennecConfig`.
    space: the fitted `space.TransferSpace` (None until fit/load).
    model_ids, task_ids: the history's ids, in the space's order.
    task_map: the fitted `task_maps.TaskMap` (None without task embeddings).
    model_ridge: the model-embedding ridge map (`task_maps.fit_ridge`
      params) to [U_m, model_bias_m], or None.
    model_cov: its leave-one-out error covariance, or None.
    cold: [M] bool, models placed by the model map (`add_models`).
    reference_scores: the history's observed scores, or None: new scores'
      unit and range are checked against them (`read_scores_csv`).

  Example:
    fennec = Fennec().fit(history, task_embeddings=embeddings)
    rec = fennec.recommend(task_embeddings=new_embeddings, top=5)
    fennec.save('/abs/path/ckpt'); Fennec.load('/abs/path/ckpt')
  """

  def __init__(self, config: FennecConfig = FennecConfig()):
    config.space.validate()
    self.config = config
    self.space: space_lib.TransferSpace | None = None
    self.model_ids: tuple[str, ...] = ()
    self.task_ids: tuple[str, ...] = ()
    self.task_map: task_maps_lib.TaskMap | None = None
    self.model_ridge: dict[str, np.ndarray] | None = None
    self.model_cov: np.ndarray | None = None
    self.cold = np.zeros(0, bool)
    self.reference_scores: np.ndarray | None = None
    self.kshot: kshot_lazy.LazyFoldIn | None = None  # With a history.

  @classmethod
  def from_parts(cls, space: space_lib.TransferSpace,
                 model_ids: Sequence[str], task_ids: Sequence[str],
                 task_map: task_maps_lib.TaskMap | None = None,
                 config: FennecConfig | None = None) -> 'Fennec':
    """A fitted Fennec from its parts (loading, benchmarks, custom fits).

    Args:
      space: the fitted transfer space.
      model_ids: its models' ids.
      task_ids: its tasks' ids.
      task_map: an optional fitted task map.
      config: the configuration (default: the space's, with the map's name).

    Returns:
      The Fennec (no model map; no cold models).

    Raises:
      ValueError: if the ids do not match the space's shape.
    """
    if len(model_ids) != space.num_models or len(task_ids) != space.num_tasks:
      raise ValueError(f'{len(model_ids)} model ids / {len(task_ids)} task '
                       f'ids for a space of {space.num_models} models x '
                       f'{space.num_tasks} tasks.')
    if config is None:
      config = FennecConfig(space=space.config, **(
          {} if task_map is None else {'task_map': task_map.name}))
    out = cls(config)
    out.space = space
    out.model_ids = tuple(model_ids)
    out.task_ids = tuple(task_ids)
    out.task_map = task_map
    out.cold = np.zeros(len(out.model_ids), bool)
    out._cache()  # pylint: disable=protected-access
    return out

  # -- fitting -----------------------------------------------------------------

  def fit(self, history: Any,
          task_embeddings: Mapping[str, Any] | np.ndarray | None = None,
          model_embeddings: Mapping[str, Any] | np.ndarray | None = None
          ) -> 'Fennec':
    """Fits the transfer space (and the embedding maps) on a history.

    Args:
      history: a `fennec_jax.History` (scores [M, T] + mask).
      task_embeddings: optional embeddings of the history's tasks, either a
        `{task_id: [D] or [n, D]}` mapping (tasks without one are left out
        of the map, counted in a log line) or a `[T, D]` / `[T, n, D]` array
        in task order. An `[n, D]` entry is a set of image embeddings (the
        proxy features of the task's probe images): the 'neighbors' map
        uses each image, the 'ridge' map their mean direction (the mean of
        the unit-norm rows). New tasks must be described the same way.
      model_embeddings: optional embeddings of the history's models (e.g.
        archi2vec graph embeddings and/or metadata features), `{model_id:
        [E]}` or `[M, E]`; a ridge map from them to the models' space
        features lets `add_models` place unseen models (cold start).

    Returns:
      self.

    Raises:
      ValueError: bad embeddings (unknown task ids, wrong shape, non-finite)
        or anything `space.fit` rejects.
    """
    self.space = space_lib.fit(history.scores, history.mask,
                               self.config.space)
    self.model_ids = tuple(history.model_ids)
    self.task_ids = tuple(history.task_ids)
    self.task_map = None
    self.model_ridge = self.model_cov = None
    self.cold = np.zeros(len(self.model_ids), bool)
    self.reference_scores = np.asarray(history.scores, float)[history.mask]
    self.kshot = kshot_lazy.LazyFoldIn(
        history.scores, history.mask, meta=space_lib.kshot_gp.metadata_factor(
            history.model_metadata, len(self.model_ids), history.name))
    if model_embeddings is not None:
      self._fit_model_map(model_embeddings)
    if task_embeddings is not None:
      rows, sets = task_maps_lib.align_sets(task_embeddings, self.task_ids)
      # A task with fewer than 3 observed scores has no usable ranking or
      # scale (one score gets scale 1 in raw units), and its weight vector
      # would blow up the map's error covariance: it stays out of the map.
      counts = np.asarray(history.mask, bool).sum(0)[rows]
      few = counts < _MIN_MAP_SCORES
      if few.any():
        logging.info('Fennec: %d task(s) with fewer than %d observed scores '
                     'left out of the task map: %s', int(few.sum()),
                     _MIN_MAP_SCORES,
                     [self.task_ids[j] for j in rows[few]][:10])
        rows, sets = rows[~few], [e for e, f in zip(sets, few) if not f]
      self.task_map = task_maps_lib.get_task_map(self.config.task_map).fit(
          self.space, history, rows, sets, self.config)
    self._cache()
    return self

  def _fit_model_map(self, model_embeddings) -> None:
    """Ridge map model embedding -> [U_m, model_bias_m] (LOO-tuned)."""
    rows, emb = task_maps_lib.align_embeddings(model_embeddings,
                                               self.model_ids, 'model')
    target = np.concatenate([
        np.asarray(self.space.model_factors, np.float64),
        np.asarray(self.space.model_bias, np.float64)[:, None]], 1)[rows]
    self.model_ridge, penalty, loo = task_maps_lib.fit_ridge(
        emb, target, self.config.ridge_grid)
    self.model_cov = task_maps_lib.shrunk_covariance(
        loo, self.config.prior_shrinkage)
    logging.info('Fennec: model embedding map on %d models (dim %d), ridge '
                 '%.3g.', len(rows), emb.shape[1], penalty)

  def add_models(self, model_ids: Sequence[str],
                 model_embeddings: Any) -> 'Fennec':
    """A Fennec whose repository also holds unseen models (cold start).

    Their space features come from the model embedding map; their
    predictive std adds the map's leave-one-out error, so a cold model is
    ranked with honest uncertainty. Under the 'neighbors' map a cold model
    has no residuals: its bias shift is 0.

    Args:
      model_ids: new, unique model ids.
      model_embeddings: `[N, E]` embeddings, same kind as in `fit`.

    Returns:
      A new Fennec (this one is unchanged).

    Raises:
      ValueError: no model map, repeated/existing ids, bad shapes.
    """
    self._check_fitted()
    if self.model_ridge is None:
      raise ValueError('this Fennec was fit without model_embeddings; fit '
                       'with model_embeddings=... to add unseen models.')
    model_ids = tuple(model_ids)
    clash = sorted(set(model_ids) & set(self.model_ids))
    if clash or len(set(model_ids)) != len(model_ids):
      raise ValueError(f'new model ids must be unique and not in the '
                       f'repository: {clash or model_ids}')
    emb = np.asarray(model_embeddings, np.float64)
    dim = self.model_ridge['x_mean'].shape[0]
    if emb.shape != (len(model_ids), dim) or not np.isfinite(emb).all():
      raise ValueError(f'model_embeddings must be finite [{len(model_ids)}, '
                       f'{dim}], got shape {emb.shape}.')
    pred = task_maps_lib.ridge_predict(self.model_ridge, emb)
    k = self.space.model_factors.shape[1]
    space = self.space.replace(
        model_factors=jnp.concatenate([self.space.model_factors,
                                       jnp.asarray(pred[:, :k], jnp.float32)]),
        model_bias=jnp.concatenate([self.space.model_bias,
                                    jnp.asarray(pred[:, k], jnp.float32)]))
    out = Fennec.from_parts(space, self.model_ids + model_ids, self.task_ids,
                            self.task_map, self.config)
    out.model_ridge, out.model_cov = self.model_ridge, self.model_cov
    out.reference_scores = self.reference_scores
    out.cold = np.concatenate([self.cold, np.ones(len(model_ids), bool)])
    out._cache()  # pylint: disable=protected-access
    return out

  # -- recommending ------------------------------------------------------------

  def _check_fitted(self):
    if self.space is None:
      raise ValueError('Fennec is not fitted: call fit() or load() first.')

  def _observed_sparse(self, observed, num_tasks):
    """(idx, scores, valid) [B, K] (`kshot_lazy.sparse_observed`)."""
    return kshot_lazy.sparse_observed(observed, self.model_ids, num_tasks)

  def _kshot_rows(self, task_embeddings, observed):
    """(rows, pred, std) of the K-shot fold-in where it applies, or None."""
    if (task_embeddings is not None or observed is None or self.kshot is None
        or not self.config.kshot or self.cold.any()):
      return None
    return self.kshot.predict(self.space,
                              *self._observed_sparse(observed, None))

  def posterior(self, task_embeddings: Any = None, observed: Any = None
                ) -> tuple[jax.Array, jax.Array]:
    """Posterior of B new tasks' weight vectors.

    Args:
      task_embeddings: optional embeddings of B new tasks (needs a fit with
        embeddings): a [B, D] array (one embedding per task), a [B, n, D]
        array or a list of B [n_b, D] sets (image embeddings).
      observed: optional observed scores, a list of B `{model_id: score}`
        dicts or a [B, M] array with NaN where unobserved.

    Returns:
      (w [B, d] posterior means, cov [B, d, d] covariances). With the
      'neighbors' map each task also shifts the models' bias feature by the
      affinity-weighted residuals, so scores are not phi w alone (use
      `predict`).

    Raises:
      ValueError: neither input given, embeddings without an embedding map
        or of the wrong shape, unknown model ids, non-finite scores.
    """
    w, cov, _, _, num_tasks = self._posterior(task_embeddings, observed)
    return w[:num_tasks], cov[:num_tasks]

  def _posterior(self, task_embeddings: Any, observed: Any
                 ) -> tuple[jax.Array, jax.Array, jax.Array | None,
                            jax.Array, int]:
    """(w, cov, shift [., M] or None, noise variance, B), see `posterior`.

    The arrays have `posterior.batch_bucket(B)` rows (padding rows: the
    prior with no scores), so batches of similar size share compilations.
    """
    self._check_fitted()
    if task_embeddings is None and observed is None:
      raise ValueError('a new task needs images (task_embeddings) or observed '
                       'scores; give at least one. (For the population prior '
                       'pass observed=[{}] * num_tasks.)')
    num_tasks = None
    shift = None
    if task_embeddings is not None:
      if self.task_map is None:
        raise ValueError('this Fennec was fit without task embeddings; fit '
                         'with task_embeddings=... to use them.')
      sets = task_maps_lib.new_task_sets(task_embeddings)
      dim = self.task_map.input_dim
      if sets[0].shape[-1] != dim:
        raise ValueError(f'task_embeddings have width {sets[0].shape[-1]}; '
                         f'this Fennec was fit on width {dim} (give '
                         'embeddings from the same proxy).')
      num_tasks = len(sets)
      mean, shift = self.task_map.prior(sets)
      chol = self._embedding_chol
      noise_var = self.space.noise_var
      if self.task_map.noise_var is not None:
        noise_var = jnp.asarray(self.task_map.noise_var, jnp.float32)
    if observed is not None:
      idx, scores, valid = self._observed_sparse(observed, num_tasks)
      num_tasks = idx.shape[0]
    else:
      idx = np.zeros((num_tasks, 1), np.int32)
      scores = np.zeros((num_tasks, 1), np.float32)
      valid = np.zeros((num_tasks, 1), bool)
    if task_embeddings is None:
      mean = np.asarray(self.space.prior_mean, np.float64)
      chol = self._prior_chol
      noise_var = self.space.noise_var
    size = posterior_lib.batch_bucket(num_tasks)

    def pad(a, dtype):
      a = np.asarray(a, dtype)
      return jnp.asarray(np.pad(a, [(0, size - num_tasks)]
                                + [(0, 0)] * (a.ndim - 1)))

    mean = np.broadcast_to(mean, (num_tasks, self.space.dim))
    if shift is not None:
      # Models added after the map was fit (cold start) have no residuals.
      cold = len(self.model_ids) - shift.shape[1]
      shift = pad(np.pad(shift, ((0, 0), (0, cold))), np.float32)
    w, cov = posterior_lib.posterior(
        self._phi, chol, noise_var, pad(mean, np.float32),
        pad(idx, np.int32), pad(scores, np.float32), pad(valid, bool), shift)
    return w, cov, shift, noise_var, num_tasks

  def predict(self, task_embeddings: Any = None, observed: Any = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted scores of every model for B new tasks.

    Args:
      task_embeddings: see `posterior`.
      observed: see `posterior`.

    Returns:
      (predicted [B, M], std [B, M], vectors [B, d]).
    """
    w, cov, shift, noise_var, num_tasks = self._posterior(task_embeddings,
                                                          observed)
    pred, std = (np.asarray(a)[:num_tasks] for a in posterior_lib.predict_all(
        self._phi, w, cov, noise_var, self.space.link, self._cold,
        self._sigma_phi, shift))
    kshot = self._kshot_rows(task_embeddings, observed)
    if kshot is not None:
      pred, std = np.array(pred), np.array(std)
      pred[kshot[0]], std[kshot[0]] = kshot[1:]
    return pred, std, np.asarray(w)[:num_tasks]

  def confidence(self, task_embeddings: Any
                 ) -> list[task_maps_lib.TaskConfidence]:
    """Per new task, whether the task map can place it (`TaskConfidence`)."""
    if self.task_map is None:
      raise ValueError('this Fennec has no task map (fit with embeddings).')
    return self.task_map.confidence(
        task_maps_lib.new_task_sets(task_embeddings))

  def recommend(self, task_embeddings: Any = None, observed: Any = None,
                top: int = 5, full: bool = True, fallback: bool = True
                ) -> Recommendation:
    """Ranks every model for B new tasks (see `posterior` for the inputs).

    Args:
      task_embeddings: optional [B, D] embeddings.
      observed: optional observed scores (B dicts or a [B, M] array).
      top: how many models to return per task.
      full: also return every model's prediction and std (`all_*`, [B, M]);
        False skips them (latency- and memory-bound uses).
      fallback: rank a task the map cannot place (`confidence`) by the
        population prior instead (False: by the map regardless).

    Returns:
      A `Recommendation`, best model first (`all_*` are empty [B, 0] arrays
      unless `full`).

    Raises:
      ValueError: as `posterior`, or `top` outside [1, M].
    """
    self._check_fitted()
    if not 1 <= top <= len(self.model_ids):
      raise ValueError(f'top={top} must be in [1, {len(self.model_ids)}].')
    if task_embeddings is None or self.task_map is None:
      return self._rank(task_embeddings, observed, top, full)
    rec = self._rank(task_embeddings, observed, top, full)  # Checks inputs.
    confidence = self.confidence(task_embeddings)
    placed = np.asarray([c.in_distribution for c in confidence])
    if fallback and not placed.all():
      prior = self._rank(None, [{}] * len(placed) if observed is None
                         else observed, top, full)
      rec = Recommendation(*[
          [a if p else b for a, b, p in zip(x, y, placed)]
          if isinstance(x, list) else np.where(
              placed.reshape((-1,) + (1,) * (x.ndim - 1)), x, y)
          for x, y in zip(rec[:-1], prior[:-1])])
    return rec._replace(confidence=confidence)

  def _rank(self, task_embeddings: Any, observed: Any, top: int,
            full: bool) -> Recommendation:
    """`recommend` without the confidence check."""
    w, cov, shift, noise_var, num_tasks = self._posterior(task_embeddings,
                                                          observed)
    args = (self._phi, w, cov, noise_var, self.space.link, self._cold,
            self._sigma_phi, shift)
    values, std, idx = (np.array(a)[:num_tasks]
                        for a in posterior_lib.top_k(*args, k=top))
    if full:
      all_pred, all_std = (np.array(a)[:num_tasks]
                           for a in posterior_lib.predict_all(*args))
    else:
      all_pred = all_std = np.zeros((num_tasks, 0), np.float32)
    kshot = self._kshot_rows(task_embeddings, observed)
    if kshot is not None and len(kshot[0]):  # Ranked by the K-shot fold-in.
      rows, k_pred, k_std = kshot
      top_idx = np.argsort(-k_pred, axis=1, kind='stable')[:, :top]
      idx[rows] = top_idx
      values[rows], std[rows] = (np.take_along_axis(a, top_idx, 1)
                                 for a in (k_pred, k_std))
      if full:
        all_pred[rows], all_std[rows] = k_pred, k_std
    return Recommendation(
        model_ids=[[self.model_ids[i] for i in row] for row in idx],
        indices=idx, predicted=values, std=std, all_predicted=all_pred,
        all_std=all_std, vectors=np.asarray(w)[:num_tasks])

  def _cache(self) -> None:
    """Device-side constants reused by every call (after fit/load)."""
    self._phi = self.space.model_features()
    self._index = {k: i for i, k in enumerate(self.model_ids)}
    self._prior_chol = jnp.asarray(
        posterior_lib.jittered_cholesky(self.space.prior_cov), jnp.float32)
    self._embedding_chol = (
        None if self.task_map is None else jnp.asarray(
            posterior_lib.jittered_cholesky(self.task_map.covariance),
            jnp.float32))
    # Cold-start models: phi = [u, 1, b] with (u, b) ~ N(map(e), model_cov).
    d = self.space.dim
    sigma = np.zeros((d, d))
    if self.model_cov is not None:
      keep = [i for i in range(d) if i != d - 2]  # The constant-1 column.
      sigma[np.ix_(keep, keep)] = self.model_cov
    self._sigma_phi = jnp.asarray(sigma, jnp.float32)
    self._cold = jnp.asarray(self.cold, jnp.float32)

  # -- persistence -------------------------------------------------------------

  def save(self, path: str) -> None:
    """Writes a `fennec_jax.checkpoint` of kind 'Fennec'.

    Args:
      path: a directory that must not exist yet (made absolute).

    Raises:
      ValueError: if not fitted or `path` exists.
    """
    self._check_fitted()
    space = self.space.to_dict()
    del space['config_json']  # The configuration is in the meta.
    arrays = {'space': space, 'cold': self.cold.astype(np.int8)}
    if self.reference_scores is not None:
      arrays['reference_scores'] = self.reference_scores
    if self.kshot is not None:  # The K-shot fold-in's history, calibration
      arrays['history'] = self.kshot.to_arrays()  # (`kshot_lazy`).
    task_map = None
    if self.task_map is not None:
      arrays['task_map'] = self.task_map.to_arrays()
      task_map = {'name': self.task_map.name, **self.task_map.meta()}
    if self.model_ridge is not None:
      arrays['model_map'] = dict(self.model_ridge, covariance=self.model_cov)
    checkpoint.save(path, _CHECKPOINT_KIND, arrays, {
        'config': self.config.to_json(), 'model_ids': list(self.model_ids),
        'task_ids': list(self.task_ids), 'task_map': task_map})

  @classmethod
  def load(cls, path: str, config: FennecConfig | None = None) -> 'Fennec':
    """Reads a checkpoint written by `save`.

    Args:
      path: the checkpoint directory.
      config: the configuration the caller expects; a checkpoint made with
        another one is an error (None accepts the saved one).

    Returns:
      The fitted Fennec.

    Raises:
      checkpoint.CheckpointError: a missing, foreign or damaged checkpoint.
      ValueError: a configuration mismatch, naming the differing fields.
    """
    arrays, meta = checkpoint.load(path, _CHECKPOINT_KIND)
    saved = FennecConfig.from_json(meta['config'])
    if config is not None and config != saved:
      diff = checkpoint.config_diff(config.to_json(), saved.to_json())
      raise ValueError(f'{os.path.abspath(path)} was made with another '
                       f'configuration; differences (expected vs saved): '
                       f'{diff}')
    space = dict(arrays['space'], config_json=np.asarray(
        json.dumps(meta['config']['space'])))
    task_map = None
    if meta['task_map'] is not None:
      map_meta = dict(meta['task_map'])
      task_map = task_maps_lib.get_task_map(map_meta.pop('name')).from_arrays(
          arrays['task_map'], map_meta)
    out = cls.from_parts(space_lib.TransferSpace.from_dict(space),
                         meta['model_ids'], meta['task_ids'], task_map, saved)
    if 'model_map' in arrays:
      model_map = dict(arrays['model_map'])
      out.model_cov = np.asarray(model_map.pop('covariance'), np.float64)
      out.model_ridge = {k: np.asarray(v, np.float64)
                         for k, v in model_map.items()}
    out.cold = np.asarray(arrays['cold']).astype(bool)
    out.reference_scores = arrays.get('reference_scores')
    if 'history' in arrays:  # The K-shot fold-in, its calibrated Ks kept.
      out.kshot = kshot_lazy.LazyFoldIn.from_arrays(arrays['history'])
    elif saved.kshot:
      logging.info('%s has no history (older checkpoint): observed scores '
                   'use the plain fold-in.', path)
    out._cache()  # pylint: disable=protected-access
    return out


def read_scores_csv(path: str, reference: np.ndarray | None = None, *,
                    convert_units: bool = False, allow_outliers: bool = False
                    ) -> dict[str, dict[str, float]]:
  """Observed scores of new tasks from a CSV, for `recommend(observed=...)`.

  Columns `model,score` (one task, named after the file) or `model,task,score`
  (several), others ignored; a BOM is skipped, a `;` or tab delimiter found.

  Args:
    path: the CSV file.
    reference: the history's observed scores; when given, the scores are
      checked against its unit and plausible range (`history.check_new_scores`).
    convert_units: convert fraction <-> percent scores to the reference's unit.
    allow_outliers: keep scores outside the reference's plausible range.

  Returns:
    `{task: {model_id: score}}` in file order (in the reference's unit).

  Raises:
    ValueError: naming the file, line and column of a missing column, an
      empty id, a non-numeric or non-finite score, a repeated model, or (with
      `reference`) a score in the other unit or outside the plausible range.
  """
  out: dict[str, dict[str, float]] = {}
  located = []
  default_task = os.path.splitext(os.path.basename(path))[0]
  with history_lib.open_csv(path) as f:
    reader = csv.DictReader(f, delimiter=history_lib.sniff_delimiter(f))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ('model', 'score') if c not in header]
    if missing:
      raise ValueError(f'{path}: line 1 (header) lacks column(s) {missing}; '
                       f'found {header}. Expected model,score or '
                       'model,task,score, separated by commas.')
    reader.fieldnames = header
    for row in reader:
      line = reader.line_num
      model = (row.get('model') or '').strip()
      task = (row.get('task') or default_task).strip() or default_task
      raw = (row.get('score') or '').strip()
      if not model:
        raise ValueError(f"{path}: line {line}, column 'model' is empty.")
      try:
        score = float(raw)
      except ValueError:
        raise ValueError(f"{path}: line {line}, column 'score': {raw!r} is "
                         'not a number.') from None
      if not np.isfinite(score):
        raise ValueError(f"{path}: line {line}, column 'score': {raw!r} is "
                         'not finite.')
      scores = out.setdefault(task, {})
      if model in scores:
        raise ValueError(f'{path}: line {line}: model {model!r} is repeated '
                         f'for task {task!r}.')
      scores[model] = score
      located.append((score, f'{path}: line {line}'))
  if not out:
    raise ValueError(f'{path}: no rows.')
  if reference is not None:
    factor = history_lib.check_new_scores(
        located, reference, convert_units=convert_units,
        allow_outliers=allow_outliers)
    out = {t: {m: v * factor for m, v in s.items()} for t, s in out.items()}
  return out
