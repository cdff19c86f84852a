"""The K-shot fold-in as `Fennec` uses it: lazily calibrated, cached per K.

`kshot_calibrate.calibrate` refits the space once per held-out fold, too
costly for `Fennec.fit` and wasted if the recommender never sees observed
scores. A `LazyFoldIn` calibrates each K (`calibrated_k`: a power of two,
so a few calibrations cover every K) the first time a task with that many
scores arrives, keeps the parameters and the folds' refits (so the next K
costs no refit), and saves the parameters with the checkpoint
(`to_arrays` / `from_arrays`): a loaded `Fennec` does not recalibrate.
`sparse_observed` parses the observed scores `Fennec.recommend` accepts.
"""

from collections.abc import Mapping
import dataclasses
from typing import Any, Sequence

import numpy as np

from fennec_jax import posterior as posterior_lib
from fennec_jax.space import kshot
from fennec_jax.space import kshot_calibrate
from fennec_jax.space import transfer_space

# The validation numbers saved with a calibration, in this order.
VALIDATION_KEYS = ('prior', 'space', 'kernel', 'gp', 'chosen', 'wtau_prior',
                   'wtau_chosen', 'rows', 'coverage_68', 'coverage_95')


def sparse_observed(observed: Any, model_ids: Sequence[str],
                    num_tasks: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(idx, scores, valid) [B, K] from B dicts {model_id: score} or [B, M].

  The input form of `Fennec.recommend(observed=...)`. K is padded to a
  power of two (padding has valid=False), so calls with different numbers
  of observed scores share a few compiled shapes.

  Raises:
    ValueError: a wrong shape, an unknown model id, a non-finite score, or
      not `num_tasks` rows (when given).
  """
  m = len(model_ids)
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
    index = {k: i for i, k in enumerate(model_ids)}
    for b, obs in enumerate(observed):
      unknown = [k for k in obs if k not in index]
      if unknown:
        raise ValueError(f'task {b}: model ids not in the repository: '
                         f'{sorted(unknown)[:10]} ({m} models, e.g. '
                         f'{list(model_ids[:5])}).')
      vals = np.asarray([float(v) for v in obs.values()], np.float64)
      bad = ~np.isfinite(vals)
      if bad.any():
        k = list(obs)[int(np.argmax(bad))]
        raise ValueError(f'task {b}: score of {k!r} is {obs[k]}, not '
                         'finite.')
      rows.append((np.asarray([index[k] for k in obs], np.int64), vals))
  if num_tasks is not None and len(rows) != num_tasks:
    raise ValueError(f'{len(rows)} observed-score sets for {num_tasks} '
                     'embeddings; give one per task.')
  k = posterior_lib.batch_bucket(max([len(i) for i, _ in rows] + [1]))
  idx = np.zeros((len(rows), k), np.int32)
  scores = np.zeros((len(rows), k), np.float32)
  valid = np.zeros((len(rows), k), bool)
  for b, (i, v) in enumerate(rows):
    idx[b, :len(i)] = i
    scores[b, :len(i)] = v
    valid[b, :len(i)] = True
  return idx, scores, valid


def calibrated_k(k: int, counts: np.ndarray) -> int:
  """The K calibrated for a task with k scores (0: none can be).

  The largest power of two <= k that some history task can simulate (k + 3
  observed scores, as `kshot_calibrate.simulate` needs), so each k maps to
  one fixed calibration whatever was asked before (`calibrate` draws
  depend on its ks).
  """
  top = min(int(k), int(np.max(counts, initial=0)) - 3)
  return 1 << (top.bit_length() - 1) if top >= 1 else 0


class LazyFoldIn:
  """The K-shot fold-in of a fitted space, calibrated per K on first use.

  `Fennec` holds one: calibration refits the space once per fold, too
  costly for `fit`, so each K (`calibrated_k`) is calibrated the first time
  a task with that many scores arrives and cached here, with the folds'
  refits (shared by the next K's calibration; not saved).

  Attributes:
    scores, mask: [M, T] the history the space was fit on.
    config: the simulation (`kshot.KShotConfig`).
    meta: [M, P] the models' metadata factor (`kshot_gp.feature_factor`),
      or None.
    params: {K: `kshot.KShotParams`} calibrated so far.
    validation: {K: dict} their simulation numbers.
    tried: the K values calibrated or found impossible.
  """

  def __init__(self, scores: Any, mask: Any,
               config: kshot.KShotConfig = kshot.KShotConfig(),
               meta: Any = None):
    self.mask = np.asarray(mask, bool)
    self.scores = np.where(self.mask, np.asarray(scores, np.float64), 0.0)
    self.config = config
    self.meta = None if meta is None else np.asarray(meta, np.float32)
    if self.meta is not None and self.meta.shape[0] != self.mask.shape[0]:
      raise ValueError(f'the metadata factor has {self.meta.shape[0]} rows '
                       f'for {self.mask.shape[0]} models.')
    self.params: dict[int, kshot.KShotParams] = {}
    self.validation: dict[int, dict[str, float]] = {}
    self.tried: set[int] = set()
    self._fits: dict[int, Any] = {}
    self._fold: kshot.KShotFoldIn | None = None

  @property
  def fold(self) -> kshot.KShotFoldIn | None:
    """The calibration so far as a `kshot.KShotFoldIn` (None before any)."""
    return self._fold

  def _fold_for(self, space: transfer_space.TransferSpace
                ) -> kshot.KShotFoldIn:
    """The `KShotFoldIn` of the params so far (columns computed once)."""
    if self._fold is None:
      self._fold = kshot.KShotFoldIn(
          columns=kshot.completed_columns(space, self.scores, self.mask),
          params={}, validation={}, gp_columns=kshot.completed_columns(
              space, self.scores, self.mask, kshot.GP_NORMALIZATION),
          meta=self.meta)
    if self._fold.params != self.params:
      self._fold = dataclasses.replace(self._fold, params=dict(self.params),
                                       validation=dict(self.validation))
    return self._fold

  def predict(self, space: transfer_space.TransferSpace, idx: np.ndarray,
              scores: np.ndarray, valid: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, predicted [R, M], std [R, M]) of the rows it has params for.

    Rows with no score, or whose K has no calibration (too few scores per
    history task to simulate it), are left out: the caller keeps its plain
    fold-in for them.
    """
    valid = np.asarray(valid, bool)
    counts = self.mask.sum(0)
    ks = np.asarray([calibrated_k(k, counts) for k in valid.sum(1)], int)
    for k in sorted(set(ks[ks > 0]) - self.tried):
      self.tried.add(k)
      new = kshot_calibrate.calibrate(space, self.scores, self.mask, [k],
                                      self.config, self._fits, self.meta)
      self.params.update(new.params)
      self.validation.update(new.validation)
      if self._fold is None:
        self._fold = new
    rows = np.flatnonzero([k in self.params for k in ks])
    if not len(rows):
      m = space.num_models
      return rows, np.zeros((0, m), np.float32), np.zeros((0, m), np.float32)
    pred, std = kshot.predict(space, self._fold_for(space), idx[rows],
                              scores[rows], valid[rows])
    return rows, np.asarray(pred), np.asarray(std)

  def to_arrays(self) -> dict[str, np.ndarray]:
    """The history and the calibration so far, for a checkpoint."""
    out = {'scores': self.scores, 'mask': self.mask.astype(np.int8)}
    if self.meta is not None and self.meta.shape[1]:
      out['meta'] = self.meta
    if self.tried:
      out['tried'] = np.asarray(sorted(self.tried), np.int64)
    ks = sorted(self.params)
    if ks:
      out['calibrated_k'] = np.asarray(ks, np.int64)
      out['params'] = np.asarray([list(self.params[k]) for k in ks],
                                 np.float64)
      out['validation'] = np.asarray(
          [[self.validation.get(k, {}).get(v, np.nan)
            for v in VALIDATION_KEYS] for k in ks], np.float64)
    return out

  @classmethod
  def from_arrays(cls, arrays: Mapping[str, Any],
                  config: kshot.KShotConfig = kshot.KShotConfig()
                  ) -> 'LazyFoldIn':
    """The inverse of `to_arrays` (a checkpoint without a calibration, as
    older ones, calibrates on first use)."""
    out = cls(arrays['scores'], np.asarray(arrays['mask'], bool), config,
              arrays.get('meta'))
    out.tried = {int(k) for k in arrays.get('tried', ())}
    fields = kshot.KShotParams._fields
    for i, k in enumerate(arrays.get('calibrated_k', ())):
      row = np.asarray(arrays['params'][i], np.float64)
      if row.ndim == 1 and len(row) == len(fields) - 1:
        # Saved before the metadata weight (`gp_meta`, last) existed.
        row = np.append(row, kshot.PRIOR.gp_meta)
      if row.shape != (len(fields),):
        raise ValueError(f'saved K-shot params of K={int(k)} have '
                         f'{row.shape} values; expected {len(fields)} '
                         f'({fields}).')
      out.params[int(k)] = kshot.KShotParams(*(float(v) for v in row))
      out.validation[int(k)] = {
          v: float(x) for v, x in zip(VALIDATION_KEYS,
                                      arrays['validation'][i])}
    return out
