"""A K-shot fold-in learned on the history: how far to trust K observed scores.

The space's Bayesian fold-in (`foldin`) trusts K observed raw scores with
one noise variance in raw units, although tasks differ in level and scale by
orders of magnitude, and nothing checks that the update helps. This module
learns, per fitted history and per K, how to use K observed scores of a new
task, by simulating the K-shot situation on the history's own tasks.

Prediction for a new task with K observed (model, raw score) pairs:

* `base`: the space's K = 0 prior prediction phi . w0 (the mean task).
* `space`: the space's Bayesian fold-in with its noise variance multiplied
  by `noise_mult` (large = trust the scores less). The K scores are first
  softly winsorized (`robust_scores`): a score many typical task spreads
  away from the others (a wrong unit, a failed run) cannot swing the
  posterior; it is logged.
* `kernel`: which historical tasks the new one resembles: each historical
  task t gets the Kendall concordance r_t of its (completed, normalized)
  column with the K observed scores over the observed models' pairs, and
  weight softmax(temperature * r); the prediction is the weighted mean of
  the columns. Concordance is invariant to the new task's unknown level and
  scale and ignores how far an outlier lies; with K < 2 (or all K scores
  equal) every r_t is 0 and the kernel is the mean task.
* `gp`: the conditional Gaussian of `kshot_gp`: the history's rank-normalized
  columns as draws of a Gaussian over the models (mean, model-model
  covariance shrunk by `gp_shrink` towards its diagonal), conditioned on
  the K scores (nugget `gp_nugget`); it uses the correlations between
  individual models that the rank-k space smooths away.

Each is standardized over the models and they are combined as
`base + blend_space (space - base) + blend_kernel (kernel - base) +
blend_gp (gp - base)`, so all blend weights 0 give exactly the K = 0
ranking. The combination gets the
level and spread of the space's fold-in in raw units (only the ranking and
the linear trend are compared with the truth), then goes through the
population link as the K = 0 prediction does. Its std is the fold-in's
predictive std times a per-K factor `std_scale`.

`kshot_calibrate.calibrate` chooses `noise_mult`, `temperature`, the gp
shrinkage and nugget, the three blend weights and `std_scale` for each K: it
holds out folds of the history's tasks, refits the space without them,
reveals K random observed scores of each held-out task (`num_draws` draws)
and scores the prediction of the rest by weighted Kendall tau (the
protocol's metric). Each source is first scored alone for each of its
candidates; the best few of each (`finalists`) are then blended on a grid
of weights that includes (0, 0, 0), the K = 0 prior, so where no source
helps on the history the method stays with the prior. `std_scale` makes the
simulated 68% intervals cover 68% of the held-out scores. The simulation
runs once per fitted history; a prediction is a few batched matmuls
(`predict`).

A fitted `Fennec` uses it through its space: `kshot_calibrate.calibrate(
fennec.space, history.scores, history.mask, ks)` once, then
`predict_observed(fennec.space, fold, observed)` for [B, M] observed
scores (NaN elsewhere).
"""

import dataclasses
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import posterior as posterior_lib
from fennec_jax.space import foldin
from fennec_jax.space import kshot_gp
from fennec_jax.space import normalization as normalization_lib
from fennec_jax.space import transfer_space

# Soft winsorizing of the K observed scores: c tanh(z / c) of their robust z
# (median, MAD); wider than the space's own clip, as it only guards against
# scores far outside the others.
SCORE_CLIP = 3.0
# A |robust z| beyond this is reported as an outlier in a log line.
OUTLIER_Z = 6.0
# The conditional Gaussian's columns: rank scores (van der Waerden) keep the
# top of each task's ranking spread out, where the robust normalization's
# soft clip compresses it (and the protocol's weighted tau looks).
GP_NORMALIZATION = 'rank'


@dataclasses.dataclass(frozen=True)
class KShotConfig:
  """How `kshot_calibrate` simulates the K-shot situation and what it searches.

  Attributes:
    num_folds: task folds held out in turn (capped at the number of tasks;
      equal to it is leave one task out).
    num_draws: random draws of the K revealed models per held-out task.
    noise_mults: candidate multipliers of the space's noise variance.
    temperatures: candidate temperatures of the task-similarity kernel.
    gp_shrinks: candidate shrinkages of the conditional Gaussian's
      covariance towards its diagonal (`kshot_gp`).
    gp_nuggets: candidate nuggets of the conditional Gaussian.
    gp_meta_weights: candidate weights of its metadata term (only 0 is
      tried without model metadata).
    blends: candidate blend weights: of space and kernel (pairs with sum
      <= 1), then of gp against the best pair (`kshot_calibrate.choose`).
    finalists: how many of the best noise multipliers and of the best
      temperatures (each source alone) are blended.
    pearson_weight: the objective is the mean weighted tau plus this times
      the mean Pearson of the simulated predictions.
    seed: seed of the folds and draws.
  """
  num_folds: int = 16
  num_draws: int = 24
  noise_mults: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
  temperatures: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)
  gp_shrinks: tuple[float, ...] = (0.1, 0.3)
  gp_nuggets: tuple[float, ...] = (0.3, 1.0, 3.0)
  gp_meta_weights: tuple[float, ...] = (0.0, 0.3, 1.0, 3.0)
  blends: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
  finalists: int = 1
  pearson_weight: float = 0.5
  seed: int = 0

  def validate(self) -> None:
    """Raises ValueError naming the bad field."""
    if self.num_folds < 2:
      raise ValueError(f'KShotConfig.num_folds must be >= 2, got '
                       f'{self.num_folds!r}.')
    if self.finalists < 1:
      raise ValueError(f'KShotConfig.finalists must be >= 1, got '
                       f'{self.finalists!r}.')
    if self.num_draws < 1:
      raise ValueError(f'KShotConfig.num_draws must be >= 1, got '
                       f'{self.num_draws!r}.')
    for name in ('noise_mults', 'temperatures', 'gp_nuggets', 'blends',
                 'gp_shrinks', 'gp_meta_weights'):
      vals = np.asarray(getattr(self, name), np.float64)
      if not vals.size or not np.isfinite(vals).all() or (vals < 0).any():
        raise ValueError(f'KShotConfig.{name} must be non-empty, finite and '
                         f'>= 0, got {getattr(self, name)!r}.')
    if max(self.gp_shrinks) > 1:
      raise ValueError(f'KShotConfig.gp_shrinks must be in [0, 1], got '
                       f'{self.gp_shrinks!r}.')
    if 0.0 not in self.blends:
      raise ValueError('KShotConfig.blends must contain 0 (the K = 0 prior), '
                       f'got {self.blends!r}.')


class KShotParams(NamedTuple):
  """What the fold-in uses at one K (scalars, or [B] rows of a batch)."""
  noise_mult: Any
  temperature: Any
  blend_space: Any
  blend_kernel: Any
  std_scale: Any
  gp_shrink: Any = 0.0
  gp_nugget: Any = 1.0
  blend_gp: Any = 0.0
  gp_meta: Any = 0.0


PRIOR = KShotParams(noise_mult=1.0, temperature=0.0, blend_space=0.0,
                    blend_kernel=0.0, std_scale=1.0)


@dataclasses.dataclass(frozen=True)
class KShotFoldIn:
  """A calibrated K-shot fold-in of one fitted space.

  Attributes:
    columns: [M, T] the history's normalized scores, completed by the space
      where unobserved (the kernel's task columns).
    gp_columns: [M, T] the same with rank normalization (`gp`'s columns).
    params: {K: KShotParams} chosen by `kshot_calibrate.calibrate` for
      each simulated K.
    validation: {K: dict} the simulation's mean weighted tau of the prior,
      of each source alone and of the chosen combination, and the coverage
      of the calibrated 68% / 95% intervals.
    meta: [M, P] the models' metadata factor (`kshot_gp.feature_factor`),
      None without metadata.
  """
  columns: np.ndarray
  params: dict[int, KShotParams]
  validation: dict[int, dict[str, float]]
  gp_columns: np.ndarray | None = None
  meta: np.ndarray | None = None

  def meta_factor(self) -> np.ndarray:
    """[M, P] `meta`, [M, 0] without metadata."""
    if self.meta is None:
      return np.zeros((self.columns.shape[0], 0), np.float32)
    return np.asarray(self.meta, np.float32)

  def params_for(self, k: int) -> KShotParams:
    """The parameters of the largest calibrated K <= k (the prior if none)."""
    ks = [c for c in self.params if c <= k]
    return self.params[max(ks)] if ks else PRIOR


def completed_columns(space: transfer_space.TransferSpace, scores: Any,
                      mask: Any, normalization: str | None = None
                      ) -> np.ndarray:
  """[M, T] normalized history scores, the space's fit where unobserved.

  `normalization` defaults to the space's own.
  """
  mask = np.asarray(mask, bool)
  normed, _, _ = normalization_lib.normalize(
      np.where(mask, np.asarray(scores, np.float64), 0.0), mask,
      normalization or space.config.normalization)
  fit = np.asarray(space.predict_normalized(), np.float64)
  return np.where(mask, normed, fit).astype(np.float32)


def robust_scores(scores: jax.Array, valid: jax.Array, expected: jax.Array,
                  floor: jax.Array) -> jax.Array:
  """[B, K] scores softly winsorized around the row's level (c = SCORE_CLIP).

  The residuals r = y - expected (the prior's prediction of each observed
  model) have the row's unknown level as their median; z = (r - median) /
  s with s = max(1.4826 MAD(r), floor), floor the spread of a typical
  task's scores over the models, becomes c tanh(z / c): unchanged in the
  bulk, bounded far out, order kept. So only a score far outside what any
  task of the history spreads over is pulled in (a wrong unit, a failed
  run). Rows with fewer than 3 valid scores are unchanged.
  """
  resid = scores - expected
  med, mad = _median_mad(resid, valid)
  spread = jnp.maximum(mad, floor)
  ok = (valid.sum(-1, keepdims=True) >= 3) & (spread > 0)
  safe = jnp.where(ok, spread, 1.0)
  z = (resid - med) / safe
  clipped = expected + med + safe * SCORE_CLIP * jnp.tanh(z / SCORE_CLIP)
  return jnp.where(ok & valid, clipped, scores)


def _median_mad(scores, valid):
  """[B, 1] median and 1.4826 MAD of each row's valid scores."""
  def median(x):
    srt = jnp.sort(jnp.where(valid, x, jnp.inf), axis=-1)
    n = valid.sum(-1)
    lo = jnp.take_along_axis(srt, jnp.maximum((n - 1) // 2, 0)[:, None], 1)
    hi = jnp.take_along_axis(srt, jnp.maximum(n // 2, 0)[:, None], 1)
    return jnp.where(n[:, None] > 0, 0.5 * (lo + hi), 0.0)
  med = median(scores)
  mad = median(jnp.abs(scores - med))
  # pylint: disable-next=protected-access
  return med, normalization_lib._MAD_TO_STD * mad


def _standardize(x: jax.Array) -> jax.Array:
  """Rows minus their mean over the models, over their std (0 if constant)."""
  x = x - x.mean(-1, keepdims=True)
  std = x.std(-1, keepdims=True)
  return x / jnp.where(std > 0, std, 1.0)


class Components(NamedTuple):
  """The sources of a K-shot prediction (see the module docstring).

  Attributes:
    base: [M] the standardized K = 0 prior prediction.
    space: [C, B, M] the standardized fold-in for each noise multiplier.
    kernel: [R, B, M] the standardized kernel for each temperature.
    gp: [G, B, M] the standardized conditional Gaussian for each (shrinkage,
      nugget, metadata weight) triple.
    level: [C, B, 1] the fold-in's mean raw prediction over the models.
    spread: [C, B, 1] its std over the models.
    var: [C, B, M] its predictive variance.
  """
  base: jax.Array
  space: jax.Array
  kernel: jax.Array
  level: jax.Array
  spread: jax.Array
  var: jax.Array
  gp: jax.Array


def concordance(columns: jax.Array, idx: jax.Array, scores: jax.Array,
                valid: jax.Array) -> jax.Array:
  """[B, T] Kendall concordance of each column with each row's K scores.

  tau_a over the valid pairs of observed models: sum sgn(y_i - y_j)
  sgn(c_i - c_j) / number of pairs; 0 with fewer than 2 valid scores.
  """
  sel = columns[idx]  # [B, K, T]
  pair = (valid[:, :, None] & valid[:, None, :]).astype(columns.dtype)
  sy = jnp.sign(scores[:, :, None] - scores[:, None, :]) * pair
  sc = jnp.sign(sel[:, :, None, :] - sel[:, None, :, :])
  num = jnp.einsum('bij,bijt->bt', sy, sc)
  return num / jnp.maximum(pair.sum((1, 2)) - valid.sum(-1), 1)[:, None]


def components_impl(space: Any, columns: jax.Array, gp_columns: jax.Array,
                    meta: jax.Array, idx: jax.Array, scores: jax.Array,
                    valid: jax.Array, noise_mults: jax.Array,
                    temperatures: jax.Array, gp_shrinks: jax.Array,
                    gp_nuggets: jax.Array, gp_metas: jax.Array
                    ) -> Components:
  """The sources for a batch of B tasks (K observed each, padded by valid).

  meta is the [M, P] metadata factor (P = 0: none); gp_shrinks, gp_nuggets
  and gp_metas are [G] triples.
  """
  prior = foldin.whitened_prior(space)
  v = valid.astype(prior.phi.dtype)
  base_raw = prior.phi @ prior.mean
  y = robust_scores(scores, valid, base_raw[idx], base_raw.std())
  x = prior.phi_white[idx] * v[..., None]
  resid = (y - base_raw[idx]) * v
  gram = jnp.einsum('bki,bkj->bij', x, x)
  xtr = jnp.einsum('bki,bk->bi', x, resid)

  def fold(mult):
    noise = prior.noise_var * mult
    z, chol_a = posterior_lib.fold_in_posterior(gram, xtr, noise)
    w = prior.mean + z @ prior.chol.T
    raw = w @ prior.phi.T
    h = jax.scipy.linalg.solve_triangular(
        chol_a, jnp.broadcast_to(prior.phi_white.T,
                                 (idx.shape[0],) + prior.phi_white.T.shape),
        lower=True)
    var = jnp.sum(h ** 2, axis=1) + noise
    return (_standardize(raw), raw.mean(-1, keepdims=True),
            raw.std(-1, keepdims=True), var)

  space_std, level, spread, var = jax.vmap(fold)(noise_mults)
  r = concordance(columns, idx, y, valid)

  def kernel(temp):
    weights = jax.nn.softmax(temp * r, axis=-1)
    return _standardize(weights @ columns.T)

  stats = kshot_gp.stats(gp_columns, meta)

  def gp(shrink, nugget, meta_weight):
    return _standardize(kshot_gp.condition(stats, idx, scores, valid, shrink,
                                           nugget, meta_weight))

  return Components(base=_standardize(base_raw[None])[0], space=space_std,
                    kernel=jax.vmap(kernel)(temperatures), level=level,
                    spread=spread, var=var,
                    gp=jax.vmap(gp)(gp_shrinks, gp_nuggets, gp_metas))


components = jax.jit(components_impl)


@jax.jit
def combine(base: jax.Array, space: jax.Array, kernel: jax.Array,
            gp: jax.Array, blend_space: Any, blend_kernel: Any,
            blend_gp: Any) -> jax.Array:
  """[..., M] base + a (space - base) + b (kernel - base) + g (gp - base),
  standardized."""
  a = jnp.asarray(blend_space)[..., None]
  b = jnp.asarray(blend_kernel)[..., None]
  g = jnp.asarray(blend_gp)[..., None]
  return _standardize(base + a * (space - base) + b * (kernel - base)
                      + g * (gp - base))


@jax.jit
def _predict_rows(space, columns, gp_columns, meta, idx, scores, valid,
                  noise_mult, temperature, blend_space, blend_kernel,
                  std_scale, gp_shrink, gp_nugget, blend_gp, gp_meta):
  """Per-row parameters [B]: predicted and std [B, M] in raw units."""
  def one(i, s, ok, mult, temp, a, b, scale, shrink, nugget, g, w):
    comp = components_impl(space, columns, gp_columns, meta, i[None],
                           s[None], ok[None], mult[None], temp[None],
                           shrink[None], nugget[None], w[None])
    shape = combine(comp.base, comp.space[0, 0], comp.kernel[0, 0],
                    comp.gp[0, 0], a, b, g)
    linear = comp.level[0, 0] + comp.spread[0, 0] * shape
    return linear, scale * jnp.sqrt(comp.var[0, 0])
  linear, std = jax.vmap(one)(idx, scores, valid, noise_mult, temperature,
                              blend_space, blend_kernel, std_scale, gp_shrink,
                              gp_nugget, blend_gp, gp_meta)
  return posterior_lib.apply_link(linear, space.link), std


def predict(space: transfer_space.TransferSpace, kshot: KShotFoldIn,
            idx: np.ndarray, scores: np.ndarray, valid: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
  """Predicted raw scores and stds [B, M] of new tasks from K scores each.

  Each row uses the parameters of its own K (`KShotFoldIn.params_for`); a
  row with no valid score gets the space's K = 0 prediction.

  Args:
    space: the fitted space.
    kshot: its calibration (`kshot_calibrate.calibrate`).
    idx: [B, K] observed model indices.
    scores: [B, K] their raw scores (finite where valid).
    valid: [B, K] bool.

  Returns:
    (predicted [B, M], std [B, M]).

  Raises:
    ValueError: shapes differ, a valid index outside [0, M) (a model the
      history does not know) or a valid score that is not finite.
  """
  idx, scores, valid = transfer_space.check_observed(
      idx, scores, valid, space.num_models, names=('idx', 'scores'))
  _log_outliers(space, idx, scores, valid)
  rows = [kshot.params_for(int(k)) for k in valid.sum(1)]
  p = {f: np.asarray([getattr(r, f) for r in rows], np.float32)
       for f in KShotParams._fields}
  b = len(rows)
  size = posterior_lib.batch_bucket(b)

  def pad(a):
    return jnp.asarray(np.pad(a, [(0, size - b)] + [(0, 0)] * (a.ndim - 1)))

  gp_columns = (kshot.columns if kshot.gp_columns is None
                else kshot.gp_columns)
  pred, std = _predict_rows(space, jnp.asarray(kshot.columns),
                            jnp.asarray(gp_columns),
                            jnp.asarray(kshot.meta_factor()), pad(idx),
                            pad(scores), pad(valid),
                            *(pad(p[f]) for f in KShotParams._fields))
  return np.asarray(pred)[:b], np.asarray(std)[:b]


def _log_outliers(space, idx, scores, valid) -> None:
  """Logs observed scores far from the others (they are winsorized)."""
  base = np.asarray(space.model_features() @ space.prior_mean)
  resid = scores - base[idx]
  med, mad = (np.asarray(a) for a in _median_mad(jnp.asarray(resid),
                                                 jnp.asarray(valid)))
  z = np.abs(resid - med) / np.maximum(mad, base.std())
  far = valid & (valid.sum(1, keepdims=True) >= 3) & (z > OUTLIER_Z)
  if far.any():
    b, k = np.argwhere(far)[0]
    logging.warning('K-shot fold-in: %d observed score(s) lie over %g '
                    'typical task spreads from their task\'s other scores '
                    '(e.g. row %d, score %g); they are softly winsorized.',
                    int(far.sum()),
                    OUTLIER_Z, b, scores[b, k])


def gather_observed(observed: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(idx, scores, valid) [B, K_max] from [B, M] scores with NaN elsewhere."""
  observed = np.asarray(observed, np.float64)
  ok = ~np.isnan(observed)
  k = max(int(ok.sum(1).max()) if ok.size else 0, 1)
  idx = np.zeros((len(observed), k), np.int32)
  scores = np.zeros((len(observed), k), np.float32)
  valid = np.zeros((len(observed), k), bool)
  for b, row in enumerate(ok):
    i = np.flatnonzero(row)
    idx[b, :len(i)] = i
    scores[b, :len(i)] = observed[b, i]
    valid[b, :len(i)] = True
  return idx, scores, valid


def predict_observed(space: transfer_space.TransferSpace, kshot: KShotFoldIn,
                     observed: Any) -> tuple[np.ndarray, np.ndarray]:
  """`predict` from [B, M] observed raw scores, NaN where unobserved.

  Rows with no observed score get the space's own K = 0 prediction (its
  `fold_in` with nothing observed), unchanged.

  Raises:
    ValueError: observed is not [B, M] or holds an infinite score.
  """
  observed = np.asarray(observed, np.float64)
  if observed.ndim != 2 or observed.shape[1] != space.num_models:
    raise ValueError(f'observed must be [B, {space.num_models}] (NaN where '
                     f'unobserved), got shape {observed.shape}.')
  if np.isinf(observed).any():
    b, m = np.argwhere(np.isinf(observed))[0]
    raise ValueError(f'observed[{b}, {m}] = {observed[b, m]} is not finite.')
  seen = ~np.isnan(observed)
  fold = space.fold_in(np.where(seen, observed, 0.0), seen)
  pred, std = np.array(fold.predicted), np.array(fold.std)
  rows = np.flatnonzero(seen.any(1))
  if len(rows):
    pred[rows], std[rows] = predict(space, kshot,
                                    *gather_observed(observed[rows]))
  return pred, std
