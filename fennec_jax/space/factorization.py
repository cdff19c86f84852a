"""The masked factorization that fits a transfer space.

norm(scores)[m, t] ~ offset + model_bias[m] + task_bias[t] + U[m] . V[t] is
fitted by MAP (see the package docstring for the objective) with Adam, in
the shared training loop (`training`): a seeded fraction of the observed
entries is held out for early stopping and the noise estimate, then by
default the fit reruns on every entry for the chosen number of steps. The
training entries are visited as a sparse COO list (`Data`) or a masked dense
matrix (`DenseData`), split over the devices of a 1-D mesh. From the fitted
task weight vectors come the fold-in prior (their mean and shrunk
covariance), the noise variance (held-out residuals in raw units) and, for
the nonlinear normalizations, the population link.
"""

import functools
from typing import Any, NamedTuple, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fennec_jax import sharding
from fennec_jax.space import foldin
from fennec_jax.space import normalization as normalization_lib
from fennec_jax.space import training
from fennec_jax.space.transfer_space import SpaceConfig
from fennec_jax.space.transfer_space import TransferSpace

# The 'auto' layout goes dense only up to this many matrix entries.
DENSE_MAX_ENTRIES = 2 ** 28


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
  metrics = {'loss': loss, 'grad_norm': training.tree_norm(grads),
             'param_norm': training.tree_norm(params)}
  return State(params, opt_state, state.step + 1), metrics


# `num_steps` steps in one compiled loop, the state donated.
_run_steps = training.multi_step(step, static_argnames=('config',))


@functools.partial(jax.jit, static_argnames=('use_bias',))
def _rmse(params, data, *, use_bias):
  err = data.values - _predict_entries(params, data.rows, data.cols, use_bias)
  return jnp.sqrt(jnp.sum(data.weights * err ** 2)
                  / jnp.maximum(jnp.sum(data.weights), 1.0))


def check_dense(scores: Any, mask: Optional[Any]
                ) -> tuple[np.ndarray, np.ndarray]:
  """Validates a dense score matrix and its mask.

  Args:
    scores: [M, T] raw scores.
    mask: [M, T] bool observed entries, or None for the finite scores.

  Returns:
    (scores, mask) as NumPy arrays.

  Raises:
    ValueError: a shape mismatch, a non-bool mask or a non-finite observed
      score (naming the first).
  """
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


def check_entries(rows: Any, cols: Any, values: Any, shape: tuple[int, int],
                  config: SpaceConfig
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Validates COO entries and the config they are to be fitted with.

  Args:
    rows: [N] model indices.
    cols: [N] task indices.
    values: [N] raw scores.
    shape: (M, T).
    config: SpaceConfig (validated; its rank must fit the shape).

  Returns:
    (rows, cols, values as float64).

  Raises:
    ValueError: indices out of range, a non-finite score, a duplicate
      entry, a task with no entry, a rank above min(M, T) or a bad config,
      naming the first offender.
  """
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


def holdout_split(rows: np.ndarray, cols: np.ndarray,
                  shape: tuple[int, int], config: SpaceConfig,
                  rng: jax.Array) -> np.ndarray:
  """A seeded held-out subset of the observed entries.

  Each entry is held out with probability `config.holdout_fraction`; then
  every task and model that has entries keeps at least one for training.

  Args:
    rows: [N] model indices.
    cols: [N] task indices.
    shape: (M, T).
    config: SpaceConfig.
    rng: the key of the split.

  Returns:
    [N] bool, True where held out.
  """
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


def padded_size(n: int, num_shards: int) -> int:
  """n rounded up to a coarse bucket (<= ~6% padding) that the shards
  divide, so similar-sized fits reuse one compiled step."""
  grain = max(256, 2 ** max(int(np.ceil(np.log2(max(n, 1)))) - 4, 0))
  grain *= num_shards
  return -(-max(n, 1) // grain) * grain


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
  scores, mask = check_dense(scores, mask)
  rows, cols = np.nonzero(mask)
  return fit_entries(rows, cols, scores[rows, cols], scores.shape, config,
                     return_info=return_info)


def _layout(config: SpaceConfig, shape: tuple[int, int], num_observed: int
            ) -> str:
  """The layout 'auto' stands for (see `SpaceConfig.layout`)."""
  if config.layout != 'auto':
    return config.layout
  num_models, num_tasks = shape
  dense_ok = (config.batch_size is None
              and num_models * num_tasks <= DENSE_MAX_ENTRIES
              and num_observed >= 0.01 * num_models * num_tasks)
  return 'dense' if dense_ok else 'sparse'


def _to_data(rows, cols, values, mesh):
  """Padded COO entries split over the mesh (padding has weight 0)."""
  n = rows.size
  pad = padded_size(n, mesh.size) - n
  arrays = Data(
      rows=np.pad(rows, (0, pad)).astype(np.int32),
      cols=np.pad(cols, (0, pad)).astype(np.int32),
      values=np.pad(values, (0, pad)).astype(np.float32),
      weights=np.pad(np.ones(n, np.float32), (0, pad)))
  return sharding.put(arrays, sharding.split(mesh))


def _to_dense(rows, cols, values, shape, mesh):
  """The entries as a dense matrix + mask, models split over the mesh when
  they divide evenly (else replicated)."""
  dense_values = np.zeros(shape, np.float32)
  dense_mask = np.zeros(shape, bool)
  dense_values[rows, cols] = values
  dense_mask[rows, cols] = True
  where = (sharding.split(mesh) if shape[0] % mesh.size == 0
           else sharding.replicated(mesh))
  return sharding.put(DenseData(dense_values, dense_mask), where)


def _noise_variance(params, data, scale, use_bias):
  """Weighted mean squared residual of `data`, in raw units."""
  pred = np.asarray(_predict_entries(params, data.rows, data.cols, use_bias))
  w = np.asarray(data.weights)
  c = np.asarray(data.cols)
  raw_resid = scale[c] * (np.asarray(data.values) - pred)
  return float(np.sum(w * raw_resid ** 2) / max(w.sum(), 1.0))


def _fold_in_prior(params, loc, scale, config):
  """(mean [d], shrunk covariance [d, d]) of the fitted task weight vectors.

  The prior mean is the typical task: the mean normalized task (every task
  weighs the same, as in popularity's mean z-score) at the mean raw
  location and scale. The plain mean of the raw-domain w_t would weigh each
  task's ranking by its raw scale. The covariance is the spread of the w_t
  around this mean.
  """
  num_tasks = len(loc)
  task_w = np.asarray(foldin.task_weights(
      params['task_factors'], params['task_bias'], params['offset'],
      jnp.asarray(loc, jnp.float32), jnp.asarray(scale, jnp.float32)),
                      np.float64)
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
  return prior_mean, cov


def fit_entries(rows: Any, cols: Any, values: Any, shape: tuple[int, int],
                config: SpaceConfig = SpaceConfig(),
                return_info: bool = False):
  """Fits a transfer space to observed entries given in COO form.

  The same as `fit`, for histories too large or sparse for a dense matrix.
  The entries are split over all devices (`sharding.make_mesh()`).

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
      scores, a task with no observed score, a bad config, or a fit that
      diverged at once.
  """
  rows, cols, raw = check_entries(rows, cols, values, shape, config)
  num_models, num_tasks = shape
  values, loc, scale = normalization_lib.normalize_entries(
      cols, raw, num_tasks, config.normalization)
  root = jax.random.key(config.seed)
  held = holdout_split(rows, cols, shape, config, jax.random.fold_in(root, 0))

  mesh = sharding.make_mesh()
  train_coo = _to_data(rows[~held], cols[~held], values[~held], mesh)
  heldout = _to_data(rows[held], cols[held], values[held], mesh)
  num_train, num_held = int((~held).sum()), int(held.sum())
  layout = _layout(config, shape, rows.size)

  def training_data(use):
    if layout == 'dense':
      return _to_dense(rows[use], cols[use], values[use], shape, mesh)
    return _to_data(rows[use], cols[use], values[use], mesh)

  train = training_data(~held) if layout == 'dense' else train_coo
  logging.info('transfer space: %d models x %d tasks, %d observed (%d train, '
               '%d held out), rank %d, normalization %s, %s layout.',
               num_models, num_tasks, rows.size, num_train, num_held,
               config.rank, config.normalization, layout)

  def start(use):
    offset = float(values[use].mean()) if config.use_bias else 0.0
    state = init_state(num_models, num_tasks, config,
                       jax.random.fold_in(root, 1), offset)
    return sharding.put_replicated(state, mesh)

  step_rng = jax.random.fold_in(root, 2)

  def advance_on(data, num_entries):
    num = jnp.asarray(num_entries, jnp.float32)
    return lambda state, n: _run_steps(state, data, step_rng, num_train=num,
                                       config=config, num_steps=n)

  eval_data = heldout if num_held else train_coo
  result = training.train(
      start(~held), advance_on(train, num_train),
      lambda params: _rmse(params, eval_data, use_bias=config.use_bias),
      training.LoopConfig(config.max_steps, config.eval_every,
                          config.patience, early_stopping=bool(num_held)),
      name='transfer space', hint=f'lower learning_rate='
      f'{config.learning_rate}')
  params = result.params
  # Noise variance of a raw score: mean squared held-out residual, in raw
  # units (training residuals when nothing is held out).
  noise_var = _noise_variance(params, eval_data, scale, config.use_bias)

  if num_held and config.refit_on_all:
    # The held-out entries chose the number of steps and the noise; the
    # final parameters use every observed score (with 10 models, a few
    # held-out scores visibly move a model's bias and so the K = 0 ranking).
    use = np.ones(rows.size, bool)
    params = training.refit(start(use),
                            advance_on(training_data(use), rows.size),
                            result.best_step, config.eval_every).params

  link = np.zeros((0,))
  if config.normalization in ('rank', 'robust'):
    link = normalization_lib.population_link(cols, raw, loc, scale)
  prior_mean, prior_cov = _fold_in_prior(params, loc, scale, config)
  space = TransferSpace(
      model_factors=params['model_factors'],
      task_factors=params['task_factors'],
      model_bias=params['model_bias'],
      task_bias=params['task_bias'],
      offset=params['offset'],
      task_loc=jnp.asarray(loc, jnp.float32),
      task_scale=jnp.asarray(scale, jnp.float32),
      prior_mean=jnp.asarray(prior_mean, jnp.float32),
      prior_cov=jnp.asarray(prior_cov, jnp.float32),
      noise_var=jnp.asarray(noise_var, jnp.float32),
      link=jnp.asarray(link, jnp.float32),
      config=config)
  if not return_info:
    return space
  info = FitInfo(best_step=result.best_step, steps=result.steps,
                 eval_steps=result.eval_steps, eval_rmse=result.eval_losses,
                 train_loss=result.train_losses, num_train=num_train,
                 num_heldout=num_held, heldout_rows=rows[held],
                 heldout_cols=cols[held])
  return space, info


def fit_space_from_history(history: Any,
                           config: SpaceConfig = SpaceConfig(),
                           return_info: bool = False):
  """`fit` on a History (anything with `scores` and `mask` [M, T])."""
  return fit(history.scores, history.mask, config, return_info=return_info)
