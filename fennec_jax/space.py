"""The transfer space: masked joint factorization of a models x tasks matrix.

A history of scores `scores[M, T]` (model m fine-tuned on task t), observed
where `mask` is True, is factorized as

  norm(scores)[m, t] ~ offset + model_bias[m] + task_bias[t] + U[m] . V[t]

with `U [M, k]` model factors and `V [T, k]` task factors. `norm` is a
per-task normalization computed from the observed entries only ('none',
'zscore', 'rank' or 'robust', see `SpaceConfig`). The fit is MAP under
Gaussian priors (probabilistic matrix factorization): with noise variance s2 and
prior variances s2_f (factors) and s2_b (biases) the negative log posterior,
multiplied by s2, is

  0.5 * sum_obs (y - yhat)^2 + 0.5 * lam * (|U|^2 + |V|^2)
                             + 0.5 * lam_b * (|model_bias|^2 + |task_bias|^2)

where `lam = s2 / s2_f` (`SpaceConfig.prior_precision`) and
`lam_b = s2 / s2_b` (`SpaceConfig.bias_prior_precision`) are prior
precisions in units of the noise precision. The loss visits the observed
entries either as a sparse COO list (cost O(observed); minibatches allowed)
or as a masked dense matrix through matmuls (cost O(M T k), much faster than
scatter-adds on a CPU once a few percent are observed); `SpaceConfig.layout`
picks. It is minimized with optax (Adam) by a pure jitted
`step(state, data, rng) -> (state, metrics)`; a seeded fraction of the
observed entries is held out for early stopping, and the best parameters (by
held-out RMSE) are restored at the end. Inputs are plain arrays (`fit`:
dense scores + mask; `fit_entries`: COO), so any History type plugs in.

Fold-in of a new task works in the raw score domain. Each fitted task t maps
back to raw scores through its affine normalization (raw = loc_t + scale_t *
norm; exact for 'none' and 'zscore', the least-squares affine fit for
'rank' and 'robust'), so its raw scores are linear in the model features

  phi[m] = [U[m], 1, model_bias[m]]     (d = k + 2 columns)

with the task's weight vector w_t = [scale_t V[t], loc_t + scale_t (offset +
task_bias[t]), scale_t]. A new task's w is given a Gaussian prior whose mean
and covariance are those of the fitted w_t (empirical Bayes, with shrinkage
of the covariance towards its diagonal), and the noise variance is the
held-out mean squared residual in raw units. K observed raw scores then give
the closed-form Bayesian linear regression posterior of w, hence a predictive
mean and standard deviation for every model. K = 0 returns the prior: the
population mean task, i.e. roughly the popularity ranking. Because the task's
offset (intercept) and scale (the coefficient of model_bias) are part of w, a
single observed score mostly moves the task's level, not its ranking, which
is what one score can actually tell. For normalization 'rank' or 'robust',
predicted scores are finally mapped through the population link
(`apply_link`), which restores the shape of a typical task's scores (the
long tail of failed fine-tunes) without changing the ranking.

Ranking a large repository for many tasks is one batched matmul, chunked
over models with a per-chunk `lax.top_k` (`TransferSpace.top_k`).
"""

import dataclasses
import functools
import json
from typing import Any, NamedTuple, Optional

from absl import logging
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.special
import scipy.stats

_NORMALIZATIONS = ('none', 'zscore', 'rank', 'robust')
# Soft winsorizing bound c of the 'robust' normalization c tanh(z / c), in
# robust standard units.
ROBUST_CLIP = 2.0
# MAD -> standard deviation of a normal distribution.
_MAD_TO_STD = 1.482602218505602
_LAYOUTS = ('auto', 'dense', 'sparse')
_DENSE_MAX_ENTRIES = 2 ** 28


@dataclasses.dataclass(frozen=True)
class SpaceConfig:
  """How to fit a transfer space.

  The defaults were chosen on the TransferGraph image benchmark (leave one
  task out, 8 targets, 30 draws; experiments/benchmarks/space_tune.py): mean
  weighted tau 0.672 at K = 0 and 0.690 at K = 5 observed scores, against
  0.618 / 0.617 for popularity. Rank 1-3 and prior precision 1-10 are all
  within ~0.01 of that; with more tasks a larger rank pays.

  Attributes:
    rank: k, the number of latent dimensions.
    prior_precision: Gaussian prior precision of U and V in units of the noise
      precision (lam = noise variance / prior variance). 0 = unregularized.
    bias_prior_precision: the same for the model and task biases.
    nonneg: constrain U and V to be >= 0 (the paper's NMF). Implemented as
      projected Adam: after every update, U and V are clipped at 0.
    use_bias: learn the offset and the model and task biases. The paper's
      NMF has none (`nonneg=True, use_bias=False, prior_precision=0, rank=5,
      normalization='none'`).
    normalization: per-task transform of the observed scores before the fit:
      'none'; 'zscore' (minus the task's observed mean, over its observed
      standard deviation); 'rank' (van der Waerden normal scores of the
      task's observed entries, ties averaged); 'robust' (the default: minus
      the task's observed median, over 1.4826 times its median absolute
      deviation, z, softly winsorized as c tanh(z / c), c = ROBUST_CLIP).
      'robust' keeps the magnitudes that rank scores discard (a model far
      ahead of the rest counts as far ahead, which matters with few models)
      while, unlike 'zscore', a heavy tail of failed fine-tunes neither
      inflates the task's scale nor dominates the fit. Predictions map back
      to raw scores through the per-task affine map raw = loc + scale *
      norm.
    learning_rate: Adam learning rate.
    max_steps: the most optimizer steps.
    eval_every: steps between held-out evaluations (run as one jitted loop).
    patience: stop after this many evaluations without improvement.
    holdout_fraction: fraction of the observed entries held out for early
      stopping and the noise estimate (0 = no early stopping; the noise
      variance is then the training mean squared residual).
    batch_size: observed entries per step, sampled with replacement; None
      uses all training entries every step (full batch).
    layout: how the training loss visits the observed entries: 'sparse'
      (COO gathers, cost O(observed); the choice for very sparse histories
      and for accelerators), 'dense' (a masked [M, T] loss through
      matmuls, cost O(M T k) but far faster than scatter-adds on a CPU once
      a few percent of the entries are observed; full batch only) or 'auto'
      (dense when batch_size is None, at least 1% of the entries are
      observed and M * T <= 2^28; else sparse).
    init_scale: standard deviation of the initial factors.
    prior_shrinkage: fold-in prior covariance = (1 - a) * C + a * diag(C),
      with C the covariance of the fitted task weight vectors around the
      prior mean (the mean normalized task, see `fit_entries`).
    seed: the root of every random choice (holdout split, init, batches).
    refit_on_all: after early stopping has chosen the number of steps (and
      the held-out residuals the noise variance), refit from the same
      initialization on all observed entries for that many steps (about
      twice the fit time; small histories cannot spare 5% of their scores).
  """
  rank: int = 1
  prior_precision: float = 3.0
  bias_prior_precision: float = 0.1
  nonneg: bool = False
  use_bias: bool = True
  normalization: str = 'robust'
  learning_rate: float = 0.05
  max_steps: int = 2000
  eval_every: int = 50
  patience: int = 5
  holdout_fraction: float = 0.05
  batch_size: Optional[int] = None
  layout: str = 'auto'
  init_scale: float = 0.1
  prior_shrinkage: float = 0.1
  refit_on_all: bool = True
  seed: int = 0

  def validate(self) -> None:
    """Raises ValueError naming the bad field."""
    if int(self.rank) != self.rank or self.rank < 1:
      raise ValueError(f'SpaceConfig.rank must be an integer >= 1, got '
                       f'{self.rank!r}.')
    if self.normalization not in _NORMALIZATIONS:
      raise ValueError(f'SpaceConfig.normalization={self.normalization!r}; '
                       f'valid: {_NORMALIZATIONS}.')
    for name in ('prior_precision', 'bias_prior_precision', 'init_scale',
                 'prior_shrinkage'):
      if not np.isfinite(getattr(self, name)) or getattr(self, name) < 0:
        raise ValueError(f'SpaceConfig.{name} must be finite and >= 0, got '
                         f'{getattr(self, name)!r}.')
    if not 0 <= self.holdout_fraction < 1:
      raise ValueError('SpaceConfig.holdout_fraction must be in [0, 1), got '
                       f'{self.holdout_fraction!r}.')
    if self.prior_shrinkage > 1:
      raise ValueError('SpaceConfig.prior_shrinkage must be in [0, 1], got '
                       f'{self.prior_shrinkage!r}.')
    if not self.learning_rate > 0:
      raise ValueError('SpaceConfig.learning_rate must be > 0, got '
                       f'{self.learning_rate!r}.')
    for name in ('max_steps', 'eval_every', 'patience'):
      if getattr(self, name) < 1:
        raise ValueError(f'SpaceConfig.{name} must be >= 1, got '
                         f'{getattr(self, name)!r}.')
    if self.layout not in _LAYOUTS:
      raise ValueError(f'SpaceConfig.layout={self.layout!r}; valid: '
                       f'{_LAYOUTS}.')
    if self.layout == 'dense' and self.batch_size is not None:
      raise ValueError('SpaceConfig.layout=\'dense\' is full batch; set '
                       f'batch_size=None (got {self.batch_size}) or use '
                       'layout=\'sparse\'.')
    if self.batch_size is not None and self.batch_size < 1:
      raise ValueError('SpaceConfig.batch_size must be None or >= 1, got '
                       f'{self.batch_size!r}.')


class FoldIn(NamedTuple):
  """Posterior of new tasks' weight vectors and their predicted scores.

  Attributes:
    vectors: [B, d] posterior mean task weight vectors (d = rank + 2), in the
      raw score domain; `TransferSpace.score(vectors)` gives `predicted`.
    cov: [B, d, d] posterior covariances of the vectors.
    predicted: [B, M] predicted raw score of every model: the predictive
      mean phi @ w; for normalization 'rank'/'robust' mapped through
      `apply_link` (same ranking, mean and spread; the shape of a typical
      task's scores).
    std: [B, M] predictive standard deviation of a model's raw score
      (posterior uncertainty of the vector plus the noise variance).
  """
  vectors: jax.Array
  cov: jax.Array
  predicted: jax.Array
  std: jax.Array


@flax.struct.dataclass
class TransferSpace:
  """A fitted transfer space (a pytree of arrays plus its static config).

  Attributes:
    model_factors: [M, k] U.
    task_factors: [T, k] V.
    model_bias: [M].
    task_bias: [T].
    offset: [] global offset (normalized domain).
    task_loc: [T] per-task affine map back to raw scores: raw = loc + scale *
      normalized.
    task_scale: [T].
    prior_mean: [d] mean of the fitted task weight vectors.
    prior_cov: [d, d] their shrunk covariance.
    noise_var: [] noise variance of a raw score.
    link: [L] for normalization 'rank'/'robust', the population quantile
      function of a task's standardized raw scores, (raw - loc) / scale, at the
      probabilities (i + 0.5) / L (the mean over fitted tasks); [0]
      otherwise. Fold-in predictions are mapped through it (see `FoldIn`).
    config: the SpaceConfig used (static).
  """
  model_factors: jax.Array
  task_factors: jax.Array
  model_bias: jax.Array
  task_bias: jax.Array
  offset: jax.Array
  task_loc: jax.Array
  task_scale: jax.Array
  prior_mean: jax.Array
  prior_cov: jax.Array
  noise_var: jax.Array
  link: jax.Array
  config: SpaceConfig = flax.struct.field(pytree_node=False,
                                          default=SpaceConfig())

  @property
  def num_models(self) -> int:
    return self.model_factors.shape[0]

  @property
  def num_tasks(self) -> int:
    return self.task_factors.shape[0]

  @property
  def dim(self) -> int:
    """d, the length of a task weight vector (rank + 2)."""
    return self.model_factors.shape[1] + 2

  def model_features(self) -> jax.Array:
    """[M, d] phi = [U, 1, model_bias]: raw scores are phi @ w."""
    return _features(self.model_factors, self.model_bias)

  def task_vectors(self) -> jax.Array:
    """[T, d] raw-domain weight vectors w_t of the fitted tasks."""
    return _task_weights(self.task_factors, self.task_bias, self.offset,
                         self.task_loc, self.task_scale)

  def predict_normalized(self) -> jax.Array:
    """[M, T] the fit in the normalized domain."""
    return (self.offset + self.model_bias[:, None] + self.task_bias[None, :]
            + self.model_factors @ self.task_factors.T)

  def predict(self) -> jax.Array:
    """[M, T] the fit mapped back to raw scores."""
    return self.task_loc + self.task_scale * self.predict_normalized()

  def fold_in(self, observed_scores: Any, observed_mask: Any) -> FoldIn:
    """Posterior of new tasks from their observed raw scores (dense form).

    Args:
      observed_scores: [B, M] raw scores of the new tasks; ignored where the
        mask is False (NaN allowed there).
      observed_mask: [B, M] bool, which scores are observed (K per row, any
        K from 0 to M).

    Returns:
      FoldIn with vectors [B, d], cov [B, d, d], predicted and std [B, M].

    Raises:
      ValueError: on shape mismatch or non-finite observed scores.
    """
    scores = np.asarray(observed_scores, np.float32)
    mask = np.asarray(observed_mask)
    if scores.ndim != 2 or scores.shape[1] != self.num_models:
      raise ValueError(f'observed_scores must be [B, {self.num_models}] (one '
                       f'column per model), got shape {scores.shape}.')
    if mask.shape != scores.shape or mask.dtype != np.bool_:
      raise ValueError(f'observed_mask must be a bool array of shape '
                       f'{scores.shape}, got {mask.dtype} {mask.shape}.')
    bad = mask & ~np.isfinite(scores)
    if bad.any():
      b, m = np.argwhere(bad)[0]
      raise ValueError(f'observed_scores[{b}, {m}] = {scores[b, m]} is '
                       f'observed but not finite ({bad.sum()} such entries).')
    scores = np.where(mask, scores, 0.0)
    return _fold_in_dense(self, jnp.asarray(scores),
                          jnp.asarray(mask))

  def fold_in_indices(self, model_indices: Any, observed_scores: Any,
                      valid: Optional[Any] = None,
                      return_std: bool = False,
                      return_predicted: bool = True,
                      return_cov: bool = True) -> FoldIn:
    """Posterior of new tasks from K observed scores each (gathered form).

    The cost is O(B K d^2) for the posterior, so it scales to large
    repositories; `predicted` is the [B, M] matmul (skip it with `top_k` on
    `vectors` when M is large) and `std` is only computed when asked.

    Args:
      model_indices: [B, K] int, which models were observed for each task.
      observed_scores: [B, K] their raw scores.
      valid: optional [B, K] bool; False entries are padding and ignored.
      return_std: compute the [B, M] predictive std (else it is empty).
      return_predicted: compute the [B, M] predictions (else empty; use
        `top_k(vectors, ...)` to rank a large repository in bounded memory).
      return_cov: compute the [B, d, d] posterior covariances (else empty;
        they need a d-column triangular solve per task, slow on a CPU).

    Returns:
      FoldIn; `std` has shape [B, 0] unless return_std, `predicted` [B, 0]
      unless return_predicted, `cov` [B, 0, 0] unless return_cov.

    Raises:
      ValueError: on shape mismatch, indices outside [0, M), K > M, or
        non-finite valid scores.
    """
    idx = np.asarray(model_indices)
    scores = np.asarray(observed_scores, np.float32)
    if idx.ndim != 2 or scores.shape != idx.shape:
      raise ValueError('model_indices and observed_scores must both be [B, K]'
                       f', got {idx.shape} and {scores.shape}.')
    if not np.issubdtype(idx.dtype, np.integer):
      raise ValueError(f'model_indices must be integers, got {idx.dtype}.')
    if idx.shape[1] > self.num_models:
      raise ValueError(f'K={idx.shape[1]} observed models per task, but the '
                       f'space has only {self.num_models} models.')
    valid = (np.ones(idx.shape, bool) if valid is None
             else np.asarray(valid, bool))
    if valid.shape != idx.shape:
      raise ValueError(f'valid must be [B, K] = {idx.shape}, got '
                       f'{valid.shape}.')
    out = valid & ((idx < 0) | (idx >= self.num_models))
    if out.any():
      b, j = np.argwhere(out)[0]
      raise ValueError(f'model_indices[{b}, {j}] = {idx[b, j]} is outside '
                       f'[0, {self.num_models}).')
    bad = valid & ~np.isfinite(scores)
    if bad.any():
      b, j = np.argwhere(bad)[0]
      raise ValueError(f'observed_scores[{b}, {j}] = {scores[b, j]} is not '
                       'finite.')
    idx = np.where(valid, idx, 0).astype(np.int32)
    scores = np.where(valid, scores, 0.0)
    return _fold_in_gather(self, jnp.asarray(idx),
                           jnp.asarray(scores), jnp.asarray(valid),
                           return_std=return_std,
                           return_predicted=return_predicted,
                           return_cov=return_cov)

  def score(self, task_vectors: Any) -> jax.Array:
    """[B, M] raw scores of every model for task vectors [B, d]."""
    return _score(self, jnp.asarray(task_vectors, jnp.float32))

  def top_k(self, task_vectors: Any, k: int,
            chunk_size: int = 2048) -> tuple[jax.Array, jax.Array]:
    """The k best models for each task vector, in bounded memory.

    Scores are computed chunk by chunk over the models ([B, chunk_size] at a
    time, sized to stay in cache), each chunk is reduced to its `lax.top_k`
    and the [B, num_chunks * k] winners are merged by one final top-k. Peak
    memory: one score tile plus the winners, never [B, M].

    Args:
      task_vectors: [B, d].
      k: how many models per task (<= M).
      chunk_size: models per chunk.

    Returns:
      (values [B, k], indices [B, k]), best first.

    Raises:
      ValueError: if k is not in [1, M], chunk_size < 1 or the vectors are
        not [B, d].
    """
    w = jnp.asarray(task_vectors, jnp.float32)
    if w.ndim != 2 or w.shape[1] != self.dim:
      raise ValueError(f'task_vectors must be [B, {self.dim}], got '
                       f'{w.shape}.')
    if not 1 <= k <= self.num_models:
      raise ValueError(f'top_k k={k} must be in [1, {self.num_models}] (the '
                       'number of models).')
    if chunk_size < 1:
      raise ValueError(f'chunk_size must be >= 1, got {chunk_size}.')
    chunk_size = min(int(chunk_size), self.num_models)
    return _top_k_chunked(self, w, k=int(k),
                          chunk_size=chunk_size)

  def _whitened(self) -> '_Prior':
    phi = self.model_features()
    chol = _prior_chol(self.prior_cov)
    return _Prior(phi=phi, phi_white=phi @ chol, mean=self.prior_mean,
                  chol=chol, noise_var=self.noise_var, link=self.link)

  def to_dict(self) -> dict[str, np.ndarray]:
    """Plain dict of numpy arrays (config as a JSON string) for saving."""
    out = {f.name: np.asarray(getattr(self, f.name))
           for f in dataclasses.fields(self) if f.name != 'config'}
    out['config_json'] = np.asarray(json.dumps(dataclasses.asdict(
        self.config)))
    return out

  @classmethod
  def from_dict(cls, arrays: dict[str, Any]) -> 'TransferSpace':
    """Inverse of `to_dict`.

    Raises:
      ValueError: naming a missing key or a bad config.
    """
    names = [f.name for f in dataclasses.fields(cls) if f.name != 'config']
    missing = [n for n in names + ['config_json'] if n not in arrays]
    if missing:
      raise ValueError(f'TransferSpace arrays lack keys {missing}; expected '
                       f'{names + ["config_json"]}.')
    config = SpaceConfig(**json.loads(str(arrays['config_json'])))
    config.validate()
    return cls(config=config, **{n: jnp.asarray(arrays[n]) for n in names})

  def save(self, path: str) -> None:
    """Writes the space to an .npz file."""
    with open(path, 'wb') as f:
      np.savez(f, **self.to_dict())

  @classmethod
  def load(cls, path: str) -> 'TransferSpace':
    """Reads a space written by `save`."""
    with np.load(path, allow_pickle=False) as data:
      return cls.from_dict({k: data[k] for k in data.files})


class _Prior(NamedTuple):
  phi: jax.Array        # [M, d]
  phi_white: jax.Array  # [M, d] phi @ chol
  mean: jax.Array       # [d]
  chol: jax.Array       # [d, d] lower Cholesky factor of the prior cov
  noise_var: jax.Array  # []
  link: jax.Array       # [L] or [0]


class FitInfo(NamedTuple):
  """Diagnostics of a fit.

  Attributes:
    best_step: the step whose parameters were kept.
    steps: the number of steps run.
    eval_steps: steps at which the held-out RMSE was measured.
    eval_rmse: the held-out RMSE (normalized domain) at those steps.
    train_loss: the training objective at those steps.
    num_train: training entries; num_heldout: held-out entries.
    heldout_rows: [H] model index of each held-out entry.
    heldout_cols: [H] task index of each held-out entry.
  """
  best_step: int
  steps: int
  eval_steps: np.ndarray
  eval_rmse: np.ndarray
  train_loss: np.ndarray
  num_train: int
  num_heldout: int
  heldout_rows: np.ndarray
  heldout_cols: np.ndarray


# ----------------------------------------------------------------------------
# Normalization.
# ----------------------------------------------------------------------------


def normalize_entries(cols: np.ndarray, values: np.ndarray, num_tasks: int,
                      method: str
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-task normalization of observed entries given as (column, value).

  Args:
    cols: [N] task index of each observed entry.
    values: [N] raw scores.
    num_tasks: T.
    method: 'none', 'zscore', 'rank' or 'robust'.

  Returns:
    (normalized [N], loc [T], scale [T]) such that raw ~ loc + scale *
    normalized (exact for 'none' and 'zscore'; the least-squares line for
    'rank' and 'robust'). A task with constant scores gets scale 1.

  Raises:
    ValueError: for an unknown method.
  """
  if method not in _NORMALIZATIONS:
    raise ValueError(f'normalization={method!r}; valid: {_NORMALIZATIONS}.')
  values = np.asarray(values, np.float64)
  if method == 'none':
    return values, np.zeros(num_tasks), np.ones(num_tasks)
  num = np.maximum(np.bincount(cols, minlength=num_tasks), 1)
  mean = np.bincount(cols, values, num_tasks) / num
  centered = values - mean[cols]
  std = np.sqrt(np.bincount(cols, centered ** 2, num_tasks) / num)
  if method == 'zscore':
    scale = np.where(std > 0, std, 1.0)
    return centered / scale[cols], mean, scale
  starts = np.concatenate([[0], np.cumsum(num)[:-1]])
  if method == 'robust':
    med = _group_median(cols, values, num, starts)
    mad = _MAD_TO_STD * _group_median(cols, np.abs(values - med[cols]), num,
                                      starts)
    # A task with MAD 0 (over half its scores tied) falls back to its
    # standard deviation, then to 1.
    spread = np.where(mad > 0, mad, np.where(std > 0, std, 1.0))
    # Soft winsorizing: c tanh(z / c) is ~z in the bulk, bounded by c, and
    # strictly increasing, so the order within the tail (a failed
    # fine-tune below a poor one) survives, which Pearson on heavy-tailed
    # tasks needs (a hard clip at 2 cost 0.1 Pearson on TransferGraph text).
    normed = ROBUST_CLIP * np.tanh((values - med[cols])
                                   / (ROBUST_CLIP * spread[cols]))
    return (normed,) + _affine_back(cols, normed, centered, mean, num_tasks,
                                    num)
  # Average ranks within each task (ties share their mean rank), then
  # van der Waerden normal scores.
  order = np.lexsort((values, cols))
  c_sorted, v_sorted = cols[order], values[order]
  position = np.arange(len(order)) - starts[c_sorted] + 1.0
  new_group = np.ones(len(order), bool)
  new_group[1:] = (c_sorted[1:] != c_sorted[:-1]) | (v_sorted[1:]
                                                     != v_sorted[:-1])
  group = np.cumsum(new_group) - 1
  avg_rank = (np.bincount(group, position) / np.bincount(group))[group]
  normed = np.empty(len(order))
  normed[order] = scipy.special.ndtri((avg_rank - 0.5) / num[c_sorted])
  return (normed,) + _affine_back(cols, normed, centered, mean, num_tasks,
                                  num)


def _group_median(cols, values, num, starts):
  """Median of `values` within each column group (0 for an empty group)."""
  order = np.lexsort((values, cols))
  v_sorted = values[order]
  n = np.maximum(num, 1)
  lo = np.minimum(starts + (n - 1) // 2, max(len(values) - 1, 0))
  hi = np.minimum(starts + n // 2, max(len(values) - 1, 0))
  if not len(values):
    return np.zeros(len(num))
  return np.where(np.bincount(cols, minlength=len(num)) > 0,
                  0.5 * (v_sorted[lo] + v_sorted[hi]), 0.0)


def _affine_back(cols, normed, centered, mean, num_tasks, num):
  """Least-squares affine map back: raw ~ loc + scale * normed."""
  nmean = np.bincount(cols, normed, num_tasks) / num
  ncent = normed - nmean[cols]
  var = np.bincount(cols, ncent ** 2, num_tasks)
  cov = np.bincount(cols, ncent * centered, num_tasks)
  scale = np.where(var > 0, cov / np.where(var > 0, var, 1.0), 1.0)
  scale = np.where(scale > 0, scale, 1.0)
  return mean - scale * nmean, scale


def normalize(scores: np.ndarray, mask: np.ndarray, method: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`normalize_entries` on a dense [M, T] matrix (0 where unobserved).

  Args:
    scores: [M, T] raw scores (anything where not observed).
    mask: [M, T] bool.
    method: 'none', 'zscore', 'rank' or 'robust'.

  Returns:
    (normalized [M, T], loc [T], scale [T]).
  """
  mask = np.asarray(mask, bool)
  rows, cols = np.nonzero(mask)
  normed_entries, loc, scale = normalize_entries(
      cols, np.asarray(scores)[rows, cols], mask.shape[1], method)
  normed = np.zeros(mask.shape)
  normed[rows, cols] = normed_entries
  return normed, loc, scale


# ----------------------------------------------------------------------------
# The factorization.
# ----------------------------------------------------------------------------


class Data(NamedTuple):
  """Observed entries as COO arrays (padded entries have weight 0)."""
  rows: jax.Array     # [N] int32
  cols: jax.Array     # [N] int32
  values: jax.Array   # [N] f32
  weights: jax.Array  # [N] f32, 1 for real entries, 0 for padding


class DenseData(NamedTuple):
  """Training entries as a dense matrix (0 where not a training entry)."""
  values: jax.Array   # [M, T] f32
  mask: jax.Array     # [M, T] bool


class State(NamedTuple):
  """Optimizer state of a fit."""
  params: dict[str, jax.Array]
  opt_state: Any
  step: jax.Array


def _predict_entries(params, rows, cols, use_bias):
  u = params['model_factors'][rows]
  v = params['task_factors'][cols]
  pred = jnp.sum(u * v, axis=-1)
  if use_bias:
    pred = (pred + params['offset'] + params['model_bias'][rows]
            + params['task_bias'][cols])
  return pred


def objective(params: dict[str, jax.Array], data: Data | DenseData,
              num_train: jax.Array, config: SpaceConfig) -> jax.Array:
  """Negative log posterior x noise variance / num_train (see module doc).

  `data` may be a minibatch of the training entries: the data term is the
  weighted mean squared error over `data`, an unbiased estimate of the full
  data term / num_train.
  """
  if isinstance(data, DenseData):
    pred = params['model_factors'] @ params['task_factors'].T
    if config.use_bias:
      pred = (pred + params['offset'] + params['model_bias'][:, None]
              + params['task_bias'][None, :])
    err = jnp.where(data.mask, data.values - pred, 0.0)
    data_term = 0.5 * jnp.sum(err ** 2) / jnp.maximum(
        jnp.sum(data.mask, dtype=jnp.float32), 1.0)
  else:
    pred = _predict_entries(params, data.rows, data.cols, config.use_bias)
    err = data.values - pred
    data_term = 0.5 * jnp.sum(data.weights * err ** 2) / jnp.maximum(
        jnp.sum(data.weights), 1.0)
  reg = config.prior_precision * (jnp.sum(params['model_factors'] ** 2)
                                  + jnp.sum(params['task_factors'] ** 2))
  if config.use_bias:
    reg += config.bias_prior_precision * (
        jnp.sum(params['model_bias'] ** 2) + jnp.sum(params['task_bias'] ** 2))
  return data_term + 0.5 * reg / num_train


def make_optimizer(config: SpaceConfig) -> optax.GradientTransformation:
  """Adam at the configured learning rate."""
  return optax.adam(config.learning_rate)


def init_state(num_models: int, num_tasks: int, config: SpaceConfig,
               rng: jax.Array, offset: float = 0.0) -> State:
  """Initial parameters (small Gaussian factors, zero biases) + Adam state."""
  ku, kv = jax.random.split(rng)
  k = config.rank
  u = config.init_scale * jax.random.normal(ku, (num_models, k))
  v = config.init_scale * jax.random.normal(kv, (num_tasks, k))
  if config.nonneg:
    u, v = jnp.abs(u), jnp.abs(v)
  params = {
      'model_factors': u,
      'task_factors': v,
      'model_bias': jnp.zeros((num_models,)),
      'task_bias': jnp.zeros((num_tasks,)),
      'offset': jnp.asarray(offset if config.use_bias else 0.0, jnp.float32),
  }
  return State(params, make_optimizer(config).init(params),
               jnp.zeros((), jnp.int32))


def step(state: State, data: Data, rng: jax.Array, *, num_train: jax.Array,
         config: SpaceConfig) -> tuple[State, dict[str, jax.Array]]:
  """One optimizer step (pure; jit it with `config` static).

  Args:
    state: current State.
    data: the training entries (COO).
    rng: per-step key (used only when config.batch_size samples a minibatch).
    num_train: number of real training entries.
    config: SpaceConfig.

  Returns:
    (new state, metrics: loss, grad_norm, param_norm).
  """
  if config.batch_size is not None:
    n = data.rows.shape[0]
    idx = jax.random.randint(rng, (config.batch_size,), 0, n)
    data = jax.tree.map(lambda a: a[idx], data)
  loss, grads = jax.value_and_grad(objective)(state.params, data, num_train,
                                              config)
  updates, opt_state = make_optimizer(config).update(grads, state.opt_state,
                                                     state.params)
  params = optax.apply_updates(state.params, updates)
  if config.nonneg:
    params = dict(params,
                  model_factors=jnp.maximum(params['model_factors'], 0.0),
                  task_factors=jnp.maximum(params['task_factors'], 0.0))
  metrics = {'loss': loss, 'grad_norm': _tree_norm(grads),
             'param_norm': _tree_norm(params)}
  return State(params, opt_state, state.step + 1), metrics


def _tree_norm(tree):
  """Global L2 norm (optax.tree.norm, which older optax lacks)."""
  return jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(tree)))


@functools.partial(jax.jit, static_argnames=('config', 'num_steps'),
                   donate_argnums=(0,))
def _run_steps(state, data, rng, num_train, *, config, num_steps):
  """`num_steps` steps in one compiled loop; rng is folded with the step."""

  def body(_, carry):
    st, _ = carry
    st, metrics = step(st, data, jax.random.fold_in(rng, st.step),
                       num_train=num_train, config=config)
    return st, metrics['loss']

  return jax.lax.fori_loop(0, num_steps, body,
                           (state, jnp.zeros((), jnp.float32)))


@functools.partial(jax.jit, static_argnames=('use_bias',))
def _rmse(params, data, *, use_bias):
  err = data.values - _predict_entries(params, data.rows, data.cols, use_bias)
  return jnp.sqrt(jnp.sum(data.weights * err ** 2)
                  / jnp.maximum(jnp.sum(data.weights), 1.0))


def _check_dense(scores, mask):
  """Validates a dense matrix + mask; returns (scores, mask bool)."""
  scores = np.asarray(scores)
  if scores.ndim != 2:
    raise ValueError(f'scores must be a [models, tasks] matrix, got shape '
                     f'{scores.shape}.')
  if mask is None:
    mask = np.isfinite(scores)
  mask = np.asarray(mask)
  if mask.shape != scores.shape:
    raise ValueError(f'mask shape {mask.shape} != scores shape '
                     f'{scores.shape}.')
  if mask.dtype != np.bool_:
    raise ValueError(f'mask must be bool, got {mask.dtype}.')
  bad = mask & ~np.isfinite(scores)
  if bad.any():
    m, t = np.argwhere(bad)[0]
    raise ValueError(f'scores[{m}, {t}] = {scores[m, t]} is observed (mask '
                     f'True) but not finite; {bad.sum()} such entries.')
  return scores, mask


def _check_entries(rows, cols, values, shape, config):
  """Validates COO entries; returns (rows, cols, values float64)."""
  config.validate()
  rows, cols = np.asarray(rows), np.asarray(cols)
  values = np.asarray(values, np.float64)
  if not (rows.ndim == cols.ndim == values.ndim == 1
          and rows.size == cols.size == values.size):
    raise ValueError(f'rows, cols and values must be 1-D of equal length, '
                     f'got {rows.shape}, {cols.shape}, {values.shape}.')
  if len(shape) != 2:
    raise ValueError(f'shape must be (models, tasks), got {shape}.')
  for name, idx, size in (('rows', rows, shape[0]), ('cols', cols, shape[1])):
    if not np.issubdtype(idx.dtype, np.integer):
      raise ValueError(f'{name} must be integers, got {idx.dtype}.')
    out = (idx < 0) | (idx >= size)
    if out.any():
      i = int(np.flatnonzero(out)[0])
      raise ValueError(f'{name}[{i}] = {idx[i]} is outside [0, {size}).')
  bad = ~np.isfinite(values)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise ValueError(f'values[{i}] (row {rows[i]}, col {cols[i]}) = '
                     f'{values[i]} is not finite; {bad.sum()} such entries.')
  flat = rows.astype(np.int64) * shape[1] + cols
  uniq, counts = np.unique(flat, return_counts=True)
  if (counts > 1).any():
    r, c = divmod(int(uniq[np.argmax(counts > 1)]), shape[1])
    raise ValueError(f'entry (row {r}, col {c}) is given more than once; '
                     'resolve duplicates before fitting.')
  per_task = np.bincount(cols, minlength=shape[1])
  empty = np.flatnonzero(per_task == 0)
  if empty.size:
    raise ValueError(f'task column(s) {empty.tolist()} have no observed '
                     'scores (all NaN / masked); drop them before fitting.')
  if config.rank > min(shape):
    raise ValueError(f'rank={config.rank} exceeds min(models, tasks) = '
                     f'{min(shape)}.')
  unseen = int((np.bincount(rows, minlength=shape[0]) == 0).sum())
  if unseen:
    logging.info('transfer space: %d of %d models have no observed score; '
                 'they get prior (zero) factors.', unseen, shape[0])
  return rows, cols, values


def _split(rows, cols, shape, config, rng):
  """Seeded held-out subset of the observed entries, leaving every task and
  model with at least one training entry where it has any."""
  n = rows.size
  held = np.asarray(jax.random.uniform(rng, (n,))) < config.holdout_fraction
  for axis_idx, size in ((cols, shape[1]), (rows, shape[0])):
    train_count = np.bincount(axis_idx[~held], minlength=size)
    starved = np.flatnonzero((train_count == 0)
                             & (np.bincount(axis_idx, minlength=size) > 0))
    if starved.size:
      # Return the first held-out entry of each starved task/model.
      entries = np.flatnonzero(held & np.isin(axis_idx, starved))
      _, first = np.unique(axis_idx[entries], return_index=True)
      held[entries[first]] = False
  return held


def _padded_size(n, num_shards):
  """n rounded up to a coarse bucket (<= ~6% padding) that the shards
  divide, so similar-sized fits reuse one compiled step."""
  grain = max(256, 2 ** max(int(np.ceil(np.log2(max(n, 1)))) - 4, 0))
  grain *= num_shards
  return -(-max(n, 1) // grain) * grain


def _to_data(rows, cols, values, sharding, num_shards):
  n = rows.size
  pad = _padded_size(n, num_shards) - n
  arrays = Data(
      rows=np.pad(rows, (0, pad)).astype(np.int32),
      cols=np.pad(cols, (0, pad)).astype(np.int32),
      values=np.pad(values, (0, pad)).astype(np.float32),
      weights=np.pad(np.ones(n, np.float32), (0, pad)))
  return jax.tree.map(lambda a: jax.device_put(a, sharding), arrays)


def fit(scores: Any, mask: Optional[Any] = None,
        config: SpaceConfig = SpaceConfig(),
        return_info: bool = False):
  """Fits a transfer space to a partially observed score matrix.

  Args:
    scores: [M, T] raw scores (models x tasks); NaN or anything where the
      mask is False.
    mask: [M, T] bool, observed entries; default: where scores are finite.
    config: SpaceConfig.
    return_info: also return a FitInfo.

  Returns:
    TransferSpace (and FitInfo when return_info).

  Raises:
    ValueError: on shape mismatch, a non-bool mask, non-finite observed
      scores, a task with no observed score, or a bad config.
  """
  config.validate()
  scores, mask = _check_dense(scores, mask)
  rows, cols = np.nonzero(mask)
  return fit_entries(rows, cols, scores[rows, cols], scores.shape, config,
                     return_info=return_info)


def fit_entries(rows: Any, cols: Any, values: Any, shape: tuple[int, int],
                config: SpaceConfig = SpaceConfig(),
                return_info: bool = False):
  """Fits a transfer space to observed entries given in COO form.

  The same as `fit`, for histories too large or sparse for a dense matrix.

  Args:
    rows: [N] int model index of each observed score.
    cols: [N] int task index.
    values: [N] raw scores.
    shape: (M, T).
    config: SpaceConfig.
    return_info: also return a FitInfo.

  Returns:
    TransferSpace (and FitInfo when return_info).

  Raises:
    ValueError: on indices out of range, duplicate entries, non-finite
      scores, a task with no observed score, or a bad config.
  """
  rows, cols, raw = _check_entries(rows, cols, values, shape, config)
  num_models, num_tasks = shape
  values, loc, scale = normalize_entries(cols, raw, num_tasks,
                                         config.normalization)
  root = jax.random.key(config.seed)
  held = _split(rows, cols, shape, config, jax.random.fold_in(root, 0))

  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  entries = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
      'data'))
  train_coo = _to_data(rows[~held], cols[~held], values[~held], entries,
                       len(devices))
  heldout = _to_data(rows[held], cols[held], values[held], entries,
                     len(devices))
  num_train, num_held = int((~held).sum()), int(held.sum())
  layout = config.layout
  if layout == 'auto':
    dense_ok = (config.batch_size is None
                and num_models * num_tasks <= _DENSE_MAX_ENTRIES
                and rows.size >= 0.01 * num_models * num_tasks)
    layout = 'dense' if dense_ok else 'sparse'

  def dense_data(use):
    dense_values = np.zeros(shape, np.float32)
    dense_mask = np.zeros(shape, bool)
    dense_values[rows[use], cols[use]] = values[use]
    dense_mask[rows[use], cols[use]] = True
    # Models split over devices when they divide evenly (else replicated).
    spec = (jax.sharding.PartitionSpec('data', None)
            if num_models % len(devices) == 0 else
            jax.sharding.PartitionSpec())
    sharding = jax.sharding.NamedSharding(mesh, spec)
    return DenseData(jax.device_put(dense_values, sharding),
                     jax.device_put(dense_mask, sharding))

  train = dense_data(~held) if layout == 'dense' else train_coo
  logging.info('transfer space: %d models x %d tasks, %d observed (%d train, '
               '%d held out), rank %d, normalization %s, %s layout.',
               num_models, num_tasks, rows.size, num_train, num_held,
               config.rank, config.normalization, layout)

  def initial(use):
    offset = float(values[use].mean()) if config.use_bias else 0.0
    state = init_state(num_models, num_tasks, config,
                       jax.random.fold_in(root, 1), offset)
    return jax.device_put(state, jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))

  state = initial(~held)
  step_rng = jax.random.fold_in(root, 2)
  n_train = jnp.asarray(num_train, jnp.float32)

  eval_data = heldout if num_held else train_coo
  best = (np.inf, 0, jax.tree.map(jnp.copy, state.params))
  eval_steps, eval_rmse, losses = [], [], []
  since_best, steps = 0, 0
  while steps < config.max_steps:
    n = min(config.eval_every, config.max_steps - steps)
    state, loss = _run_steps(state, train, step_rng, n_train, config=config,
                             num_steps=n)
    steps += n
    rmse = float(_rmse(state.params, eval_data, use_bias=config.use_bias))
    eval_steps.append(steps)
    eval_rmse.append(rmse)
    losses.append(float(loss))
    if not np.isfinite(rmse):
      logging.warning('transfer space: held-out RMSE is %s at step %d; '
                      'stopping (lower the learning rate).', rmse, steps)
      break
    if rmse < best[0]:
      best = (rmse, steps, jax.tree.map(jnp.copy, state.params))
      since_best = 0
    else:
      since_best += 1
      if num_held and since_best >= config.patience:
        break
  _, best_step, params = best
  if best_step == 0:
    raise ValueError('transfer space fit diverged before the first '
                     f'evaluation (held-out RMSE {eval_rmse}); lower '
                     f'learning_rate={config.learning_rate}.')
  logging.info('transfer space: %d steps, best held-out RMSE %.4f at step '
               '%d.', steps, best[0], best_step)

  # Noise variance of a raw score: mean squared held-out residual, in raw
  # units (training residuals when nothing is held out).
  resid_data = heldout if num_held else train_coo
  pred = np.asarray(_predict_entries(params, resid_data.rows,
                                     resid_data.cols, config.use_bias))
  w = np.asarray(resid_data.weights)
  c = np.asarray(resid_data.cols)
  raw_resid = scale[c] * (np.asarray(resid_data.values) - pred)
  noise_var = float(np.sum(w * raw_resid ** 2) / max(w.sum(), 1.0))

  if num_held and config.refit_on_all:
    # The held-out entries chose the number of steps and the noise; the
    # final parameters use every observed score (with 10 models, a few
    # held-out scores visibly move a model's bias and so the K = 0 ranking).
    use = np.ones(rows.size, bool)
    all_data = (dense_data(use) if layout == 'dense' else
                _to_data(rows, cols, values, entries, len(devices)))
    state = initial(use)
    done = 0
    while done < best_step:
      n = min(config.eval_every, best_step - done)
      state, _ = _run_steps(state, all_data, step_rng,
                            jnp.asarray(rows.size, jnp.float32),
                            config=config, num_steps=n)
      done += n
    params = state.params

  link = np.zeros((0,))
  if config.normalization in ('rank', 'robust'):
    link = _population_link(cols, raw, loc, scale)

  task_w = np.asarray(_task_weights(params['task_factors'],
                                    params['task_bias'], params['offset'],
                                    jnp.asarray(loc, jnp.float32),
                                    jnp.asarray(scale, jnp.float32)),
                      np.float64)
  # The prior mean is the typical task: the mean normalized task (every task
  # weighs the same, as in popularity's mean z-score) at the mean raw
  # location and scale. The plain mean of the raw-domain w_t would weigh
  # each task's ranking by its raw scale. The covariance is the spread of
  # the w_t around this mean.
  mean_scale = float(np.mean(scale))
  prior_mean = np.concatenate([
      mean_scale * np.asarray(params['task_factors'], np.float64).mean(0),
      [np.mean(loc) + mean_scale * float(params['offset'])
       + mean_scale * float(np.mean(params['task_bias'])), mean_scale]])
  dev = task_w - prior_mean
  cov = (dev.T @ dev / (num_tasks - 1) if num_tasks > 1
         else np.zeros((task_w.shape[1],) * 2))
  cov = ((1 - config.prior_shrinkage) * cov
         + config.prior_shrinkage * np.diag(np.diag(cov)))

  space = TransferSpace(
      model_factors=params['model_factors'],
      task_factors=params['task_factors'],
      model_bias=params['model_bias'],
      task_bias=params['task_bias'],
      offset=params['offset'],
      task_loc=jnp.asarray(loc, jnp.float32),
      task_scale=jnp.asarray(scale, jnp.float32),
      prior_mean=jnp.asarray(prior_mean, jnp.float32),
      prior_cov=jnp.asarray(cov, jnp.float32),
      noise_var=jnp.asarray(noise_var, jnp.float32),
      link=jnp.asarray(link, jnp.float32),
      config=config)
  if not return_info:
    return space
  info = FitInfo(best_step=best_step, steps=steps,
                 eval_steps=np.asarray(eval_steps),
                 eval_rmse=np.asarray(eval_rmse),
                 train_loss=np.asarray(losses), num_train=num_train,
                 num_heldout=num_held, heldout_rows=rows[held],
                 heldout_cols=cols[held])
  return space, info


def _population_link(cols, raw, loc, scale, size=256):
  """Mean over tasks of the quantile function of (raw - loc) / scale."""
  probs = (np.arange(size) + 0.5) / size
  standardized = (raw - loc[cols]) / scale[cols]
  order = np.argsort(cols, kind='stable')
  groups = np.split(standardized[order],
                    np.cumsum(np.bincount(cols, minlength=len(loc)))[:-1])
  return np.mean([np.quantile(g, probs) for g in groups], axis=0)


def fit_space_from_history(history: Any,
                           config: SpaceConfig = SpaceConfig(),
                           return_info: bool = False):
  """`fit` on a History (anything with `scores` and `mask` [M, T])."""
  return fit(history.scores, history.mask, config, return_info=return_info)


# ----------------------------------------------------------------------------
# Fold-in and scoring (jitted, batched over tasks).
# ----------------------------------------------------------------------------


def _features(model_factors, model_bias):
  m = model_factors.shape[0]
  return jnp.concatenate([model_factors, jnp.ones((m, 1)),
                          model_bias[:, None]], axis=1)


def _task_weights(task_factors, task_bias, offset, loc, scale):
  intercept = loc + scale * (offset + task_bias)
  return jnp.concatenate([scale[:, None] * task_factors, intercept[:, None],
                          scale[:, None]], axis=1)


def _prior_chol(cov):
  """Lower Cholesky factor of cov + a small jitter (cov may be singular)."""
  d = cov.shape[0]
  jitter = 1e-6 * jnp.maximum(jnp.trace(cov) / d, 1e-12)
  return jnp.linalg.cholesky(cov + jitter * jnp.eye(d, dtype=cov.dtype))


def fold_in_posterior(gram: jax.Array, xtr: jax.Array, noise_var: jax.Array
                      ) -> tuple[jax.Array, jax.Array]:
  """Posterior of whitened task weights z (w = mean + chol @ z, z ~ N(0, I)).

  With X the whitened features (phi @ chol) of a task's observed models and
  r = y - phi @ mean its residuals from the prior mean prediction:
  A = I + X^T X / s2 and z | y ~ N(A^-1 X^T r / s2, A^-1). Working in the
  whitened coordinates keeps A well conditioned (eigenvalues >= 1) even when
  the prior covariance is singular (e.g. a task scale fixed at 1).

  Args:
    gram: [B, d, d] X^T X over each task's observed models.
    xtr: [B, d] X^T r.
    noise_var: [] s2.

  Returns:
    (z_mean [B, d], lower Cholesky factor of A [B, d, d]).
  """
  d = gram.shape[-1]
  chol_a = jnp.linalg.cholesky(jnp.eye(d) + gram / noise_var)
  z = jax.scipy.linalg.cho_solve((chol_a, True), xtr[..., None] / noise_var)
  return z[..., 0], chol_a


def apply_link(linear: jax.Array, link: jax.Array) -> jax.Array:
  """Maps linear predictions [B, M] through the population link (if any).

  Each row keeps its mean, standard deviation and ranking; the values become
  the population quantile function at each model's rank quantile, so the
  predicted scores have the shape of a typical task (e.g. the long tail of
  failed fine-tunes) rather than the rank-normal shape. Identity when `link`
  is empty (normalization 'none' or 'zscore').

  Args:
    linear: [B, M] linear predictions phi @ w.
    link: [L] quantile function values, or [0].

  Returns:
    [B, M] predictions.
  """
  if link.shape[0] == 0:
    return linear
  num_models = linear.shape[-1]
  ranks = jnp.argsort(jnp.argsort(linear, axis=-1), axis=-1)
  q = (ranks + 0.5) / num_models
  grid = (jnp.arange(link.shape[0]) + 0.5) / link.shape[0]
  shaped = jnp.interp(q, grid, link)
  shaped = shaped - shaped.mean(-1, keepdims=True)
  shaped = shaped / jnp.maximum(shaped.std(-1, keepdims=True), 1e-12)
  return (linear.mean(-1, keepdims=True)
          + linear.std(-1, keepdims=True) * shaped)


def _posterior_outputs(prior, z, chol_a, return_std, return_predicted=True,
                       return_cov=True):
  w = prior.mean + z @ prior.chol.T
  if return_cov:
    # cov_w = chol A^-1 chol^T = (chol_a^-1 chol^T)^T (chol_a^-1 chol^T).
    g = jax.scipy.linalg.solve_triangular(
        chol_a, jnp.broadcast_to(prior.chol.T, chol_a.shape), lower=True)
    cov = jnp.einsum('bki,bkj->bij', g, g)
  else:
    cov = jnp.zeros((z.shape[0], 0, 0))
  if return_predicted:
    predicted = apply_link(w @ prior.phi.T, prior.link)
  else:
    predicted = jnp.zeros((z.shape[0], 0))
  if return_std:
    # Var of phi_m . w = |chol_a^-1 phi_white_m|^2.
    h = jax.scipy.linalg.solve_triangular(
        chol_a, jnp.broadcast_to(prior.phi_white.T,
                                 (z.shape[0],) + prior.phi_white.T.shape),
        lower=True)
    std = jnp.sqrt(jnp.sum(h ** 2, axis=1) + prior.noise_var)
  else:
    std = jnp.zeros((z.shape[0], 0))
  return FoldIn(vectors=w, cov=cov, predicted=predicted, std=std)


def _fold_in_dense_impl(space, scores, mask):
  """Dense fold-in: every model is a potential observation (masked)."""
  prior = space._whitened()  # pylint: disable=protected-access
  mask = mask.astype(prior.phi.dtype)
  resid = (scores - (prior.phi @ prior.mean)[None, :]) * mask
  x = prior.phi_white
  gram = jnp.einsum('bm,mi,mj->bij', mask, x, x)
  z, chol_a = fold_in_posterior(gram, resid @ x, prior.noise_var)
  return _posterior_outputs(prior, z, chol_a, return_std=True)


def _fold_in_gather_impl(space, idx, scores, valid, *, return_std,
                         return_predicted, return_cov):
  """Gathered fold-in: K observed model indices per task."""
  prior = space._whitened()  # pylint: disable=protected-access
  valid = valid.astype(prior.phi.dtype)
  resid = (scores - (prior.phi @ prior.mean)[idx]) * valid
  x = prior.phi_white[idx] * valid[..., None]
  gram = jnp.einsum('bki,bkj->bij', x, x)
  z, chol_a = fold_in_posterior(gram, jnp.einsum('bki,bk->bi', x, resid),
                                prior.noise_var)
  return _posterior_outputs(prior, z, chol_a, return_std=return_std,
                            return_predicted=return_predicted,
                            return_cov=return_cov)


def _top_k_impl(space, w, *, k, chunk_size):
  """Top-k of w @ phi.T over models, chunk by chunk.

  Each chunk's [B, chunk_size] score tile (small enough to stay in cache)
  is reduced to its top-k at once; the per-chunk winners, [B, num_chunks *
  k], are merged by one final top-k (a running merge per chunk would double
  the per-row top-k overhead).
  """
  phi = space.model_features()
  m, d = phi.shape
  num_chunks = -(-m // chunk_size)
  pad = num_chunks * chunk_size - m
  chunks = jnp.pad(phi, ((0, pad), (0, 0))).reshape(num_chunks, chunk_size, d)
  b = w.shape[0]
  kc = min(k, chunk_size)

  def body(_, inputs):
    c, phi_c = inputs
    s = w @ phi_c.T
    ids = c * chunk_size + jnp.arange(chunk_size, dtype=jnp.int32)
    s = jnp.where(ids[None, :] < m, s, -jnp.inf)
    v, i = jax.lax.top_k(s, kc)
    return None, (v, ids[i])

  _, (vals, idx) = jax.lax.scan(
      body, None, (jnp.arange(num_chunks, dtype=jnp.int32), chunks))
  vals = jnp.moveaxis(vals, 0, 1).reshape(b, num_chunks * kc)
  idx = jnp.moveaxis(idx, 0, 1).reshape(b, num_chunks * kc)
  top_v, pos = jax.lax.top_k(vals, k)
  return top_v, jnp.take_along_axis(idx, pos, axis=1)


# Compiled entry points (module attributes, so a test can wrap the impls with
# a trace counter and check that repeated calls do not recompile).
_fold_in_dense = jax.jit(_fold_in_dense_impl)
_fold_in_gather = jax.jit(_fold_in_gather_impl,
                          static_argnames=('return_std', 'return_predicted',
                                           'return_cov'))
_score = jax.jit(lambda space, w: w @ space.model_features().T)
_top_k_chunked = jax.jit(_top_k_impl, static_argnames=('k', 'chunk_size'))
