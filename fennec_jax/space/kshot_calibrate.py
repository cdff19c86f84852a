"""Calibrates the K-shot fold-in (`kshot`) by simulation on the history.

For each K the K-shot situation is simulated on the history's own tasks
(`simulate`): folds of tasks are held out, the space is refit without them,
K random observed scores of each held-out task are revealed (`num_draws`
draws) and every candidate source of `kshot` predicts the rest. `choose`
scores the candidates by the protocol's weighted Kendall tau (plus
`pearson_weight` x Pearson), blends the best of each source with the K = 0
prior on a grid that includes the prior alone, and sets the per-K std
factor. `calibrate` does both and returns the `kshot.KShotFoldIn`.
"""

from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import metrics
from fennec_jax import posterior as posterior_lib
from fennec_jax.space import factorization
from fennec_jax.space import kshot
from fennec_jax.space import transfer_space

@jax.jit
def _wtau_rows(pred, true, mask):
  """[..., N] weighted tau of prediction rows [..., N, M].

  One candidate at a time (`lax.map`): the O(M^2) pair matrices of every
  candidate at once would not fit in memory.
  """
  flat = pred.reshape((-1,) + pred.shape[-2:])
  out = jax.lax.map(lambda p: jax.vmap(metrics.weighted_tau)(p, true, mask),
                    flat)
  return out.reshape(pred.shape[:-1])


def _draws(mask_col: np.ndarray, k: int, num: int, rng) -> np.ndarray | None:
  """[num, k] revealed model indices (None if fewer than k + 3 observed)."""
  avail = np.flatnonzero(mask_col)
  if len(avail) < k + 3:
    return None
  return np.stack([rng.choice(avail, k, replace=False) for _ in range(num)])


def gp_grid(config: kshot.KShotConfig, with_meta: bool
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """([G] shrinkages, [G] nuggets, [G] metadata weights): every triple of
  the config's candidates (metadata weight 0 only if not with_meta)."""
  metas = config.gp_meta_weights if with_meta else (0.0,)
  grid = np.array([(a, n, w) for a in config.gp_shrinks
                   for n in config.gp_nuggets for w in metas], np.float32)
  return grid[:, 0], grid[:, 1], grid[:, 2]


def simulate(scores: np.ndarray, mask: np.ndarray,
             space_config: transfer_space.SpaceConfig, ks: Sequence[int],
             config: kshot.KShotConfig, fits: dict[int, Any] | None = None,
             meta: np.ndarray | None = None
             ) -> dict[int, dict[str, np.ndarray]]:
  """The K-shot situation on the history's own tasks, for each K.

  Args:
    scores, mask: [M, T] the history.
    space_config: how its space was fit (each fold is refit so).
    ks: the K values.
    config: the simulation.
    fits: a cache of the folds' refits (fold number -> (space, columns,
      gp columns)), filled here: a later call with the same history,
      space_config, config.seed and config.num_folds reuses them, so
      calibrating another K costs no refit.
    meta: [M, P] the models' metadata factor (`kshot_gp.feature_factor`),
      or None.

  Returns:
    {K: {'base', 'space', 'kernel', 'level', 'spread', 'var': stacked
    `Components` fields over the held-out rows (base broadcast to [N, M]),
    'true' [N, M] raw scores, 'eval' [N, M] bool (observed, not revealed)}}.
    A K no held-out task can serve is missing.
  """
  scores = np.asarray(scores, np.float64)
  mask = np.asarray(mask, bool)
  num_tasks = mask.shape[1]
  rng = np.random.default_rng(config.seed)
  folds = np.array_split(rng.permutation(num_tasks),
                         min(config.num_folds, num_tasks))
  mults = jnp.asarray(config.noise_mults, jnp.float32)
  temps = jnp.asarray(config.temperatures, jnp.float32)
  meta = np.zeros((mask.shape[0], 0), np.float32) if meta is None else meta
  grid = tuple(jnp.asarray(g, jnp.float32)
               for g in gp_grid(config, meta.shape[1] > 0))
  meta = jnp.asarray(meta, jnp.float32)
  out: dict[int, dict[str, list]] = {}
  for f, held in enumerate(folds):
    keep = np.ones(num_tasks, bool)
    keep[held] = False
    if keep.sum() < 2 or (mask[:, keep].sum(0) < 2).any():
      continue
    if fits is None or f not in fits:
      inner = factorization.fit(scores[:, keep], mask[:, keep], space_config)
      fit = (inner, jnp.asarray(kshot.completed_columns(
          inner, scores[:, keep], mask[:, keep])), jnp.asarray(
              kshot.completed_columns(inner, scores[:, keep], mask[:, keep],
                                      kshot.GP_NORMALIZATION)))
      if fits is not None:
        fits[f] = fit
    inner, cols, gp_cols = fits[f] if fits is not None else fit
    for j in held:
      for k in ks:
        draws = _draws(mask[:, j], k, config.num_draws, rng)
        if draws is None:
          continue
        y = scores[draws, j].astype(np.float32)
        comp = kshot.components(inner, cols, gp_cols, meta,
                                jnp.asarray(draws, jnp.int32), jnp.asarray(y),
                                jnp.ones(draws.shape, bool), mults, temps,
                                *grid)
        revealed = np.zeros((len(draws), mask.shape[0]), bool)
        np.put_along_axis(revealed, draws, True, axis=1)
        got = out.setdefault(k, {})
        n = len(draws)
        got.setdefault('base', []).append(
            np.broadcast_to(np.asarray(comp.base), (n, mask.shape[0])))
        for f in ('space', 'kernel', 'level', 'spread', 'var', 'gp'):
          got.setdefault(f, []).append(np.asarray(getattr(comp, f)))
        got.setdefault('true', []).append(
            np.broadcast_to(np.where(mask[:, j], scores[:, j], 0.0),
                            (n, mask.shape[0])))
        got.setdefault('eval', []).append(mask[:, j][None] & ~revealed)
        got.setdefault('link', []).append(np.broadcast_to(
            np.asarray(inner.link), (n, inner.link.shape[0])))
  axis = {'base': 0, 'true': 0, 'eval': 0, 'link': 0}
  return {k: {f: np.concatenate(v, axis=axis.get(f, 1)) for f, v in d.items()}
          for k, d in out.items()}


@jax.jit
def _pearson_rows(pred, true, mask, link):
  """[..., N] Pearson of the linked prediction rows [..., N, M]."""
  def one(p):
    return jax.vmap(metrics.pearson)(_link_rows(p, link), true, mask)
  flat = pred.reshape((-1,) + pred.shape[-2:])
  return jax.lax.map(one, flat).reshape(pred.shape[:-1])


@jax.jit
def _link_rows(linear, link):
  """`apply_link` of each row [N, M] with its own link [N, L]."""
  return jax.vmap(lambda r, l: posterior_lib.apply_link(r[None], l)[0])(
      linear, link)


# Candidates are scored in chunks of this many, so that the metric kernels
# compile once per simulation shape, whatever the number of candidates (a
# small chunk wastes little on padding).
_CHUNK = 4


def _scores(pred, sim, pearson_weight):
  """([C] objective, [C] weighted tau): means over the simulated rows.

  The objective is the weighted tau plus pearson_weight x Pearson.
  """
  pred = np.asarray(pred, np.float32)
  num = pred.shape[0]
  pad = -num % _CHUNK
  # Padded with copies of the first candidate (defined metrics, no NaN).
  pred = np.concatenate([pred, np.repeat(pred[:1], pad, axis=0)])
  true = jnp.asarray(sim['true'], jnp.float32)
  mask = jnp.asarray(sim['eval'])
  link = jnp.asarray(sim['link'])
  objective, wtau = [], []
  for start in range(0, len(pred), _CHUNK):
    chunk = jnp.asarray(pred[start:start + _CHUNK])
    v = np.nanmean(np.asarray(_wtau_rows(chunk, true, mask)), axis=-1)
    wtau.append(v)
    if pearson_weight:
      v = v + pearson_weight * np.nanmean(np.asarray(_pearson_rows(
          chunk, true, mask, link)), axis=-1)
    objective.append(v)
  return np.concatenate(objective)[:num], np.concatenate(wtau)[:num]


def choose(sim: dict[str, np.ndarray], config: kshot.KShotConfig,
           with_meta: bool = False
           ) -> tuple[kshot.KShotParams, dict[str, float]]:
  """The parameters at one K from its simulation (see the module docstring).

  with_meta: the simulation's gp candidates include metadata weights
  (`gp_grid`).
  """
  base = jnp.asarray(sim['base'])
  space = jnp.asarray(sim['space'])
  kernel = jnp.asarray(sim['kernel'])
  gp = jnp.asarray(sim['gp'])
  w = config.pearson_weight
  # The prior and every source alone, scored in one call.
  singles, single_wtau = _scores(
      jnp.concatenate([base[None], space, kernel, gp]), sim, w)
  prior = float(singles[0])
  space_only, kernel_only, gp_only = np.split(
      singles[1:], np.cumsum([len(space), len(kernel)]))

  def best_few(vals):
    return np.argsort(-np.nan_to_num(vals, nan=-2))[:config.finalists]

  # Finalists: the best few of each source alone. Their blends are searched
  # in two stages (half the candidates of every triple): every (a, b) of
  # space and kernel, then the best of those blended with gp by e:
  # base + (1 - e) (a (space - base) + b (kernel - base)) + e (gp - base).
  finalists = [(c, t, g) for c in best_few(space_only)
               for t in best_few(kernel_only) for g in best_few(gp_only)]
  pairs = [(a, b) for a in config.blends for b in config.blends
           if a + b <= 1 + 1e-9]
  cands = [(c, t, g, a, b, 0.0) for c, t, g in finalists for a, b in pairs]
  scores, wtaus = _scores(jnp.stack([
      kshot.combine(base, space[c], kernel[t], gp[g], a, b, e)
      for c, t, g, a, b, e in cands]), sim, w)
  c, t, g, a, b, _ = cands[int(np.nanargmax(scores))]
  more = [(c, t, g, (1 - e) * a, (1 - e) * b, e) for e in config.blends
          if e > 0]
  if more:
    cands += more
    got = _scores(jnp.stack([
        kshot.combine(base, space[c], kernel[t], gp[g], a, b, e)
        for c, t, g, a, b, e in more]), sim, w)
    scores = np.concatenate([scores, got[0]])
    wtaus = np.concatenate([wtaus, got[1]])
  # Ties (e.g. every blend 0 candidate) go to the first, smallest blend.
  best = int(np.nanargmax(scores))
  c, t, g, a, b, e = cands[best]
  c, t, g = int(c), int(t), int(g)
  chosen = kshot.combine(base, space[c], kernel[t], gp[g], a, b, e)
  shrinks, nuggets, metas = gp_grid(config, with_meta)
  # The std factor: the calibrated 68% interval covers 68% of held-out
  # scores (quantile of |error| / std on the simulated unobserved models).
  shape = chosen
  pred = np.asarray(_link_rows(
      jnp.asarray(sim['level'][c] + sim['spread'][c] * shape, jnp.float32),
      jnp.asarray(sim['link'])))
  err = np.abs(sim['true'] - pred) / np.sqrt(sim['var'][c])
  err = err[sim['eval']]
  std_scale = float(np.quantile(err, 0.6827)) if err.size else 1.0
  cover = {f'coverage_{int(q * 100)}': float(np.mean(
      err <= std_scale * z)) for q, z in ((0.68, 1.0), (0.95, 1.96))}
  params = kshot.KShotParams(
      noise_mult=float(config.noise_mults[c]),
      temperature=float(config.temperatures[t]), blend_space=float(a),
      blend_kernel=float(b), std_scale=std_scale,
      gp_shrink=float(shrinks[g]), gp_nugget=float(nuggets[g]),
      blend_gp=float(e), gp_meta=float(metas[g]))
  # Objective values ('prior', ..., 'chosen'), then plain weighted tau.
  wtau = (single_wtau[0], wtaus[best])
  report = {'prior': prior, 'space': float(space_only[c]),
            'kernel': float(kernel_only[t]), 'gp': float(gp_only[g]),
            'chosen': float(scores[best]),
            'wtau_prior': float(wtau[0]), 'wtau_chosen': float(wtau[1]),
            'rows': int(sim['true'].shape[0]), **cover}
  return params, report


def calibrate(space: transfer_space.TransferSpace, scores: Any, mask: Any,
              ks: Sequence[int],
              config: kshot.KShotConfig = kshot.KShotConfig(),
              fits: dict[int, Any] | None = None,
              meta: np.ndarray | None = None) -> kshot.KShotFoldIn:
  """Learns the K-shot fold-in of `space` on its own history.

  Args:
    space: the space fitted on (scores, mask).
    scores: [M, T] the history's raw scores.
    mask: [M, T] bool, observed.
    ks: the K values to calibrate (K >= 1); others use the nearest lower.
    config: the simulation.
    fits: the refits' cache (`simulate`).
    meta: [M, P] the models' metadata factor (`kshot_gp.feature_factor` of
      `model_metadata.model_features`), or None: it gives the conditional
      Gaussian a metadata term whose weight (0 included) is chosen on the
      simulation.

  Returns:
    The `kshot.KShotFoldIn`.
  """
  config.validate()
  ks = sorted({int(k) for k in ks if int(k) >= 1})
  if meta is not None and np.shape(meta)[0] != space.num_models:
    raise ValueError(f'the metadata factor has {np.shape(meta)[0]} rows for '
                     f'{space.num_models} models.')
  with_meta = meta is not None and meta.shape[1] > 0
  sims = simulate(scores, mask, space.config, ks, config, fits,
                  np.asarray(meta, np.float32) if with_meta else None)
  params, validation = {}, {}
  for k in ks:
    if k not in sims:
      logging.info('K-shot fold-in: no held-out task has K=%d + 3 observed '
                   'scores; K=%d uses the nearest lower K.', k, k)
      continue
    params[k], validation[k] = choose(sims[k], config, with_meta)
    logging.info('K-shot fold-in K=%d: %s; simulated wtau %s', k, params[k],
                 validation[k])
  return kshot.KShotFoldIn(
      columns=kshot.completed_columns(space, scores, mask), params=params,
      validation=validation, gp_columns=kshot.completed_columns(
          space, scores, mask, kshot.GP_NORMALIZATION),
      meta=np.asarray(meta, np.float32) if with_meta else None)
