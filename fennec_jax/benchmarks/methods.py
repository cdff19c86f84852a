"""The methods of the history protocol, by name (`fennec evaluate --methods`).

A history's methods are its baselines (`popularity`, `imagenet_acc` where
the metadata has it, one per raw estimator score the benchmark ships), then
the transfer space `fennec_space` (for K > 0 with the K-shot fold-in
calibrated on the training tasks, `fennec_jax.space.kshot`) and the paper's
transfer phase `paper_nmf` (the plain Bayesian fold-in). The images
protocol's methods,
which also see the target's images, are in `fennec_jax.benchmarks.images`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fennec_jax import recommender
from fennec_jax import space as space_lib
from fennec_jax.benchmarks import baselines

# The transfer space fit on the training tasks, the draws folded in.
FENNEC_SPACE = 'fennec_space'
# The paper's transfer phase (NMF, k = 5, raw scores) with the same fold-in.
PAPER_NMF = 'paper_nmf'


def space_method(space_config: Mapping[str, Any] | None = None,
                 seed: int = 0,
                 kshot_config: space_lib.KShotConfig | None = None,
                 intervals: dict[str, Any] | None = None,
                 use_metadata: bool = True) -> baselines.Method:
  """`Method` `fennec_space`: the transfer space fit on the training tasks.

  The space is fit once per call (i.e. once per target, as it depends on
  neither K nor the draw). Draws with K = 0 get the space's prior; with
  `kshot_config`, draws with K > 0 use the K-shot fold-in calibrated on the
  training tasks for the K values present (`fennec_jax.space.kshot`),
  otherwise the space's plain Bayesian fold-in.

  Args:
    space_config: overrides of `fennec_jax.space.SpaceConfig` fields.
    seed: the space's seed.
    kshot_config: the K-shot simulation, or None for the plain fold-in.
    intervals: if given, each target's K-shot draws are recorded there as
      {target: (observed [B, M], predicted [B, M], std [B, M])} (rows with
      K > 0), for `comparisons.coverage_of_intervals`.
    use_metadata: give the K-shot fold-in the models' metadata features
      (`model_metadata`), whose weight its calibration chooses.

  Returns:
    The method.
  """
  overrides = dict(space_config or {})
  overrides.setdefault('seed', seed)
  config = space_lib.SpaceConfig(**overrides)

  def predict(train: Any, target: str, observed: np.ndarray) -> np.ndarray:
    fitted = space_lib.fit(train.scores, train.mask, config)
    obs_mask = ~np.isnan(observed)
    counts = obs_mask.sum(1)
    if kshot_config is None or not counts.any():
      fold = fitted.fold_in(np.where(obs_mask, observed, 0.0), obs_mask)
      return np.asarray(fold.predicted, np.float64)
    kshot = space_lib.kshot_calibrate.calibrate(
        fitted, train.scores, train.mask, sorted(set(counts[counts > 0])),
        kshot_config, meta=space_lib.kshot_gp.metadata_factor(
            train.model_metadata, train.num_models, train.name)
        if use_metadata else None)
    pred, std = space_lib.kshot.predict_observed(fitted, kshot, observed)
    if intervals is not None:
      rows = counts > 0
      intervals[target] = (observed[rows], pred[rows], std[rows])
    return np.asarray(pred, np.float64)

  return baselines.Method(predict)


def build_methods(
    history: Any,
    names: Sequence[str] | None = None,
    baseline_scores: Mapping[str, Any] | None = None,
    space_config: Mapping[str, Any] | None = None,
    seed: int = 0,
    intervals: dict[str, Any] | None = None,
) -> dict[str, baselines.Method]:
  """The protocol's methods for `history`, optionally restricted to `names`.

  Args:
    history: the evaluated History.
    names: method names to keep, in this order (default: all that apply).
    baseline_scores: raw estimator scores by method name.
    space_config: `SpaceConfig` overrides for `fennec_space`.
    seed: seed of the transfer space.
    intervals: where `fennec_space` records its K-shot intervals
      (`space_method`).

  Returns:
    Name -> method: baselines, then `fennec_space` (K-shot fold-in) and
    `paper_nmf` (the paper's NMF transfer space, k = 5, plain fold-in).

  Raises:
    ValueError: a requested name that does not apply, listing the valid ones.
  """
  methods = baselines.baseline_methods(history, baseline_scores)
  methods[FENNEC_SPACE] = space_method(space_config, seed,
                                       space_lib.KShotConfig(seed=seed),
                                       intervals)
  methods[PAPER_NMF] = space_method(recommender.PAPER_SPACE, seed)
  if names:
    unknown = [n for n in names if n not in methods]
    if unknown:
      raise ValueError(f'unknown or inapplicable methods {unknown} for '
                       f'{getattr(history, "name", "")!r}; valid: '
                       f'{list(methods)}')
    methods = {n: methods[n] for n in names}
  return methods
