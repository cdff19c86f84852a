"""Task maps: a new task's prior weight vector from its image embeddings.

A task map is fit on the historical tasks that have embeddings and turns B
new tasks' embeddings into the prior of their weight vectors w (raw score of
model m = phi[m] . w, `fennec_jax.space`): a mean [B, d], an optional
per-model bias shift [B, M] (`fennec_jax.posterior`), one covariance [d, d]
(the map's leave-one-task-out error, so the prior is as wide as the map is
wrong on held-out tasks) and optionally its own noise variance for the
K-shot fold-in.

* 'neighbors' (`NeighborsMap`, the default): the new task's images vote for
  the historical tasks whose images are nearest (`fennec_jax.neighbors`);
  with the affinities a, the prior mean is the affinity-weighted mean of the
  historical tasks' normalized weight vectors, and each model also gets the
  weighted mean of the historical tasks' residuals (observed minus fitted
  normalized score) as a bias shift, so at K = 0 the prediction is the
  weighted mean of the completed historical score columns, not only of their
  low-rank part;
* 'ridge' (`RidgeMap`): a ridge regression from the task's mean embedding
  direction to w.

Each map also says how far it can be trusted for a new task
(`TaskMap.confidence`, a `TaskConfidence` per task): too few images, or
images unlike every historical task's, make the recommender fall back to the
population prior and say so (`recommender.Fennec.recommend`).

A new map is one `TaskMap` subclass registered in `_REGISTRY`. The module
also checks and aligns the embeddings the recommender is given
(`align_sets`, `new_task_sets`, `align_embeddings`) and holds the ridge
regression (`fit_ridge`) that the 'ridge' map and the recommender's
model-embedding map share.
"""

import abc
from collections.abc import Mapping, Sequence
import hashlib
import math
from typing import Any, ClassVar, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from fennec_jax import neighbors as neighbors_lib
from fennec_jax import space as space_lib
from fennec_jax.proxy import embed


# Fewest images of a new task for the map to be used: below it the distance
# check rests on too few images (and a history whose tasks have fewer
# lowers it to theirs). On the offline benchmark the votes' leave-one-task-
# out error is flat from about 5 images (README, "Bad input").
MIN_IMAGES = 5


class TaskConfidence(NamedTuple):
  """Whether a task map can place a new task among the historical ones.

  Attributes:
    in_distribution: False when the recommender should fall back to the
      population prior (too few images, or images unlike the history's).
    reason: why not ('' when in distribution and checked; says so when
      the map has nothing to check against).
    n_images: the task's embeddings (1 for a single [D] vector).
    min_images: the fewest the check accepts.
    distance: the median cosine distance of its images to the nearest
      historical image (`neighbors.set_distances`); NaN when not checked.
    threshold: the largest such distance of a historical task to the
      others' images (leave-one-task-out): a new task farther than every
      historical task is out of distribution. NaN when not checked.
    spread: the median pairwise cosine distance of its images
      (`neighbors.set_spread`); NaN for fewer than 2 or not checked.
    spread_threshold: the least spread of a historical task; a new task
      whose images are more alike (e.g. noise, one repeated image) gives
      the votes nothing to go on.
  """
  in_distribution: bool
  reason: str
  n_images: int
  min_images: int
  distance: float = math.nan
  threshold: float = math.nan
  spread: float = math.nan
  spread_threshold: float = math.nan


def _count_check(entry: np.ndarray, min_images: int) -> TaskConfidence:
  """The image-count part of a confidence (distance not checked)."""
  n = 1 if entry.ndim == 1 else int(entry.shape[0])
  if entry.ndim == 2 and n < min_images:
    return TaskConfidence(False, f'{n} image(s), fewer than the {min_images} '
                          'a new task needs', n, min_images)
  return TaskConfidence(True, '', n, min_images)


def _mapped_rows(embeddings: Mapping[str, Any], ids: Sequence[str],
                 kind: str) -> tuple[list[int], list[np.ndarray]]:
  """(rows, float64 entries) of the ids that `embeddings` maps.

  Ids without an embedding are left out (counted in a log line); unknown
  ids are an error.
  """
  unknown = sorted(set(embeddings) - set(ids))
  if unknown:
    raise ValueError(f'{kind}_embeddings name {kind}s not in the history: '
                     f'{unknown[:10]}; {kind}s: {list(ids)[:20]}')
  rows = [j for j, t in enumerate(ids) if t in embeddings]
  if len(rows) < len(ids):
    logging.info('Fennec: %d of %d %ss have no embedding; the map is fit '
                 'on the others.', len(ids) - len(rows), len(ids), kind)
  if not rows:
    raise ValueError(f'{kind}_embeddings is empty.')
  return rows, [np.asarray(embeddings[ids[j]], np.float64) for j in rows]


def align_embeddings(embeddings: Any, ids: Sequence[str], kind: str
                     ) -> tuple[np.ndarray, np.ndarray]:
  """One embedding vector per id, for a ridge map over the history's ids.

  Args:
    embeddings: `{id: [D]}` (ids without one are left out, counted in a log
      line) or an `[len(ids), D]` array in id order.
    ids: the history's ids.
    kind: 'task' or 'model' (names the input in errors).

  Returns:
    (rows [n] into `ids`, [n, D] float64 embeddings).

  Raises:
    ValueError: unknown ids, a wrong shape or non-finite values.
  """
  if isinstance(embeddings, Mapping):
    rows, entries = _mapped_rows(embeddings, ids, kind)
    emb = np.stack(entries)
  else:
    emb = np.asarray(embeddings, np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(ids):
      raise ValueError(f'{kind}_embeddings must be [{len(ids)}, D] in '
                       f'{kind} order, got shape {emb.shape}.')
    rows = list(range(len(ids)))
  if emb.ndim != 2 or not np.isfinite(emb).all():
    raise ValueError(f'{kind}_embeddings must be finite vectors of one '
                     f'length; got an array of shape {emb.shape}.')
  return np.asarray(rows), emb


def _check_entries(entries: Sequence[np.ndarray], names: Sequence[str]
                   ) -> None:
  """Each entry a finite [D] vector or non-empty [n, D] set, one width."""
  for name, e in zip(names, entries):
    if e.ndim not in (1, 2) or e.size == 0 or not np.isfinite(e).all():
      finite = '' if np.isfinite(e).all() else ' with non-finite values'
      raise ValueError(f'task_embeddings[{name}] must be a finite [D] vector '
                       f'or [n, D] set, got shape {e.shape}{finite}.')
  widths = {e.shape[-1] for e in entries}
  if len(widths) > 1:
    raise ValueError(f'task_embeddings have different widths '
                     f'{sorted(widths)}.')


def align_sets(embeddings: Any, ids: Sequence[str]
               ) -> tuple[np.ndarray, list[np.ndarray]]:
  """The history's tasks' embeddings (vectors or image sets), checked.

  Args:
    embeddings: `{task_id: [D] or [n, D]}` (tasks without an entry are left
      out, counted in a log line) or a `[T, D]` / `[T, n, D]` array in task
      order.
    ids: the history's task ids.

  Returns:
    (rows [n] into `ids`, per row its float64 entry as given).

  Raises:
    ValueError: unknown ids, a wrong shape, non-finite values or entries of
      different widths.
  """
  if isinstance(embeddings, Mapping):
    rows, entries = _mapped_rows(embeddings, ids, 'task')
  else:
    arr = np.asarray(embeddings, np.float64)
    if arr.ndim not in (2, 3) or arr.shape[0] != len(ids):
      raise ValueError(f'task_embeddings must be [{len(ids)}, D] or '
                       f'[{len(ids)}, n, D] in task order, got shape '
                       f'{arr.shape}.')
    rows = list(range(len(ids)))
    entries = list(arr)
  _check_entries(entries, [repr(ids[j]) for j in rows])
  return np.asarray(rows), entries


def new_task_sets(task_embeddings: Any) -> list[np.ndarray]:
  """B new tasks' embeddings as a list of float64 [D] vectors or [n, D] sets.

  Args:
    task_embeddings: a [B, D] or [B, n, D] array, or a list of B entries.

  Returns:
    The B entries, checked finite, non-empty and of one width.

  Raises:
    ValueError: naming the bad entry.
  """
  if isinstance(task_embeddings, np.ndarray | jax.Array):
    arr = np.asarray(task_embeddings, np.float64)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0:
      raise ValueError(f'task_embeddings must be [B, D], [B, n, D] or a list '
                       f'of B [n_b, D] sets, got shape {arr.shape}.')
    entries = list(arr)
  else:
    entries = [np.asarray(e, np.float64) for e in task_embeddings]
    if not entries:
      raise ValueError('task_embeddings is empty.')
  _check_entries(entries, [str(b) for b in range(len(entries))])
  return entries



def fit_ridge(x: np.ndarray, y: np.ndarray, grid: Sequence[float]
              ) -> tuple[dict[str, np.ndarray], float, np.ndarray]:
  """Ridge regression y ~ x with the penalty chosen by exact LOO error.

  Inputs are standardized with the training mean and std; the intercept is
  the mean of y (not penalized). Solved in the dual (T x T), as there are
  few tasks and many embedding dimensions.

  Args:
    x: [T, D] embeddings.
    y: [T, d] targets (task weight vectors).
    grid: candidate penalties.

  Returns:
    (params {'x_mean', 'x_scale', 'y_mean', 'coef' [D, d]}, the chosen
    penalty, [T, d] leave-one-out residuals at that penalty).

  Raises:
    ValueError: on fewer than 3 tasks or an empty grid.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  t = x.shape[0]
  if t < 3:
    raise ValueError(f'need embeddings of at least 3 historical tasks to fit '
                     f'the embedding map, got {t}.')
  if not grid:
    raise ValueError('ridge_grid is empty.')
  x_mean = x.mean(0)
  x_scale = x.std(0)
  x_scale = np.where(x_scale > 0, x_scale, 1.0)
  xs = (x - x_mean) / x_scale
  y_mean = y.mean(0)
  yc = y - y_mean
  kernel = xs @ xs.T
  best = None
  for lam in grid:
    # Exact hat matrix: the centered ridge plus the unpenalized intercept
    # (leverage 1/T; the centered kernel annihilates the constant).
    hat = kernel @ np.linalg.inv(kernel + lam * np.eye(t))
    resid = yc - hat @ yc
    lev = np.clip(np.diag(hat) + 1.0 / t, 0.0, 1.0 - 1e-9)
    loo = resid / (1.0 - lev)[:, None]
    err = float(np.mean(loo ** 2 / np.maximum(y.var(0), 1e-12)))
    if best is None or err < best[0]:
      best = (err, lam, loo)
  _, lam, loo = best
  coef = xs.T @ np.linalg.solve(kernel + lam * np.eye(t), yc)
  params = {'x_mean': x_mean, 'x_scale': x_scale, 'y_mean': y_mean,
            'coef': coef}
  return params, float(lam), loo


def ridge_predict(params: Mapping[str, np.ndarray], x: np.ndarray
                  ) -> np.ndarray:
  """[n, d] predictions of a `fit_ridge` map for [n, D] inputs (float64)."""
  xs = (np.asarray(x, np.float64) - params['x_mean']) / params['x_scale']
  return params['y_mean'] + xs @ params['coef']


def shrunk_covariance(residuals: np.ndarray, shrinkage: float) -> np.ndarray:
  """(1 - a) C + a diag(C) of the [n, d] residuals' covariance C."""
  cov = np.cov(residuals, rowvar=False, ddof=1)
  return (1 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov))


def mean_direction(e: np.ndarray) -> np.ndarray:
  """The ridge map's input: a [D] vector as is; a set's mean unit row."""
  return e if e.ndim == 1 else embed.l2_normalize(e).mean(0)


class TaskMap(abc.ABC):
  """A fitted map from task embeddings to a prior over weight vectors.

  Attributes:
    name: the registry name (`FennecConfig.task_map`).
    covariance: [d, d] prior covariance of a new task's w given its
      embeddings (the shrunk covariance of the leave-one-task-out errors).
    noise_var: the K-shot fold-in's noise variance with this prior, or None
      for the space's.
  """
  name: ClassVar[str]
  covariance: np.ndarray
  noise_var: float | None = None

  @classmethod
  @abc.abstractmethod
  def fit(cls, space: Any, history: Any, rows: np.ndarray,
          sets: Sequence[np.ndarray], config: Any) -> 'TaskMap':
    """Fits the map on the history's tasks `rows`.

    Args:
      space: the fitted `space.TransferSpace`.
      history: the `History` it was fit on.
      rows: [T'] the tasks (history columns) that have embeddings.
      sets: per row, its embeddings: a [D] vector or an [n, D] set.
      config: the recommender's `FennecConfig` (a map reads its own
        fields: `ridge_grid`, `neighbor_grid`, `prior_shrinkage`).

    Returns:
      The fitted map.
    """

  @property
  @abc.abstractmethod
  def input_dim(self) -> int:
    """D, the embedding width the map was fit on."""

  @abc.abstractmethod
  def prior(self, sets: Sequence[np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """The prior of B new tasks given by their embeddings.

    Args:
      sets: per task a [D] vector or an [n, D] set (`new_task_sets`).

    Returns:
      (mean [B, d] raw weight vectors, per-model bias shift [B, M] or None).
      The shift covers the M models the map was fit with; models added
      later (cold start) have no shift.
    """

  def confidence(self, sets: Sequence[np.ndarray]) -> list[TaskConfidence]:
    """Per new task, whether the map can place it (see `TaskConfidence`).

    The base map checks only the number of images of an [n, D] set; maps
    that keep the history's images also check the distance to them.

    Args:
      sets: per task a [D] vector or an [n, D] set (`new_task_sets`).
    """
    out = []
    for e in sets:
      c = _count_check(np.asarray(e), MIN_IMAGES)
      out.append(c if not c.in_distribution else c._replace(
          reason=f'distance not checked (the {self.name!r} map keeps no '
          'historical images)'))
    return out

  @abc.abstractmethod
  def to_arrays(self) -> dict[str, np.ndarray]:
    """The map's arrays, for a checkpoint (with `meta`)."""

  @abc.abstractmethod
  def meta(self) -> dict[str, Any]:
    """The map's JSON-serializable scalars, for a checkpoint."""

  @classmethod
  @abc.abstractmethod
  def from_arrays(cls, arrays: Mapping[str, np.ndarray],
                  meta: Mapping[str, Any]) -> 'TaskMap':
    """Inverse of `to_arrays` / `meta`."""


class RidgeMap(TaskMap):
  """Ridge regression from a task's mean embedding direction to w."""
  name = 'ridge'

  def __init__(self, params: Mapping[str, np.ndarray],
               covariance: np.ndarray, penalty: float | None = None):
    """Args: `fit_ridge` params, the [d, d] prior covariance, the penalty."""
    self.params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    self.covariance = np.asarray(covariance, np.float64)
    self.penalty = penalty

  @classmethod
  def fit(cls, space, history, rows, sets, config) -> 'RidgeMap':
    del history  # The map only regresses the fitted task vectors.
    w = np.asarray(space.task_vectors(), np.float64)[rows]
    emb = np.stack([mean_direction(e) for e in sets])
    params, penalty, loo = fit_ridge(emb, w, config.ridge_grid)
    logging.info('Fennec: ridge task map on %d tasks (dim %d), ridge %.3g.',
                 len(rows), emb.shape[1], penalty)
    return cls(params, shrunk_covariance(loo, config.prior_shrinkage),
               penalty)

  @property
  def input_dim(self) -> int:
    return int(self.params['x_mean'].shape[0])

  def prior(self, sets):
    return ridge_predict(self.params,
                         np.stack([mean_direction(e) for e in sets])), None

  def to_arrays(self):
    return dict(self.params, covariance=self.covariance)

  def meta(self):
    return {'penalty': self.penalty}

  @classmethod
  def from_arrays(cls, arrays, meta) -> 'RidgeMap':
    arrays = dict(arrays)
    cov = arrays.pop('covariance')
    return cls(arrays, cov, meta['penalty'])


def _fingerprint(units: Sequence[np.ndarray]) -> bytes:
  """A digest of unit sets (shapes and values), to recognize them again."""
  digest = hashlib.blake2b(digest_size=16)
  for u in units:
    digest.update(repr(u.shape).encode())
    digest.update(np.ascontiguousarray(u).tobytes())
  return digest.digest()


def _neighbor_mean(state: Mapping[str, np.ndarray], aff: np.ndarray
                   ) -> np.ndarray:
  """[B, d] raw weight vectors of the affinity-weighted normalized tasks.

  The normalized vectors are averaged, then mapped back with the weighted
  loc and scale: raw = loc + scale * normalized, as for a fitted task.
  """
  aff = np.asarray(aff, np.float64)
  mean = (aff @ state['scale'])[:, None] * (aff @ state['w_norm'])
  mean[:, state['w_norm'].shape[1] - 2] += aff @ state['loc']  # Column 1.
  return mean


class NeighborsMap(TaskMap):
  """Affinities from image votes (`fennec_jax.neighbors`), see the module.

  Attributes:
    nmap: the fitted `neighbors.NeighborMap`.
    state: per map task (the history's tasks with embeddings, in the map's
      order) 'w_norm' [T', d] normalized weight vector, 'loc' and 'scale'
      [T']; the residuals (observed - fitted normalized score) as COO
      entries 'resid_rows' (model), 'resid_cols' (map task), 'resid_values'.
    num_models: M, the width of the bias shift.
  """
  name = 'neighbors'

  def __init__(self, nmap: neighbors_lib.NeighborMap,
               state: Mapping[str, np.ndarray], covariance: np.ndarray,
               noise_var: float, num_models: int):
    """Args: as the attributes, plus the prior covariance and noise."""
    self.nmap = nmap
    self.state = {k: np.asarray(v) for k, v in state.items()}
    self.covariance = np.asarray(covariance, np.float64)
    self.noise_var = float(noise_var)
    self.num_models = int(num_models)
    # R [T', M] as a sparse matrix and its column sums, built on first use.
    self._resid = self._resid_sum = None
    # (fingerprint of the unit sets, their distances) of the last `prior`:
    # `confidence` of the same sets reuses its search.
    self._last_distances: tuple[bytes, np.ndarray] | None = None
    self._smallest: int | None = None

  @classmethod
  def fit(cls, space, history, rows, sets, config) -> 'NeighborsMap':
    sets = neighbors_lib.unit_sets(
        sets, [f'task {history.task_ids[j]!r}' for j in rows])
    w = np.asarray(space.task_vectors(), np.float64)[rows]
    normed, _, _ = space_lib.normalize(
        history.scores, history.mask, space.config.normalization)
    mask = np.asarray(history.mask, bool)[:, rows]
    fitted = np.asarray(space.predict_normalized(), np.float64)[:, rows]
    resid = np.where(mask, normed[:, rows] - fitted, 0.0)
    nmap, loo_aff = neighbors_lib.fit(sets, fitted + resid, mask,
                                      config.neighbor_grid)
    loc = np.asarray(space.task_loc, np.float64)[rows]
    scale = np.asarray(space.task_scale, np.float64)[rows]
    w_norm = w.copy()
    w_norm[:, space.dim - 2] -= loc  # phi's constant-1 column.
    w_norm /= scale[:, None]
    r, c = np.nonzero(mask)
    state = {'w_norm': w_norm, 'loc': loc, 'scale': scale,
             'resid_rows': r.astype(np.int32),
             'resid_cols': c.astype(np.int32), 'resid_values': resid[r, c]}
    w_loo = _neighbor_mean(state, loo_aff)
    # The fold-in's noise: what the map gets wrong per score beyond what its
    # weight-vector error explains (the averaged residuals are not in w), so
    # K observed scores correct the prior instead of being fit exactly.
    phi = np.asarray(space.model_features(), np.float64)
    pred = phi @ w_loo.T + (resid @ loo_aff.T) * w_loo[:, -1][None, :]
    err = np.mean((np.asarray(history.scores, np.float64)[:, rows]
                   - pred)[mask] ** 2)
    loo = w - w_loo
    explained = np.mean(np.einsum('md,de,me->m', phi,
                                  np.cov(loo, rowvar=False, ddof=1), phi))
    noise_var = max(err - explained, float(space.noise_var))
    return cls(nmap, state, shrunk_covariance(loo, config.prior_shrinkage),
               noise_var, space.num_models)

  @property
  def input_dim(self) -> int:
    return int(self.nmap.pool.shape[1])

  def prior(self, sets):
    units = neighbors_lib.unit_sets(
        sets, [f'new task {b}' for b in range(len(sets))])
    votes, distances = neighbors_lib.votes_and_distances(self.nmap, units)
    self._last_distances = (_fingerprint(units), distances)
    votes = np.asarray(votes, np.float64)
    s = self.nmap.smoothing
    norm = 1.0 + s * self.nmap.num_tasks  # Votes sum to 1.
    return (_neighbor_mean(self.state, (votes + s) / norm),
            self._shift(votes, s, norm))

  def _shift(self, votes: np.ndarray, smoothing: float, norm: float
             ) -> np.ndarray:
    """[B, M] affinity-weighted residuals (normalized units): the bias shift.

    The task's scale multiplies the bias feature, so the residuals scale
    with it (and with its fold-in posterior). With affinities (votes + s) /
    norm, the residual sums R 1 are cached and R votes touches only the
    voted tasks' columns (sparse x sparse), so the cost does not grow with
    the history's size.
    """
    if self._resid is None:
      st = self.state
      self._resid = scipy.sparse.csr_matrix(
          (np.asarray(st['resid_values'], np.float64),
           (st['resid_cols'], st['resid_rows'])),
          shape=(self.nmap.num_tasks, self.num_models))
      self._resid_sum = np.asarray(self._resid.sum(0)).ravel()
    voted = scipy.sparse.csr_matrix(votes) @ self._resid  # [B, M]
    return (voted.toarray() + smoothing * self._resid_sum) / norm

  def confidence(self, sets):
    """See `TaskMap.confidence`: the count, distance and spread checks.

    The thresholds are the history's own extremes (`TaskConfidence`):
    measured leave-one-task-out against the others, none of its tasks is
    beyond them.
    """
    nmap = self.nmap
    if self._smallest is None:  # The fewest images of a historical task.
      owner = np.asarray(nmap.owner)
      self._smallest = int(np.bincount(owner[owner >= 0]).min())
    smallest = self._smallest
    min_images = min(MIN_IMAGES, smallest)
    counted = [_count_check(np.asarray(e), min_images) for e in sets]
    if nmap.loo_distance is None or smallest < 2:
      why = ('the map was saved without its calibration' if smallest >= 2
             else 'the history gave one embedding per task, not image sets')
      return [c if not c.in_distribution else c._replace(
          reason=f'distance not checked ({why})') for c in counted]
    units = neighbors_lib.unit_sets(
        sets, [f'new task {b}' for b in range(len(sets))])
    last = self._last_distances
    if last is not None and last[0] == _fingerprint(units):
      distance = last[1]
    else:
      distance = neighbors_lib.set_distances(nmap, units)
    threshold = float(np.max(nmap.loo_distance))
    least = float(np.nanmin(nmap.spread))
    out = []
    for c, d, u in zip(counted, distance, units):
      spread = neighbors_lib.set_spread(u)
      c = c._replace(distance=float(d), threshold=threshold, spread=spread,
                     spread_threshold=least)
      if c.in_distribution and d > threshold:
        c = c._replace(in_distribution=False, reason=(
            f'its images are farther from the history (distance {d:.4f}) '
            'than any historical task is from the others (at most '
            f'{threshold:.4f}, leave-one-task-out)'))
      elif c.in_distribution and spread < least:
        c = c._replace(in_distribution=False, reason=(
            f'its images look nearly alike to the proxy (spread {spread:.4f}'
            f', below the least of a historical task, {least:.4f})'))
      out.append(c)
    return out

  def to_arrays(self):
    calibration = {}
    if self.nmap.loo_distance is not None:
      calibration = {'loo_distance': np.asarray(self.nmap.loo_distance),
                     'spread': np.asarray(self.nmap.spread)}
    return dict(self.state, pool=np.asarray(self.nmap.pool),
                owner=np.asarray(self.nmap.owner),
                covariance=self.covariance, **calibration)

  def meta(self):
    return {'num_tasks': self.nmap.num_tasks, 'k': self.nmap.k,
            'smoothing': self.nmap.smoothing,
            'loo_error': self.nmap.loo_error, 'noise_var': self.noise_var,
            'num_models': self.num_models}

  @classmethod
  def from_arrays(cls, arrays, meta) -> 'NeighborsMap':
    state = dict(arrays)
    calibration = [state.pop(k, None) for k in ('loo_distance', 'spread')]
    nmap = neighbors_lib.NeighborMap(
        jnp.asarray(state.pop('pool'), jnp.float32),
        jnp.asarray(state.pop('owner'), jnp.int32), int(meta['num_tasks']),
        int(meta['k']), float(meta['smoothing']), float(meta['loo_error']),
        *[None if a is None else np.asarray(a, np.float64)
          for a in calibration])
    cov = state.pop('covariance')
    return cls(nmap, state, cov, meta['noise_var'], meta['num_models'])


_REGISTRY: dict[str, type[TaskMap]] = {
    NeighborsMap.name: NeighborsMap, RidgeMap.name: RidgeMap}
TASK_MAPS = tuple(_REGISTRY)


def get_task_map(name: str) -> type[TaskMap]:
  """The `TaskMap` class registered under `name`.

  Raises:
    ValueError: an unknown name, listing the valid ones.
  """
  if name not in _REGISTRY:
    raise ValueError(f'unknown task map {name!r}; valid: {TASK_MAPS}.')
  return _REGISTRY[name]
