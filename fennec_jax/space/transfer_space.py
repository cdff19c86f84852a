"""The transfer space: its configuration and the fitted pytree.

`SpaceConfig` says how to fit (see `factorization.fit`); `TransferSpace` holds
what a fit found, U, V, the biases, the per-task map back to raw scores and
the fold-in prior, and answers queries: the fit itself (`predict`), the
posterior of new tasks from a few observed scores (`fold_in`,
`fold_in_indices`) and the best models for task vectors (`top_k`), through
the kernels of `foldin`. It saves as a `checkpoint` directory.
"""

import dataclasses
import json
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import checkpoint
from fennec_jax.space import foldin
from fennec_jax.space import normalization as normalization_lib

LAYOUTS = ('auto', 'dense', 'sparse')
CHECKPOINT_KIND = 'TransferSpace'


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
    if self.normalization not in normalization_lib.NORMALIZATIONS:
      raise ValueError(f'SpaceConfig.normalization={self.normalization!r}; '
                       f'valid: {normalization_lib.NORMALIZATIONS}.')
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
    if self.layout not in LAYOUTS:
      raise ValueError(f'SpaceConfig.layout={self.layout!r}; valid: '
                       f'{LAYOUTS}.')
    if self.layout == 'dense' and self.batch_size is not None:
      raise ValueError('SpaceConfig.layout=\'dense\' is full batch; set '
                       f'batch_size=None (got {self.batch_size}) or use '
                       'layout=\'sparse\'.')
    if self.batch_size is not None and self.batch_size < 1:
      raise ValueError('SpaceConfig.batch_size must be None or >= 1, got '
                       f'{self.batch_size!r}.')



def check_observed(idx: Any, scores: Any, valid: Any, num_models: int,
                   names: tuple[str, str] = ('model_indices',
                                             'observed_scores')
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """K observed scores per task, checked and with invalid slots zeroed.

  Args:
    idx: [B, K] model indices.
    scores: [B, K] observed scores.
    valid: [B, K] which slots hold a score, or None for all.
    num_models: M, the number of models of the history.
    names: how the messages name `idx` and `scores`.

  Returns:
    (idx int32, scores float32, valid bool), all [B, K], 0 where not valid.

  Raises:
    ValueError: shapes differ, non-integer indices, a valid index outside
      [0, M) (a model the history does not know) or a valid score that is
      not finite, naming the first such entry.
  """
  idx_name, scores_name = names
  idx = np.asarray(idx)
  scores = np.asarray(scores, np.float32)
  if idx.ndim != 2 or scores.shape != idx.shape:
    raise ValueError(f'{idx_name} and {scores_name} must both be [B, K], got '
                     f'{idx.shape} and {scores.shape}.')
  if not np.issubdtype(idx.dtype, np.integer):
    raise ValueError(f'{idx_name} must be integers, got {idx.dtype}.')
  valid = (np.ones(idx.shape, bool) if valid is None
           else np.asarray(valid, bool))
  if valid.shape != idx.shape:
    raise ValueError(f'valid must be [B, K] = {idx.shape}, got '
                     f'{valid.shape}.')
  out = valid & ((idx < 0) | (idx >= num_models))
  if out.any():
    b, j = np.argwhere(out)[0]
    raise ValueError(f'{idx_name}[{b}, {j}] = {idx[b, j]} is outside '
                     f'[0, {num_models}): not a model of the history.')
  bad = valid & ~np.isfinite(scores)
  if bad.any():
    b, j = np.argwhere(bad)[0]
    raise ValueError(f'{scores_name}[{b}, {j}] = {scores[b, j]} is not '
                     'finite.')
  return (np.where(valid, idx, 0).astype(np.int32),
          np.where(valid, scores, 0.0).astype(np.float32), valid)


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
    return foldin.features(self.model_factors, self.model_bias)

  def task_vectors(self) -> jax.Array:
    """[T, d] raw-domain weight vectors w_t of the fitted tasks."""
    return foldin.task_weights(self.task_factors, self.task_bias,
                                self.offset, self.task_loc, self.task_scale)

  def predict_normalized(self) -> jax.Array:
    """[M, T] the fit in the normalized domain."""
    return (self.offset + self.model_bias[:, None] + self.task_bias[None, :]
            + self.model_factors @ self.task_factors.T)

  def predict(self) -> jax.Array:
    """[M, T] the fit mapped back to raw scores."""
    return self.task_loc + self.task_scale * self.predict_normalized()

  def fold_in(self, observed_scores: Any, observed_mask: Any) -> foldin.FoldIn:
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
    return foldin.fold_in_dense(self, jnp.asarray(scores),
                               jnp.asarray(mask))

  def fold_in_indices(self, model_indices: Any, observed_scores: Any,
                      valid: Optional[Any] = None,
                      return_std: bool = False,
                      return_predicted: bool = True,
                      return_cov: bool = True) -> foldin.FoldIn:
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
    if idx.ndim == 2 and idx.shape[1] > self.num_models:
      raise ValueError(f'K={idx.shape[1]} observed models per task, but the '
                       f'space has only {self.num_models} models.')
    idx, scores, valid = check_observed(idx, observed_scores, valid,
                                        self.num_models)
    return foldin.fold_in_gather(self, jnp.asarray(idx),
                                 jnp.asarray(scores), jnp.asarray(valid),
                                 return_std=return_std,
                                 return_predicted=return_predicted,
                                 return_cov=return_cov)

  def score(self, task_vectors: Any) -> jax.Array:
    """[B, M] raw scores of every model for task vectors [B, d]."""
    return foldin.score(self, jnp.asarray(task_vectors, jnp.float32))

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
    return foldin.top_k_chunked(self, w, k=int(k), chunk_size=chunk_size)

  def _arrays(self) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(self, f.name))
            for f in dataclasses.fields(self) if f.name != 'config'}

  def to_dict(self) -> dict[str, np.ndarray]:
    """Plain dict of numpy arrays, the config as a JSON string
    ('config_json'), for a caller's own checkpoint."""
    out = self._arrays()
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
    fields = json.loads(str(arrays['config_json']))
    known = [f.name for f in dataclasses.fields(SpaceConfig)]
    if not isinstance(fields, dict) or set(fields) - set(known):
      raise ValueError(f'TransferSpace config_json={fields!r}; expected an '
                       f'object with SpaceConfig fields {known}.')
    config = SpaceConfig(**fields)
    config.validate()
    return cls(config=config, **{n: jnp.asarray(arrays[n]) for n in names})

  def save(self, path: str) -> None:
    """Writes the space as a checkpoint directory (kind 'TransferSpace').

    Args:
      path: a directory that must not exist yet.

    Raises:
      ValueError: `path` exists.
    """
    checkpoint.save(path, CHECKPOINT_KIND, self._arrays(),
                    {'config': dataclasses.asdict(self.config)})

  @classmethod
  def load(cls, path: str) -> 'TransferSpace':
    """Reads a space written by `save`.

    Raises:
      checkpoint.CheckpointError: a missing, foreign or damaged checkpoint.
      ValueError: a checkpoint that lacks an array or holds a bad config.
    """
    arrays, meta = checkpoint.load(path, CHECKPOINT_KIND)
    return cls.from_dict({**arrays,
                          'config_json': json.dumps(meta.get('config'))})
