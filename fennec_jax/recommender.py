"""Fennec: fit a transfer space on a history, recommend models for new tasks.

`Fennec.fit(history, task_embeddings=...)` fits the transfer space
(`fennec_jax.space`: raw score of model m on task t = phi[m] . w_t) and, when
task embeddings (proxy image embeddings) of the historical tasks are given,
a task map from embeddings to a new task's prior (`FennecConfig.task_map`):

* 'neighbors' (default, `fennec_jax.neighbors`): the new task's images vote
  for the historical tasks whose images are nearest; with the affinities a,
  the prior mean is the affinity-weighted mean of the historical tasks'
  normalized weight vectors, and each model also gets the weighted mean of
  the historical tasks' residuals (observed minus fitted normalized score),
  so at K = 0 the prediction is the weighted mean of the completed
  historical score columns, not only of their low-rank part;
* 'ridge': a ridge regression from the task's mean embedding to w.

A new task is then described by

* its embeddings only: w ~ N(map(e), C_e), with C_e the covariance of the
  map's leave-one-task-out residuals (so the prior is as wide as the map is
  wrong on held-out tasks);
* K observed scores only: the space's population prior, updated by the K
  scores (Bayesian linear regression, as `TransferSpace.fold_in`);
* both: the embedding prior updated by the K scores;
* neither: the population prior (documented fallback: roughly popularity).

`recommend` does this for many tasks at once: one batched posterior and one
`[B, d] @ [d, M]` matmul give every model's predicted score and its
uncertainty; the top models are returned ranked.

`save`/`load` use orbax (`ocp.StandardCheckpointer`) for the arrays plus a
JSON file with the configuration and ids; loading with another configuration
is a clear error.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import json
import os
import time
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import neighbors as neighbors_lib
from fennec_jax import space as space_lib

# The paper's transfer phase (released code): unregularized non-negative MF
# of the raw score matrix with k = 5, no biases, no normalization.
PAPER_SPACE = dict(rank=5, nonneg=True, use_bias=False, prior_precision=0.0,
                   bias_prior_precision=0.0, normalization='none')

_META_FILE = 'fennec.json'
_STATE_DIR = 'state'
_FORMAT_VERSION = 1
TASK_MAPS = ('neighbors', 'ridge')
_MIN_MAP_SCORES = 3


@dataclasses.dataclass(frozen=True)
class FennecConfig:
  """How Fennec is fit.

  Attributes:
    space: the transfer space's configuration.
    task_map: how task embeddings give a new task's prior: 'neighbors'
      (votes of its images for the nearest historical tasks,
      `fennec_jax.neighbors`) or 'ridge' (a ridge map from its mean
      embedding; see the module docstring).
    ridge_grid: candidate ridge penalties of the embedding -> task-vector
      map (standardized embeddings; also the model-embedding map of cold-
      start models); the one with the lowest leave-one-out error is used.
    neighbor_grid: candidate (k, smoothing) pairs of the 'neighbors' map,
      chosen by leave-one-task-out error.
    prior_shrinkage: the embedding prior's covariance is (1 - a) C + a
      diag(C) of the leave-one-out residual covariance C.
  """
  space: space_lib.SpaceConfig = space_lib.SpaceConfig()
  task_map: str = 'neighbors'
  ridge_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
  neighbor_grid: tuple[tuple[int, float], ...] = neighbors_lib.DEFAULT_GRID
  prior_shrinkage: float = 0.1

  def __post_init__(self):
    if self.task_map not in TASK_MAPS:
      raise ValueError(f'task_map={self.task_map!r}; valid: {TASK_MAPS}.')

  @classmethod
  def paper(cls) -> 'FennecConfig':
    """The paper-faithful transfer space (`PAPER_SPACE`), for comparison."""
    return cls(space=space_lib.SpaceConfig(**PAPER_SPACE))

  def to_json(self) -> dict[str, Any]:
    return {'space': dataclasses.asdict(self.space),
            'task_map': self.task_map,
            'ridge_grid': list(self.ridge_grid),
            'neighbor_grid': [list(g) for g in self.neighbor_grid],
            'prior_shrinkage': self.prior_shrinkage}

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> 'FennecConfig':
    # Checkpoints written before the neighbour map had only the ridge map.
    return cls(space=space_lib.SpaceConfig(**data['space']),
               task_map=data.get('task_map', 'ridge'),
               ridge_grid=tuple(data['ridge_grid']),
               neighbor_grid=tuple(
                   (int(k), float(a)) for k, a in data.get(
                       'neighbor_grid', neighbors_lib.DEFAULT_GRID)),
               prior_shrinkage=data['prior_shrinkage'])


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
  """
  model_ids: list[list[str]]
  indices: np.ndarray
  predicted: np.ndarray
  std: np.ndarray
  all_predicted: np.ndarray
  all_std: np.ndarray
  vectors: np.ndarray


@jax.jit
def _posterior(phi, chol, noise_var, mean, idx, scores, valid, shift):
  """Per-task Gaussian prior N(mean[b], chol chol^T) updated by K scores.

  Args:
    phi: [M, d] model features.
    chol: [d, d] lower Cholesky factor of the prior covariance.
    noise_var: [] noise variance of a score.
    mean: [B, d] prior means.
    idx: [B, K] observed models (any index where not valid).
    scores: [B, K] their scores.
    valid: [B, K] bool; False entries are padding.
    shift: [B, M] per-task shift of the models' bias feature (the
      neighbour map's averaged residuals), or None (no shift, a separate
      compilation): task b sees phi_b = [u, 1, model_bias + shift[b]].

  Returns:
    (w [B, d] posterior means, cov [B, d, d] posterior covariances). The
    cost is O(B K d^2): independent of the number of models.
  """
  v = valid.astype(phi.dtype)
  sel = _shifted(phi[idx], shift, idx)
  x = (sel @ chol) * v[..., None]
  resid = (scores - jnp.einsum('bkd,bd->bk', sel, mean)) * v
  gram = jnp.einsum('bki,bkj->bij', x, x)
  z, chol_a = space_lib.fold_in_posterior(
      gram, jnp.einsum('bki,bk->bi', x, resid), noise_var)
  w = mean + z @ chol.T
  # cov_w = chol A^-1 chol^T = G^T G with G = chol_a^-1 chol^T.
  g = jax.scipy.linalg.solve_triangular(
      chol_a, jnp.broadcast_to(chol.T, chol_a.shape), lower=True)
  return w, jnp.einsum('bki,bkj->bij', g, g)


def _shifted(sel, shift, idx):
  """[B, K, d] features of models idx [B, K], bias column (last) shifted."""
  if shift is None:
    return sel
  return sel.at[..., -1].add(jnp.take_along_axis(shift, idx, axis=1))


def _cold_var(w, cov, sigma_phi):
  """[B] extra variance of a cold-start model: w'S w + tr(S cov_w)."""
  return (jnp.einsum('bi,ij,bj->b', w, sigma_phi, w)
          + jnp.einsum('ij,bji->b', sigma_phi, cov))


@jax.jit
def _predict_all(phi, w, cov, noise_var, link, cold, sigma_phi, shift):
  """[B, M] predictive means and standard deviations (one batched matmul).

  `shift` [B, M] (or None) moves each task's bias feature (see
  `_posterior`); means go through the space's population link
  (`space.apply_link`: same ranking, mean and spread; identity unless
  normalization='rank').
  """
  linear = w @ phi.T
  var = (jnp.einsum('md,bde,me->bm', phi, cov, phi) + noise_var
         + _cold_var(w, cov, sigma_phi)[:, None] * cold[None, :])
  if shift is not None:
    linear = linear + w[:, -1:] * shift
    var = (var + 2 * shift * jnp.einsum('md,bd->bm', phi, cov[:, :, -1])
           + shift ** 2 * cov[:, -1, -1][:, None])
  return space_lib.apply_link(linear, link), jnp.sqrt(var)


@functools.partial(jax.jit, static_argnames=('k',))
def _top(phi, w, cov, noise_var, link, cold, sigma_phi, shift, *, k):
  """Top-k models per task, their predictive mean and std, without [B, M] sort.

  The linked value of the r-th best model only depends on its rank, the
  row's mean and std and the link, so `apply_link` of the full row is not
  needed: identical to `_predict_all` on the top k.
  """
  linear = w @ phi.T
  if shift is not None:
    linear = linear + w[:, -1:] * shift
  values, idx = jax.lax.top_k(linear, k)
  if link.shape[0]:
    m = linear.shape[-1]
    grid = (jnp.arange(link.shape[0]) + 0.5) / link.shape[0]
    shaped_all = jnp.interp((jnp.arange(m) + 0.5) / m, grid, link)
    q_top = (m - 1 - jnp.arange(k) + 0.5) / m
    shaped = (jnp.interp(q_top, grid, link) - shaped_all.mean()) / jnp.maximum(
        shaped_all.std(), 1e-12)
    values = (linear.mean(-1, keepdims=True)
              + linear.std(-1, keepdims=True) * shaped[None, :])
  sel = _shifted(phi[idx], shift, idx)
  var = (jnp.einsum('bkd,bde,bke->bk', sel, cov, sel) + noise_var
         + _cold_var(w, cov, sigma_phi)[:, None] * cold[idx])
  return values, jnp.sqrt(var), idx


def _chol(cov: np.ndarray) -> np.ndarray:
  d = cov.shape[0]
  jitter = 1e-6 * max(np.trace(cov) / d, 1e-12)
  return np.linalg.cholesky(cov + jitter * np.eye(d))


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


def _ridge_predict(params: Mapping[str, np.ndarray], x: np.ndarray
                   ) -> np.ndarray:
  xs = (np.asarray(x, np.float64) - params['x_mean']) / params['x_scale']
  return params['y_mean'] + xs @ params['coef']


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


def _align(embeddings: Any, ids: Sequence[str], kind: str
           ) -> tuple[np.ndarray, np.ndarray]:
  """(rows, [n, D] embeddings) from `{id: [D]}` or an `[len(ids), D]` array."""
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


def _align_sets(embeddings: Any, ids: Sequence[str]
                ) -> tuple[np.ndarray, list[np.ndarray]]:
  """(rows, per-row embeddings) of the history's tasks.

  `embeddings` is `{task_id: [D] or [n, D]}` or a `[T, D]` / `[T, n, D]`
  array in task order; entries come back as given (float64, checked
  finite). Tasks without an entry are left out (counted in a log line).
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


def _mean_direction(e: np.ndarray) -> np.ndarray:
  """The ridge map's input: a [D] vector as is; a set's mean unit row."""
  from fennec_jax.proxy import embed  # pylint: disable=g-import-not-at-top
  return e if e.ndim == 1 else embed.l2_normalize(e).mean(0)


def _new_task_sets(task_embeddings: Any) -> list[np.ndarray]:
  """B new tasks' embeddings as a list of [D] vectors or [n, D] sets."""
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


def _neighbor_mean(state: Mapping[str, np.ndarray], aff: np.ndarray,
                   const: int) -> np.ndarray:
  """[B, d] raw weight vectors of the affinity-weighted normalized tasks.

  The normalized vectors are averaged, then mapped back with the weighted
  loc and scale: raw = loc + scale * normalized, as for a fitted task.
  """
  aff = np.asarray(aff, np.float64)
  mean = (aff @ state['scale'])[:, None] * (aff @ state['w_norm'])
  mean[:, const] += aff @ state['loc']
  return mean


class Fennec:
  """The recommender: transfer space + optional embedding map.

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
    self.ridge: dict[str, np.ndarray] | None = None
    self.ridge_penalty: float | None = None
    self.embedding_cov: np.ndarray | None = None
    # The 'neighbors' task map: the map, and per map task (the history's
    # tasks with embeddings) its normalized weight vector, loc and scale;
    # the residuals (observed - fitted normalized score) as COO entries.
    self.neighbor_map: neighbors_lib.NeighborMap | None = None
    self.neighbor_state: dict[str, np.ndarray] | None = None
    self.model_ridge: dict[str, np.ndarray] | None = None
    self.model_cov: np.ndarray | None = None
    self.cold = np.zeros(0, bool)

  @classmethod
  def from_parts(cls, space: space_lib.TransferSpace,
                 model_ids: Sequence[str], task_ids: Sequence[str],
                 ridge: Mapping[str, np.ndarray] | None = None,
                 embedding_cov: np.ndarray | None = None,
                 config: FennecConfig | None = None) -> 'Fennec':
    """A fitted Fennec from its parts (loading, benchmarks, custom fits).

    Raises:
      ValueError: if the ids do not match the space's shape or only one of
        `ridge` / `embedding_cov` is given.
    """
    if len(model_ids) != space.num_models or len(task_ids) != space.num_tasks:
      raise ValueError(f'{len(model_ids)} model ids / {len(task_ids)} task '
                       f'ids for a space of {space.num_models} models x '
                       f'{space.num_tasks} tasks.')
    if (ridge is None) != (embedding_cov is None):
      raise ValueError('give both ridge and embedding_cov, or neither.')
    out = cls(config or FennecConfig(space=space.config))
    out.space = space
    out.model_ids = tuple(model_ids)
    out.task_ids = tuple(task_ids)
    if ridge is not None:
      out.ridge = {k: np.asarray(v, np.float64) for k, v in ridge.items()}
      out.embedding_cov = np.asarray(embedding_cov, np.float64)
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
    self.ridge = self.ridge_penalty = self.embedding_cov = None
    self.neighbor_map = self.neighbor_state = None
    self.model_ridge = self.model_cov = None
    self.cold = np.zeros(len(self.model_ids), bool)
    if model_embeddings is not None:
      self._fit_model_map(model_embeddings)
    if task_embeddings is None:
      self._cache()
      return self
    rows, sets = _align_sets(task_embeddings, self.task_ids)
    # A task with fewer than 3 observed scores has no usable ranking or
    # scale (one score gets scale 1 in raw units), and its weight vector
    # would blow up the map's error covariance: it stays out of the map.
    counts = np.asarray(history.mask, bool).sum(0)[rows]
    if (counts < _MIN_MAP_SCORES).any():
      logging.info('Fennec: %d task(s) with fewer than %d observed scores '
                   'left out of the task map: %s',
                   int((counts < _MIN_MAP_SCORES).sum()), _MIN_MAP_SCORES,
                   [self.task_ids[j] for j in rows[counts < _MIN_MAP_SCORES]
                    ][:10])
      keep = counts >= _MIN_MAP_SCORES
      rows, sets = rows[keep], [e for e, k in zip(sets, keep) if k]
    w = np.asarray(self.space.task_vectors(), np.float64)[rows]
    if self.config.task_map == 'ridge':
      emb = np.stack([_mean_direction(e) for e in sets])
      self.ridge, self.ridge_penalty, loo = fit_ridge(
          emb, w, self.config.ridge_grid)
      logging.info('Fennec: ridge task map on %d tasks (dim %d), ridge '
                   '%.3g.', len(rows), emb.shape[1], self.ridge_penalty)
    else:
      loo = self._fit_neighbor_map(
          history, rows, neighbors_lib.unit_sets(
              sets, [f'task {self.task_ids[j]!r}' for j in rows]), w)
    cov = np.cov(loo, rowvar=False, ddof=1)
    a = self.config.prior_shrinkage
    self.embedding_cov = (1 - a) * cov + a * np.diag(np.diag(cov))
    self._cache()
    return self

  def _fit_neighbor_map(self, history: Any, rows: np.ndarray,
                        sets: list[np.ndarray], w: np.ndarray) -> np.ndarray:
    """Fits the 'neighbors' map; returns its [T, d] LOO residuals of w."""
    normed, _, _ = space_lib.normalize(
        history.scores, history.mask, self.config.space.normalization)
    mask = np.asarray(history.mask, bool)[:, rows]
    fitted = np.asarray(self.space.predict_normalized(), np.float64)[:, rows]
    resid = np.where(mask, normed[:, rows] - fitted, 0.0)
    self.neighbor_map, loo_aff = neighbors_lib.fit(
        sets, fitted + resid, mask, self.config.neighbor_grid)
    loc = np.asarray(self.space.task_loc, np.float64)[rows]
    scale = np.asarray(self.space.task_scale, np.float64)[rows]
    const = self.space.dim - 2  # phi's constant-1 column.
    w_norm = w.copy()
    w_norm[:, const] -= loc
    w_norm /= scale[:, None]
    r, c = np.nonzero(mask)
    state = {'w_norm': w_norm, 'loc': loc, 'scale': scale,
             'resid_rows': r.astype(np.int32),
             'resid_cols': c.astype(np.int32), 'resid_values': resid[r, c]}
    w_loo = _neighbor_mean(state, loo_aff, const)
    # The fold-in's noise: what the map gets wrong per score beyond what its
    # weight-vector error explains (the averaged residuals are not in w), so
    # K observed scores correct the prior instead of being fit exactly.
    phi = np.asarray(self.space.model_features(), np.float64)
    pred = phi @ w_loo.T + (resid @ loo_aff.T) * w_loo[:, -1][None, :]
    err = np.mean((np.asarray(history.scores, np.float64)[:, rows]
                   - pred)[mask] ** 2)
    loo = w - w_loo
    cov = np.cov(loo, rowvar=False, ddof=1)
    explained = np.mean(np.einsum('md,de,me->m', phi, cov, phi))
    state['noise_var'] = np.asarray(max(err - explained,
                                        float(self.space.noise_var)))
    self.neighbor_state = state
    return loo

  def _fit_model_map(self, model_embeddings) -> None:
    """Ridge map model embedding -> [U_m, model_bias_m] (LOO-tuned)."""
    rows, emb = _align(model_embeddings, self.model_ids, 'model')
    target = np.concatenate([
        np.asarray(self.space.model_factors, np.float64),
        np.asarray(self.space.model_bias, np.float64)[:, None]], 1)[rows]
    self.model_ridge, penalty, loo = fit_ridge(emb, target,
                                               self.config.ridge_grid)
    cov = np.cov(loo, rowvar=False, ddof=1)
    a = self.config.prior_shrinkage
    self.model_cov = (1 - a) * cov + a * np.diag(np.diag(cov))
    logging.info('Fennec: model embedding map on %d models (dim %d), ridge '
                 '%.3g.', len(rows), emb.shape[1], penalty)

  def add_models(self, model_ids: Sequence[str],
                 model_embeddings: Any) -> 'Fennec':
    """A Fennec whose repository also holds unseen models (cold start).

    Their space features come from the model embedding map; their
    predictive std adds the map's leave-one-out error, so a cold model is
    ranked with honest uncertainty.

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
    pred = _ridge_predict(self.model_ridge, emb)
    k = self.space.model_factors.shape[1]
    space = self.space.replace(
        model_factors=jnp.concatenate([self.space.model_factors,
                                       jnp.asarray(pred[:, :k], jnp.float32)]),
        model_bias=jnp.concatenate([self.space.model_bias,
                                    jnp.asarray(pred[:, k], jnp.float32)]))
    out = Fennec.from_parts(
        space, self.model_ids + model_ids, self.task_ids, self.ridge,
        self.embedding_cov if self.ridge is not None else None, self.config)
    out.ridge_penalty = self.ridge_penalty
    # A cold model has no residuals: its bias shift under the neighbour map is 0.
    out.neighbor_map, out.neighbor_state = (self.neighbor_map,
                                            self.neighbor_state)
    out.embedding_cov = self.embedding_cov
    out.model_ridge, out.model_cov = self.model_ridge, self.model_cov
    out.cold = np.concatenate([self.cold, np.ones(len(model_ids), bool)])
    out._cache()  # pylint: disable=protected-access
    return out

  # -- recommending ------------------------------------------------------------

  def _check_fitted(self):
    if self.space is None:
      raise ValueError('Fennec is not fitted: call fit() or load() first.')

  def _observed_sparse(self, observed, num_tasks):
    """(idx, scores, valid) [B, K] from dicts {model_id: score} or an array.

    K is padded to a power of two (padding has valid=False), so calls with
    different numbers of observed scores share a few compiled shapes.
    """
    m = len(self.model_ids)
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    if isinstance(observed, np.ndarray) or (
        len(observed) and not isinstance(observed[0], Mapping)):
      arr = np.asarray(observed, np.float64)
      if arr.ndim != 2 or arr.shape[1] != m:
        raise ValueError(f'observed scores must be [B, M={m}] with NaN where '
                         f'unobserved, got shape {arr.shape}.')
      if np.isinf(arr).any():
        raise ValueError('observed scores must be finite or NaN.')
      for row in arr:
        idx = np.flatnonzero(~np.isnan(row))
        rows.append((idx, row[idx]))
    else:
      for b, obs in enumerate(observed):
        unknown = [k for k in obs if k not in self._index]
        if unknown:
          raise ValueError(f'task {b}: model ids not in the repository: '
                           f'{sorted(unknown)[:10]} ({m} models, e.g. '
                           f'{list(self.model_ids[:5])}).')
        vals = np.asarray([float(v) for v in obs.values()], np.float64)
        bad = ~np.isfinite(vals)
        if bad.any():
          k = list(obs)[int(np.argmax(bad))]
          raise ValueError(f'task {b}: score of {k!r} is {obs[k]}, not '
                           'finite.')
        rows.append((np.asarray([self._index[k] for k in obs], np.int64),
                     vals))
    if num_tasks is not None and len(rows) != num_tasks:
      raise ValueError(f'{len(rows)} observed-score sets for {num_tasks} '
                       'embeddings; give one per task.')
    longest = max([len(i) for i, _ in rows] + [1])
    k = 1 << (longest - 1).bit_length()
    idx = np.zeros((len(rows), k), np.int32)
    scores = np.zeros((len(rows), k), np.float32)
    valid = np.zeros((len(rows), k), bool)
    for b, (i, v) in enumerate(rows):
      idx[b, :len(i)] = i
      scores[b, :len(i)] = v
      valid[b, :len(i)] = True
    return idx, scores, valid

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
    return self._posterior(task_embeddings, observed)[:2]

  def _posterior(self, task_embeddings: Any, observed: Any
                 ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(w, cov, shift [B, M] or None, the scores' noise variance).

    See `posterior`.
    """
    self._check_fitted()
    if task_embeddings is None and observed is None:
      raise ValueError('a new task needs images (task_embeddings) or observed '
                       'scores; give at least one. (For the population prior '
                       'pass observed=[{}] * num_tasks.)')
    num_tasks = None
    prior = self.space
    shift = None
    if task_embeddings is not None:
      if self.ridge is None and self.neighbor_map is None:
        raise ValueError('this Fennec was fit without task embeddings; fit '
                         'with task_embeddings=... to use them.')
      sets = _new_task_sets(task_embeddings)
      dim = (self.ridge['x_mean'].shape[0] if self.ridge is not None
             else int(self.neighbor_map.pool.shape[1]))
      if sets[0].shape[-1] != dim:
        raise ValueError(f'task_embeddings have width {sets[0].shape[-1]}; '
                         f'this Fennec was fit on width {dim} (give '
                         'embeddings from the same proxy).')
      num_tasks = len(sets)
      if self.ridge is not None:
        mean = _ridge_predict(self.ridge,
                              np.stack([_mean_direction(e) for e in sets]))
      else:
        votes = np.asarray(neighbors_lib.votes(
            self.neighbor_map, neighbors_lib.unit_sets(
                sets, [f'new task {b}' for b in range(len(sets))])),
                           np.float64)
        s = self.neighbor_map.smoothing
        norm = 1.0 + s * self.neighbor_map.num_tasks  # Votes sum to 1.
        mean = _neighbor_mean(self.neighbor_state, (votes + s) / norm,
                              prior.dim - 2)
        shift = self._neighbor_shift(votes, s, norm)
      chol = self._embedding_chol
    if observed is not None:
      idx, scores, valid = self._observed_sparse(observed, num_tasks)
      num_tasks = idx.shape[0]
    else:
      idx = np.zeros((num_tasks, 1), np.int32)
      scores = np.zeros((num_tasks, 1), np.float32)
      valid = np.zeros((num_tasks, 1), bool)
    if task_embeddings is None:
      mean = np.broadcast_to(np.asarray(prior.prior_mean, np.float64),
                             (num_tasks, prior.dim))
      chol = self._prior_chol
    noise_var = prior.noise_var
    if task_embeddings is not None and self.neighbor_map is not None:
      noise_var = jnp.asarray(self.neighbor_state['noise_var'], jnp.float32)
    w, cov = _posterior(self._phi, chol, noise_var,
                        jnp.asarray(mean, jnp.float32), jnp.asarray(idx),
                        jnp.asarray(scores), jnp.asarray(valid), shift)
    return w, cov, shift, noise_var

  def _neighbor_shift(self, votes: np.ndarray, smoothing: float,
                      norm: float) -> jax.Array:
    """[B, M] affinity-weighted residuals (normalized units): the bias shift.

    The task's scale multiplies the bias feature, so the residuals scale
    with it (and with its fold-in posterior). With affinities (votes + s) /
    norm, the residual sums R 1 are cached and R votes touches only the
    voted tasks' columns (sparse x sparse), so the cost does not grow with
    the history's size.
    """
    import scipy.sparse  # pylint: disable=g-import-not-at-top
    if self._resid is None:
      st = self.neighbor_state
      self._resid = scipy.sparse.csr_matrix(
          (np.asarray(st['resid_values'], np.float64),
           (st['resid_cols'], st['resid_rows'])),
          shape=(self.neighbor_map.num_tasks, len(self.model_ids)))
      self._resid_sum = np.asarray(self._resid.sum(0)).ravel()
    voted = scipy.sparse.csr_matrix(votes) @ self._resid  # [B, M]
    shift = (voted.toarray() + smoothing * self._resid_sum) / norm
    return jnp.asarray(shift, jnp.float32)

  def predict(self, task_embeddings: Any = None, observed: Any = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted scores of every model for B new tasks.

    Args:
      task_embeddings: see `posterior`.
      observed: see `posterior`.

    Returns:
      (predicted [B, M], std [B, M], vectors [B, d]).
    """
    w, cov, shift, noise_var = self._posterior(task_embeddings, observed)
    pred, std = _predict_all(self._phi, w, cov, noise_var,
                             self.space.link, self._cold, self._sigma_phi,
                             shift)
    return np.asarray(pred), np.asarray(std), np.asarray(w)

  def recommend(self, task_embeddings: Any = None, observed: Any = None,
                top: int = 5, full: bool = True) -> Recommendation:
    """Ranks every model for B new tasks (see `posterior` for the inputs).

    Args:
      task_embeddings: optional [B, D] embeddings.
      observed: optional observed scores (B dicts or a [B, M] array).
      top: how many models to return per task.
      full: also return every model's prediction and std (`all_*`, [B, M]);
        False skips them (latency- and memory-bound uses).

    Returns:
      A `Recommendation`, best model first (`all_*` are empty [B, 0] arrays
      unless `full`).

    Raises:
      ValueError: as `posterior`, or `top` outside [1, M].
    """
    self._check_fitted()
    if not 1 <= top <= len(self.model_ids):
      raise ValueError(f'top={top} must be in [1, {len(self.model_ids)}].')
    w, cov, shift, noise_var = self._posterior(task_embeddings, observed)
    values, std, idx = _top(self._phi, w, cov, noise_var,
                            self.space.link, self._cold, self._sigma_phi,
                            shift, k=top)
    idx = np.asarray(idx)
    if full:
      all_pred, all_std = map(np.asarray, _predict_all(
          self._phi, w, cov, noise_var, self.space.link,
          self._cold, self._sigma_phi, shift))
    else:
      all_pred = all_std = np.zeros((idx.shape[0], 0), np.float32)
    return Recommendation(
        model_ids=[[self.model_ids[i] for i in row] for row in idx],
        indices=idx, predicted=np.asarray(values), std=np.asarray(std),
        all_predicted=all_pred, all_std=all_std, vectors=np.asarray(w))

  def _cache(self) -> None:
    """Device-side constants reused by every call (after fit/load)."""
    self._phi = self.space.model_features()
    self._index = {k: i for i, k in enumerate(self.model_ids)}
    self._prior_chol = jnp.asarray(
        _chol(np.asarray(self.space.prior_cov, np.float64)), jnp.float32)
    self._embedding_chol = (
        None if self.embedding_cov is None else
        jnp.asarray(_chol(self.embedding_cov), jnp.float32))
    # Cold-start models: phi = [u, 1, b] with (u, b) ~ N(map(e), model_cov).
    d = self.space.dim
    sigma = np.zeros((d, d))
    if self.model_cov is not None:
      keep = [i for i in range(d) if i != d - 2]  # The constant-1 column.
      sigma[np.ix_(keep, keep)] = self.model_cov
    self._sigma_phi = jnp.asarray(sigma, jnp.float32)
    self._cold = jnp.asarray(self.cold, jnp.float32)
    self._resid = self._resid_sum = None  # Built on first use.

  # -- persistence -------------------------------------------------------------

  def _state(self) -> dict[str, Any]:
    arrays = self.space.to_dict()
    del arrays['config_json']
    state = {'space': {k: np.asarray(v) for k, v in arrays.items()}}
    if self.ridge is not None:
      state['ridge'] = dict(self.ridge)
    if self.neighbor_map is not None:
      state['neighbor'] = dict(
          self.neighbor_state, pool=np.asarray(self.neighbor_map.pool),
          owner=np.asarray(self.neighbor_map.owner))
    if self.embedding_cov is not None:
      state['embedding_cov'] = self.embedding_cov
    if self.model_ridge is not None:
      state['model_ridge'] = dict(self.model_ridge)
      state['model_cov'] = self.model_cov
    state['cold'] = self.cold.astype(np.int8)
    return state

  def save(self, path: str) -> None:
    """Writes a checkpoint directory (orbax arrays + `fennec.json`).

    Args:
      path: a directory that must not exist yet (made absolute).

    Raises:
      ValueError: if not fitted or `path` exists.
    """
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._check_fitted()
    path = os.path.abspath(path)
    if os.path.exists(path):
      raise ValueError(f'{path} exists; choose a new checkpoint directory.')
    os.makedirs(path)
    state = self._state()
    # Orbax cannot write zero-size arrays (e.g. the space's link under
    # 'zscore'): they are kept in the JSON as shapes and rebuilt on load.
    empty = {}
    for group, arrays in list(state.items()):
      if isinstance(arrays, dict):
        for key in [k for k, v in arrays.items() if np.asarray(v).size == 0]:
          v = np.asarray(arrays.pop(key))
          empty[f'{group}/{key}'] = [list(v.shape), str(v.dtype)]
    meta = {
        'format_version': _FORMAT_VERSION,
        'config': self.config.to_json(),
        'model_ids': list(self.model_ids),
        'task_ids': list(self.task_ids),
        'ridge_penalty': self.ridge_penalty,
        'neighbor': None if self.neighbor_map is None else {
            'num_tasks': self.neighbor_map.num_tasks,
            'k': self.neighbor_map.k,
            'smoothing': self.neighbor_map.smoothing,
            'loo_error': self.neighbor_map.loo_error},
        'shapes': jax.tree.map(lambda a: [list(np.shape(a)),
                                          str(np.asarray(a).dtype)], state),
        'empty': empty,
    }
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(path, _STATE_DIR), state)
    ckptr.wait_until_finished()
    with open(os.path.join(path, _META_FILE), 'w') as f:
      json.dump(meta, f, indent=1)

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
      ValueError: a missing/foreign checkpoint or a configuration mismatch,
        naming the differing fields.
    """
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    path = os.path.abspath(path)
    meta_path = os.path.join(path, _META_FILE)
    if not os.path.exists(meta_path):
      raise ValueError(f'{path} is not a Fennec checkpoint (no {_META_FILE}).')
    with open(meta_path) as f:
      meta = json.load(f)
    if meta.get('format_version') != _FORMAT_VERSION:
      raise ValueError(f'{meta_path}: format_version '
                       f'{meta.get("format_version")!r}; this code reads '
                       f'{_FORMAT_VERSION}.')
    saved = FennecConfig.from_json(meta['config'])
    if config is not None and config != saved:
      diff = _config_diff(config.to_json(), saved.to_json())
      raise ValueError(f'{path} was made with another configuration; '
                       f'differences (expected vs saved): {diff}')
    template = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(tuple(s[0]), np.dtype(s[1])),
        meta['shapes'], is_leaf=lambda x: isinstance(x, list) and len(x) == 2
        and isinstance(x[1], str))
    state = ocp.StandardCheckpointer().restore(
        os.path.join(path, _STATE_DIR), template)
    for name, (shape, dtype) in meta.get('empty', {}).items():
      group, key = name.split('/')
      state[group][key] = np.zeros(shape, dtype)
    arrays = dict(state['space'])
    arrays['config_json'] = np.asarray(json.dumps(meta['config']['space']))
    out = cls.from_parts(
        space_lib.TransferSpace.from_dict(arrays), meta['model_ids'],
        meta['task_ids'], state.get('ridge'),
        state.get('embedding_cov') if 'ridge' in state else None, saved)
    out.ridge_penalty = meta['ridge_penalty']
    if meta.get('neighbor'):
      nb = {k: np.asarray(v) for k, v in state['neighbor'].items()}
      out.neighbor_map = neighbors_lib.NeighborMap(
          jnp.asarray(nb.pop('pool'), jnp.float32),
          jnp.asarray(nb.pop('owner'), jnp.int32), **meta['neighbor'])
      out.neighbor_state = nb
      out.embedding_cov = np.asarray(state['embedding_cov'], np.float64)
    if 'model_ridge' in state:
      out.model_ridge = {k: np.asarray(v, np.float64)
                         for k, v in state['model_ridge'].items()}
      out.model_cov = np.asarray(state['model_cov'], np.float64)
    out.cold = np.asarray(state['cold']).astype(bool)
    out._cache()  # pylint: disable=protected-access
    return out


def _config_diff(a: Mapping[str, Any], b: Mapping[str, Any],
                 prefix: str = '') -> dict[str, tuple[Any, Any]]:
  out = {}
  for k in sorted(set(a) | set(b)):
    va, vb = a.get(k), b.get(k)
    if isinstance(va, Mapping) and isinstance(vb, Mapping):
      out.update(_config_diff(va, vb, f'{prefix}{k}.'))
    elif va != vb:
      out[f'{prefix}{k}'] = (va, vb)
  return out


def read_scores_csv(path: str) -> dict[str, dict[str, float]]:
  """Observed scores of new tasks from a CSV, for `recommend(observed=...)`.

  Columns `model,score` (one new task, named after the file) or
  `model,task,score` (several). Other columns are ignored.

  Args:
    path: the CSV file.

  Returns:
    `{task: {model_id: score}}` in file order.

  Raises:
    ValueError: naming the file, line and column of a missing column, an
      empty id, a non-numeric or non-finite score, or a repeated model.
  """
  import csv  # pylint: disable=g-import-not-at-top
  out: dict[str, dict[str, float]] = {}
  default_task = os.path.splitext(os.path.basename(path))[0]
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ('model', 'score') if c not in header]
    if missing:
      raise ValueError(f'{path}: line 1 (header) lacks column(s) {missing}; '
                       f'found {header}. Expected model,score or '
                       'model,task,score.')
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
  if not out:
    raise ValueError(f'{path}: no rows.')
  return out


def format_recommendation(rec: Recommendation, tasks: Sequence[str],
                          observed: Mapping[str, Mapping[str, float]] | None
                          = None) -> str:
  """A plain-text table per task: rank, model, predicted score +- std."""
  lines = []
  for b, task in enumerate(tasks):
    seen = (observed or {}).get(task, {})
    lines.append(f'task {task} ({len(seen)} observed scores):')
    for r, (model, p, s) in enumerate(zip(rec.model_ids[b], rec.predicted[b],
                                          rec.std[b])):
      note = f'  (observed {seen[model]:.4g})' if model in seen else ''
      lines.append(f'  {r + 1:2d}. {model:50s} {p:9.4g} +- {s:.3g}{note}')
  return '\n'.join(lines)
