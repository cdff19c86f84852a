"""Baseline rankers for the leave-one-task-out protocol.

Simple heuristics are strong on the public benchmarks (PAPER.md, "Known
pitfalls"), so every result of the transfer space is shown beside them:

* `popularity`: a model's mean per-task z-score over the training tasks,
* `imagenet_acc`: the model's ImageNet accuracy from the model metadata,
* one method per raw estimator score a benchmark ships (LogME, ...).

Each baseline is a `Method`: a `predict(train, target, observed)` callable
with what the protocol must know about it. `train` is the history with the
target's column removed, `target` is the target's task id (only methods whose
scores are computed from the target's *data*, such as estimator scores, may
use it) and `observed` is a `[B, M]` array of the target scores of the K
models drawn in each of B draws (NaN elsewhere). `predict` returns `[B, M]`
predicted scores (only their order and linear trend matter to the metrics),
or a `Timed` holding them with the wall time a user would spend on them.

Metadata and estimator baselines cover only some models (TransferGraph ships
LogME for ~80% of its models, ImageNet accuracy for ~20%). They return NaN for
the models they cannot score and are `partial`; the protocol then scores them
on the models they cover (as the published tables do) and logs the coverage.
Filling the gaps with a constant would create large ties and misstate the
estimator. An estimator also covers only the tasks it has scores on
(`Method.tasks`).
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any

from absl import logging
import numpy as np

# Model-metadata key holding ImageNet top-1 accuracy (History convention).
IMAGENET_ACC_KEY = 'imagenet_acc'


@dataclasses.dataclass(frozen=True)
class Timed:
  """A prediction with the wall time a user would spend on it for one task.

  Attributes:
    predicted: `[B, M]` predicted scores.
    seconds: the per-target time (e.g. a proxy pass plus the prediction; not
      the protocol's leave-one-out refits).
  """
  predicted: np.ndarray
  seconds: float


# (train history, target task id, observed [B, M]) -> predicted [B, M]
# (plain or `Timed`).
Predict = Callable[[Any, str, np.ndarray], np.ndarray | Timed]


@dataclasses.dataclass(frozen=True)
class Method:
  """A ranking method of the protocol.

  Attributes:
    predict: `(train, target, observed) -> [B, M]` (or `Timed`).
    tasks: the targets it can score; None: every target.
    partial: it may return NaN for models it cannot score (it is then scored
      on the models it covers); otherwise NaN is an error.
  """
  predict: Predict
  tasks: frozenset[str] | None = None
  partial: bool = False

  def covers(self, target: str) -> bool:
    """Whether it can score `target` (estimators cover some tasks only)."""
    return self.tasks is None or target in self.tasks


def as_method(method: Method | Predict) -> Method:
  """`method`, or a plain `predict` callable as a `Method` (every target, no
  NaN)."""
  return method if isinstance(method, Method) else Method(method)


def zscore_columns(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Z-scores each task's observed entries; NaN where unobserved.

  A task with fewer than two observed models or zero spread carries no
  ranking information and gets all-NaN (it is ignored by `popularity`).

  Args:
    scores: `[M, T]` scores (values where `mask` is False are ignored).
    mask: `[M, T]` bool observation mask.

  Returns:
    `[M, T]` float64 z-scores (population std, ddof=0), NaN where unobserved.
  """
  scores = np.asarray(scores, np.float64)
  mask = np.asarray(mask, bool)
  if scores.shape != mask.shape or scores.ndim != 2:
    raise ValueError(
        f'scores {scores.shape} and mask {mask.shape} must be equal [M, T].')
  vals = np.where(mask, scores, 0.0)
  count = mask.sum(0)
  safe = np.maximum(count, 1)
  mean = vals.sum(0) / safe
  var = (np.where(mask, scores - mean, 0.0) ** 2).sum(0) / safe
  std = np.sqrt(var)
  usable = (count >= 2) & (std > 0)
  z = (scores - mean) / np.where(usable, std, 1.0)
  return np.where(mask & usable[None, :], z, np.nan)


def popularity_scores(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """A model's mean per-task z-score over the tasks it was observed on.

  Models observed on no usable task get 0, the mean of a z-score (the
  prior: an average model); their number is logged.

  Args:
    scores: `[M, T]` training scores.
    mask: `[M, T]` observation mask.

  Returns:
    `[M]` float64 popularity.
  """
  z = zscore_columns(scores, mask)
  seen = ~np.isnan(z)
  n = seen.sum(1)
  pop = np.where(seen, z, 0.0).sum(1) / np.maximum(n, 1)
  if (n == 0).any():
    logging.info('popularity: %d of %d models have no training score; '
                 'they get the prior 0.', int((n == 0).sum()), len(n))
  return pop


def popularity(train: Any, target: str, observed: np.ndarray) -> np.ndarray:
  """`Predict`: popularity on the training tasks (ignores `observed`)."""
  del target
  pop = popularity_scores(train.scores, train.mask)
  return np.broadcast_to(pop, np.shape(observed)).copy()


def _coverage(values: np.ndarray, what: str) -> np.ndarray:
  """Checks `values` ([M], NaN = cannot score) and logs the coverage."""
  values = np.asarray(values, np.float64)
  bad = ~np.isfinite(values)
  if bad.all():
    raise ValueError(f'{what}: no finite value for any model.')
  if bad.any():
    logging.info('%s: %d of %d models have no value; they are left out of '
                 "this method's metrics.", what, int(bad.sum()), len(values))
  return np.where(bad, np.nan, values)


def imagenet_acc_method(model_metadata: Mapping[str, np.ndarray]) -> Method:
  """`Method` ranking by the models' ImageNet accuracy from metadata.

  Args:
    model_metadata: the history's model metadata; must hold
      `'imagenet_acc'` (`[M]`, NaN where unknown).

  Returns:
    The method (`partial`): NaN for models without a value.

  Raises:
    ValueError: if the metadata has no `'imagenet_acc'` or no finite value.
  """
  if IMAGENET_ACC_KEY not in model_metadata:
    raise ValueError(
        f'model metadata has no {IMAGENET_ACC_KEY!r}; keys: '
        f'{sorted(model_metadata)}')
  acc = _coverage(
      np.asarray(model_metadata[IMAGENET_ACC_KEY], np.float64), 'imagenet_acc')

  def predict(train: Any, target: str, observed: np.ndarray) -> np.ndarray:
    del train, target
    return np.broadcast_to(acc, np.shape(observed)).copy()

  return Method(predict, partial=True)


def estimator_method(name: str, estimator_history: Any,
                     model_ids: list[str]) -> Method:
  """`Method` ranking by a raw estimator score shipped with a benchmark.

  The estimator's score on the target is computed from the target's data
  (features of every candidate), not from fine-tuning, so reading the
  target's column of the *estimator* table is legitimate.

  Args:
    name: the estimator's name (for log lines and errors).
    estimator_history: a History of raw estimator scores (models x tasks).
    model_ids: the evaluated history's model ids, in order.

  Returns:
    The method (`partial`, covering the estimator's tasks). Its `predict`
    raises `KeyError` for a target the estimator has no scores on and returns
    NaN for models without a score (logged).
  """
  est_models = {m: i for i, m in enumerate(estimator_history.model_ids)}
  est_tasks = {t: j for j, t in enumerate(estimator_history.task_ids)}
  rows = np.array([est_models.get(m, -1) for m in model_ids])
  scores = np.asarray(estimator_history.scores, np.float64)
  mask = np.asarray(estimator_history.mask, bool)

  def predict(train: Any, target: str, observed: np.ndarray) -> np.ndarray:
    del train
    if target not in est_tasks:
      raise KeyError(f'{name} has no scores for task {target!r}.')
    j = est_tasks[target]
    col = np.full(len(model_ids), np.nan)
    ok = rows >= 0
    col[ok] = np.where(mask[rows[ok], j], scores[rows[ok], j], np.nan)
    col = _coverage(col, f'{name} on {target}')
    return np.broadcast_to(col, np.shape(observed)).copy()

  return Method(predict, tasks=frozenset(est_tasks), partial=True)


def baseline_methods(
    history: Any,
    baseline_scores: Mapping[str, Any] | None = None,
) -> dict[str, Method]:
  """All baselines that apply to `history`, by method name.

  Args:
    history: the evaluated History.
    baseline_scores: raw estimator scores by method name (as returned by
      `fennec_jax.benchmarks.load_baseline_scores`), or None.

  Returns:
    `{'popularity': ..., 'imagenet_acc': ... (if the metadata has a finite
    value), <estimator>: ...}`.
  """
  methods: dict[str, Method] = {'popularity': Method(popularity)}
  meta = getattr(history, 'model_metadata', None) or {}
  if IMAGENET_ACC_KEY in meta and np.isfinite(
      np.asarray(meta[IMAGENET_ACC_KEY], np.float64)).any():
    methods['imagenet_acc'] = imagenet_acc_method(meta)
  for name, est in sorted((baseline_scores or {}).items()):
    methods[name] = estimator_method(name, est, list(history.model_ids))
  return methods
