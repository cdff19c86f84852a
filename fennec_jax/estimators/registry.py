"""Estimator registry: `get_estimator(name)` and `score_models(name, ...)`.

Every estimator returns a scalar where higher means "transfers better".
Feature-based estimators are called as `fn(features[n, d], labels[n], **opts)`.
LEEP and NCE need no features and take keyword-only source outputs, so their
arguments cannot be swapped: `leep(labels=y, source_probs=p)`,
`nce(labels=y, source_labels=z)`.

`score_models(name, features, labels)` scores m models in one jitted, vmapped
call. Models of different feature widths are grouped by width (one call per
distinct width), not zero-padded: padding would change covariance-based scores
(a zero column is a degenerate direction), so grouping keeps every score exactly
equal to the per-model call.

Class counts are data: every estimator sizes its class axis by a static bound
(`max_classes`, by default the next power of two >= the number of classes), so
targets with 2, 5 or 37 classes and the same sample count and feature widths
share one compilation per bound. Pass `max_classes=64` to `score_models` (or
the single-model functions) to fix the bound for a whole run and compile each
estimator once (TransRate: once per power-of-two bucket of its largest class).
The sample count n stays a static shape: Gram-side choices (n x n or d x d),
eigenvalue cut-offs and PARC's n(n-1)/2 pairs depend on it, so padding samples
would change the cheap path and the floating-point path of several estimators.
"""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fennec_jax.estimators import _batch
from fennec_jax.estimators import _common
from fennec_jax.estimators import gbc
from fennec_jax.estimators import hscore
from fennec_jax.estimators import knn
from fennec_jax.estimators import lda
from fennec_jax.estimators import leep
from fennec_jax.estimators import linear_probe
from fennec_jax.estimators import logme
from fennec_jax.estimators import parc
from fennec_jax.estimators import transrate

_SPECS: dict[str, _batch.Spec] = {
    spec.name: spec for spec in (
        logme.SPEC, leep.LEEP, leep.NLEEP, leep.NCE, hscore.HSCORE,
        hscore.REG_HSCORE, transrate.SPEC, gbc.SPEC, lda.SFDA, lda.FDA,
        parc.SPEC, knn.SPEC, linear_probe.SPEC)
}


def list_estimators() -> list[str]:
  """Names accepted by `get_estimator` and `score_models`."""
  return sorted(_SPECS)


def get_spec(name: str) -> _batch.Spec:
  """The estimator's Spec; raises a ValueError listing valid names."""
  if name not in _SPECS:
    raise ValueError(
        f'unknown estimator {name!r}; valid: {", ".join(list_estimators())}.')
  return _SPECS[name]


def _stack_inputs(spec: _batch.Spec, inputs) -> list[tuple[list[int],
                                                          np.ndarray]]:
  """Groups per-model inputs into stacks of equal shape.

  Returns:
    list of (model indices, stacked array [m_g, n, ...]).
  """
  if isinstance(inputs, np.ndarray) or hasattr(inputs, 'shape'):
    arr = np.asarray(inputs)
    expected = 2 if spec.kind == 'source_labels' else 3
    if arr.ndim != expected:
      raise ValueError(
          f'{spec.name}: stacked {spec.kind} must have {expected} dims '
          f'([m, n{", d" if expected == 3 else ""}]), got shape {arr.shape}.')
    return [(list(range(arr.shape[0])), arr)]  # One width: no copy.
  else:
    models = [np.asarray(x) for x in inputs]
  if not models:
    raise ValueError(f'{spec.name}: no models to score.')
  groups: dict[tuple, list[int]] = {}
  for i, x in enumerate(models):
    groups.setdefault(x.shape, []).append(i)
  if len({shape[0] for shape in groups}) > 1:
    raise ValueError(
        f'{spec.name}: models disagree on the number of samples: '
        f'{sorted({shape[0] for shape in groups})}.')
  return [(idx, np.stack([models[i] for i in idx])) for idx in groups.values()]


def _validate_stack(spec: _batch.Spec, stack: np.ndarray) -> np.ndarray:
  """Cheap host-side checks (rank, dtype); value checks run on the device."""
  if spec.kind == 'source_labels':
    return leep.check_source_labels(stack)
  if stack.ndim != 3 or stack.size == 0:
    raise ValueError(f'{spec.name}: {spec.kind} must be [m, n, d] and '
                     f'non-empty, got shape {stack.shape}.')
  if not np.issubdtype(stack.dtype, np.floating):
    stack = stack.astype(np.float32)
  return stack


def _explain(spec: _batch.Spec) -> Callable[[np.ndarray], Any]:
  """The full host-side validator, run only on inputs that failed."""
  if spec.kind == 'features':
    return _common.check_features
  if spec.kind == 'source_probs':
    return leep.check_source_probs
  return leep.check_source_labels


def score_models(name: str, features, labels, *, shard_on_cpu: bool = False,
                 model_ids: Sequence[str] | None = None,
                 **options: Any) -> np.ndarray:
  """Scores many models with one estimator in one jitted, vmapped call.

  Args:
    name: estimator name (see `list_estimators`).
    features: [m, n, d] array, or a sequence of m arrays [n, d_i] (grouped
      by width). For 'leep' pass source probabilities [m, n, c_src]; for 'nce'
      source labels [m, n].
    labels: [n] target class ids 0..C-1, every class with a sample (float
      targets for `logme` with `regression=True`).
    shard_on_cpu: shard the model axis over several CPU devices too (see
      `_batch.run`; accelerators shard when the device count divides m).
    model_ids: one id per model, in the order of `features`, named in errors
      and warnings (default: `#i`, the model's position in `features`).
    **options: estimator options (see each module). These apply to all:
      `max_classes=K` fixes the static size of the class axis (default: the
      next power of two >= C); every call with the same K, n and width
      shares one compilation, and padding classes change no score;
      `num_classes=C` checks the labels against C classes (default
      max(labels) + 1; every class needs a sample);
      `batch_size=k` runs k models at a time inside the jitted call (bounds
      memory); `pca=dim` or `pca={'dim', 'method': 'exact'|'randomized',
      'seed'}` projects every model's features on their top principal
      components first (feature-based estimators only).

  Returns:
    [m] float64 scores, higher = better, in the order of `features`.

  Raises:
    ValueError: unknown estimator, bad shapes, NaN features, bad labels (a
      label >= max_classes names the label and the bound), or `model_ids`
      of another length than the models.
  """
  spec = get_spec(name)
  groups = _stack_inputs(spec, features)
  scores = np.empty(sum(len(idx) for idx, _ in groups))
  if model_ids is None:
    model_ids = [f'#{i}' for i in range(scores.size)]
  elif len(model_ids) != scores.size:
    raise ValueError(f'{name}: {len(model_ids)} model_ids for {scores.size} '
                     'models.')
  for idx, stack in groups:
    stack = _validate_stack(spec, stack)
    scores[idx] = _batch.run(spec, stack, labels, options,
                             shard_on_cpu=shard_on_cpu,
                             explain_invalid=_explain(spec),
                             model_ids=[model_ids[i] for i in idx])
  return scores


def _feature_estimator(name: str) -> Callable[..., float]:
  def fn(features, labels, **options) -> float:
    features = _common.check_features(features)
    if features.ndim != 2:
      raise ValueError(
          f'{name}: features must be [n, d], got shape {features.shape}; use '
          'score_models for several models.')
    return float(score_models(name, features[None], labels, **options)[0])
  fn.__name__ = name
  fn.__doc__ = f'{name} score of one model (higher = better).\n\n' + (
      get_spec(name).doc or '')
  return fn


def _leep_fn(*, labels, source_probs, **options) -> float:
  """LEEP of one model: `leep(labels=y, source_probs=p[n, c_src])`."""
  return float(score_models('leep', np.asarray(source_probs)[None], labels,
                            **options)[0])


def _nce_fn(*, labels, source_labels, **options) -> float:
  """NCE of one model: `nce(labels=y, source_labels=z[n])`."""
  return float(score_models('nce', np.asarray(source_labels)[None], labels,
                            **options)[0])


def get_estimator(name: str) -> Callable[..., float]:
  """Returns the single-model scoring function of estimator `name`.

  Raises:
    ValueError: listing valid names, when `name` is unknown.
  """
  spec = get_spec(name)
  if name == 'leep':
    return _leep_fn
  if name == 'nce':
    return _nce_fn
  del spec
  return _feature_estimator(name)


def score_table(names: Sequence[str], features, labels,
                options: dict[str, dict[str, Any]] | None = None
                ) -> dict[str, np.ndarray]:
  """Scores of several feature-based estimators: {name: [m] scores}."""
  options = options or {}
  return {n: score_models(n, features, labels, **options.get(n, {}))
          for n in names}
