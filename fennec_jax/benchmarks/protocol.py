"""The leave-one-task-out evaluation protocol, shared by `fennec evaluate`'s
history and images protocols.

For every target task: hide its column from the history the methods see; for
each K in `k_shots` and each of `num_seeds` seeds, draw K of the target's
models at random whose scores are revealed (the SAME draws for every method,
seeded by (seed, target, K)); every method predicts a score for every model;
Pearson, weighted tau and top-1 regret are computed on the UNOBSERVED models
only. Per-target values are averaged over seeds; a `MEAN` row averages them
over targets (for `transfergraph_image`, over the 8 targets its paper
reports, so the numbers compare with the published ones).

Methods are `fennec_jax.benchmarks.baselines.Method`s (or plain `predict`
callables); `fennec_jax.benchmarks.methods` builds those of a history.
`load_history` reads the ground truth: a bundled benchmark or a CSV file.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import time
from typing import Any
import zlib

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import history as history_lib
from fennec_jax import metrics
from fennec_jax import progress
from fennec_jax.benchmarks import baselines
from fennec_jax.benchmarks import public
from fennec_jax.benchmarks import report

METRICS = report.METRICS
MEAN = report.MEAN
DEFAULT_K_SHOTS = (0, 1, 3, 5, 10)
DEFAULT_NUM_SEEDS = 10

# Targets each public benchmark's paper reports (the MEAN row is over these
# unless `all_targets`); TransferGraph's result_analysis/*.csv columns.
REPORTED_TARGETS = {
    'transfergraph_image': (
        'stanfordcars', 'svhn', 'caltech101', 'pets', 'cifar100', 'flowers',
        'smallnorb_label_elevation', 'dtd'),
    'transfergraph_text': (
        'rotten_tomatoes', 'tweet_eval/irony', 'tweet_eval/sentiment',
        'tweet_eval/offensive', 'glue/cola', 'glue/sst2', 'tweet_eval/hate',
        'tweet_eval/emotion'),
}


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of `results.csv`: a method at one K on one target."""
  method: str
  k_shot: int
  target: str
  pearson: float
  weighted_tau: float
  top1_regret: float
  seconds_per_target: float = float('nan')


@dataclasses.dataclass
class Results:
  """Output of `evaluate`.

  Attributes:
    rows: seed-averaged rows for every (method, K, target), then the `MEAN`
      rows (one per method and K), in method, K, target order.
    per_seed: `{(method, k_shot, target): {metric: [num_seeds] array}}`.
    targets: the evaluated targets, in order.
    benchmark: the history's name.
    coverage: `{(method, k_shot, target): fraction}` of the unobserved
      models the method scored (1 except for `partial` methods).
    predictions: `{method: {target: [M]}}`, each method's raw prediction at
      the first K of `k_shots`, first draw.
    same_models: `{(method, k_shot, target): {metric: [num_seeds] array}}`
      for each K > 0 when K = 0 is evaluated too: the method's K = 0
      prediction scored on the same unobserved models as each K draw, so
      that K minus K = 0 is a paired difference (`paired_k0`).
  """
  rows: list[Row]
  per_seed: dict[tuple[str, int, str], dict[str, np.ndarray]]
  targets: list[str]
  benchmark: str
  coverage: dict[tuple[str, int, str], float] = dataclasses.field(
      default_factory=dict)
  predictions: dict[str, dict[str, np.ndarray]] = dataclasses.field(
      default_factory=dict)
  same_models: dict[tuple[str, int, str], dict[str, np.ndarray]] = (
      dataclasses.field(default_factory=dict))

  def mean_coverage(self, method: str, k_shot: int) -> float:
    """Mean over targets of the fraction of unobserved models scored."""
    vals = [v for (m, k, _), v in self.coverage.items()
            if m == method and k == k_shot]
    return float(np.mean(vals)) if vals else float('nan')

  def per_target(self, method: str, k_shot: int,
                 metric: str) -> np.ndarray:
    """`[targets]` seed-averaged values of one metric (no MEAN row)."""
    out = [getattr(r, metric) for r in self.rows
           if r.method == method and r.k_shot == k_shot and r.target != MEAN]
    return np.asarray(out, np.float64)

  def mean(self, method: str, k_shot: int, metric: str) -> float:
    """The `MEAN` row's value of one metric."""
    for r in self.rows:
      if r.method == method and r.k_shot == k_shot and r.target == MEAN:
        return float(getattr(r, metric))
    raise KeyError(f'no MEAN row for method {method!r} at K={k_shot}.')

  def paired_k0(self, method: str, k_shot: int, metric: str
                ) -> dict[str, float]:
    """`{target: K minus K = 0}` on the same unobserved models (seed means).

    Empty when K = 0 was not evaluated; targets where either side is
    undefined are left out.
    """
    out = {}
    for t in self.targets:
      now = self.per_seed.get((method, k_shot, t))
      then = self.same_models.get((method, k_shot, t))
      if now is None or then is None:
        continue
      d = np.asarray(now[metric]) - np.asarray(then[metric])
      if np.isfinite(d).any():
        out[t] = float(np.nanmean(d))
    return out

  @property
  def methods(self) -> list[str]:
    return list(dict.fromkeys(r.method for r in self.rows))

  @property
  def k_shots(self) -> list[int]:
    return sorted({r.k_shot for r in self.rows})


def draw_observed(target_mask: np.ndarray, k_shot: int, num_seeds: int,
                  target: str, seed: int = 0) -> np.ndarray:
  """Draws which K models of the target are observed, for every seed.

  Depends only on (seed, seed index, target name, K), never on the method,
  so every method sees the same draws.

  Args:
    target_mask: `[M]` bool, models with a true score on the target.
    k_shot: K, models revealed per draw.
    num_seeds: number of independent draws.
    target: the target's task id (part of the RNG seed).
    seed: the root seed.

  Returns:
    `[num_seeds, M]` bool, True for the K observed models of each draw.

  Raises:
    ValueError: if K is negative or leaves fewer than 2 unobserved models.
  """
  target_mask = np.asarray(target_mask, bool)
  available = np.flatnonzero(target_mask)
  if k_shot < 0:
    raise ValueError(f'k_shot must be >= 0, got {k_shot}.')
  if k_shot > len(available) - 2:
    raise ValueError(
        f'K={k_shot} is larger than the models available on target '
        f'{target!r}: it has {len(available)} models with a score and at '
        f'least 2 must stay unobserved to score a ranking (valid K: 0..'
        f'{max(len(available) - 2, 0)}).')
  out = np.zeros((num_seeds, len(target_mask)), bool)
  tag = zlib.crc32(target.encode('utf-8'))
  for s in range(num_seeds):
    rng = np.random.default_rng([seed, s, tag, k_shot])
    out[s, rng.choice(available, size=k_shot, replace=False)] = True
  return out


def without_task(history: Any, j: int) -> Any:
  """The history with task column `j` removed (all that methods may see)."""
  keep = np.arange(len(history.task_ids)) != j
  return history.subset(tasks=keep)


@jax.jit
def _metrics(pred: jax.Array, true: jax.Array,
             eval_mask: jax.Array) -> dict[str, jax.Array]:
  """Metrics of `[methods, B, M]` predictions on `[methods, B, M]` masks."""

  def one(p, m):
    return {
        'pearson': metrics.pearson(p, true, mask=m),
        'weighted_tau': metrics.weighted_tau(p, true, mask=m),
        'top1_regret': metrics.top_k_regret(p, true, k=1, mask=m),
    }

  return jax.vmap(jax.vmap(one))(pred, eval_mask)


def _standardize(pred: np.ndarray, eval_mask: np.ndarray) -> np.ndarray:
  """Shifts/scales each prediction row (order-preserving) for float32 math.

  Raw estimator scores span very different ranges (Reg-H-Score ~30, LogME
  ~1); all metrics are invariant to a positive affine map of the predictions,
  so this only protects the float32 computation.
  """
  m = eval_mask
  cnt = np.maximum(m.sum(-1, keepdims=True), 1)
  mean = np.where(m, pred, 0.0).sum(-1, keepdims=True) / cnt
  std = np.sqrt((np.where(m, pred - mean, 0.0) ** 2).sum(-1, keepdims=True)
                / cnt)
  return (pred - mean) / np.where(std > 0, std, 1.0)


def nanmean(values: Sequence[float], what: str) -> float:
  """Mean of the defined values; undefined ones (NaN) are counted in a log.

  A metric is undefined where the scored models' true scores are constant
  (e.g. TransferGraph's food101 runs that all ended at chance level).
  """
  values = np.asarray(values, np.float64)
  bad = np.isnan(values)
  if bad.all():
    return float('nan')
  if bad.any():
    logging.info('%s: %d of %d values undefined (NaN), left out of the mean.',
                 what, int(bad.sum()), len(values))
  return float(values[~bad].mean())


def default_targets(history: Any, all_targets: bool = False) -> list[str]:
  """The targets evaluated by default: the ones the benchmark's paper reports.

  Args:
    history: the History.
    all_targets: evaluate every task instead.

  Returns:
    Task ids, in the history's order unless the benchmark's paper fixes one.
  """
  reported = REPORTED_TARGETS.get(getattr(history, 'name', ''))
  if all_targets or not reported:
    return list(history.task_ids)
  missing = [t for t in reported if t not in history.task_ids]
  if missing:
    raise ValueError(f'benchmark {history.name!r} lacks reported targets '
                     f'{missing}; tasks: {list(history.task_ids)}')
  return list(reported)


def evaluate(
    history: Any,
    methods: Mapping[str, baselines.Method | baselines.Predict],
    k_shots: Sequence[int] = DEFAULT_K_SHOTS,
    num_seeds: int = DEFAULT_NUM_SEEDS,
    targets: Sequence[str] | None = None,
    seed: int = 0,
) -> Results:
  """Runs the leave-one-task-out protocol.

  Args:
    history: a History (model_ids, task_ids, scores [M, T], mask [M, T]).
    methods: method name -> `baselines.Method` (or a plain `predict`).
    k_shots: the K values (models of the target revealed to the methods).
    num_seeds: draws per (target, K); the protocol asks for >= 10.
    targets: task ids to evaluate; default `default_targets(history)`.
    seed: root seed of the draws.

  Returns:
    The `Results`. A method that cannot score a target (an estimator without
    scores there) has no row for it; a `partial` method is scored on the
    models it covers; both are logged. A method's `seconds_per_target` are
    the seconds of its `Timed` predictions (NaN if it returns plain arrays).

  Raises:
    ValueError: unknown targets, bad K, no methods, or a method returning a
      wrong shape or non-finite predictions.
  """
  if not methods:
    raise ValueError('no methods to evaluate.')
  if num_seeds < 1:
    raise ValueError(f'num_seeds must be >= 1, got {num_seeds}.')
  k_shots = [int(k) for k in k_shots]
  if not k_shots or len(set(k_shots)) != len(k_shots):
    raise ValueError(f'k_shots must be non-empty and distinct: {k_shots}.')
  task_ids = list(history.task_ids)
  targets = list(targets) if targets is not None else default_targets(history)
  unknown = [t for t in targets if t not in task_ids]
  if unknown:
    raise ValueError(f'unknown targets {unknown}; tasks: {task_ids}')
  scores = np.asarray(history.scores, np.float64)
  mask = np.asarray(history.mask, bool)
  num_models = scores.shape[0]
  methods = {name: baselines.as_method(m) for name, m in methods.items()}
  names = list(methods)

  per_seed: dict[tuple[str, int, str], dict[str, np.ndarray]] = {}
  same_models: dict[tuple[str, int, str], dict[str, np.ndarray]] = {}
  coverage: dict[tuple[str, int, str], float] = {}
  seconds: dict[tuple[str, str], float] = {}
  first_predictions: dict[str, dict[str, np.ndarray]] = {}
  for target in progress.track(targets, 'evaluate: targets'):
    start = time.perf_counter()
    j = task_ids.index(target)
    train = without_task(history, j)
    # Centered in float64 (all metrics are shift-invariant), so that equal
    # true scores stay exactly equal in the float32 metrics (undefined
    # correlation -> NaN, not a rounding-noise value).
    true = np.where(mask[:, j], scores[:, j] - scores[mask[:, j], j].mean(),
                    0.0)
    obs = np.concatenate([
        draw_observed(mask[:, j], k, num_seeds, target, seed) for k in k_shots
    ])  # [K * S, M]
    observed = np.where(obs, scores[:, j][None, :], np.nan)
    eval_mask = mask[:, j][None, :] & ~obs
    usable = [n for n in names if methods[n].covers(target)]
    skipped = sorted(set(names) - set(usable))
    if skipped:
      logging.info('target %s: %s have no scores there; skipped.', target,
                   skipped)
    if not usable:
      continue
    preds, masks, scored_names, timings = [], [], [], {}
    same_preds, same_masks = [], []
    k0_rows = (slice(k_shots.index(0) * num_seeds,
                     (k_shots.index(0) + 1) * num_seeds)
               if 0 in k_shots and len(k_shots) > 1 else None)
    for name in usable:
      out = methods[name].predict(train, target, observed.copy())
      if isinstance(out, baselines.Timed):
        timings[name] = float(out.seconds)
        out = out.predicted
      pred = np.asarray(out, np.float64)
      if pred.shape != obs.shape:
        raise ValueError(f'method {name!r} returned shape {pred.shape} on '
                         f'target {target!r}; expected {obs.shape}.')
      first_predictions.setdefault(name, {})[target] = pred[0].copy()
      scored = eval_mask & ~np.isnan(pred)
      if np.isinf(np.where(scored, pred, 0.0)).any() or (
          not methods[name].partial and (scored != eval_mask).any()):
        raise ValueError(f'method {name!r} returned non-finite predictions '
                         f'on target {target!r}.')
      if (scored.sum(1) < 2).any():  # Only a partial method gets here.
        logging.info('target %s: %s scores fewer than 2 unobserved models; '
                     'skipped there.', target, name)
        continue
      if (scored != eval_mask).any():
        logging.info('target %s: %s scores %.1f of %.1f unobserved models '
                     '(mean over draws); its metrics use those.', target,
                     name, scored.sum(1).mean(), eval_mask.sum(1).mean())
      preds.append(_standardize(np.where(scored, pred, 0.0), scored))
      masks.append(scored)
      scored_names.append(name)
      if k0_rows is not None:
        # The K = 0 prediction (first draw) on each draw's unobserved models.
        pred0 = np.broadcast_to(pred[k0_rows][0], pred.shape)
        same = scored & ~np.isnan(pred0)
        same_preds.append(_standardize(np.where(same, pred0, 0.0), same))
        same_masks.append(same)
    usable = scored_names
    if not usable:
      continue
    out = _metrics(jnp.asarray(np.stack(preds), jnp.float32),
                   jnp.asarray(true, jnp.float32),
                   jnp.asarray(np.stack(masks)))
    out = {k: np.asarray(v, np.float64).reshape(len(usable), len(k_shots),
                                                num_seeds)
           for k, v in out.items()}
    for name in usable:
      if name in timings:
        seconds[(name, target)] = timings[name]
    frac = (np.stack(masks).sum(-1) / eval_mask.sum(-1)).reshape(
        len(usable), len(k_shots), num_seeds).mean(-1)
    same = None
    if k0_rows is not None:
      same = _metrics(jnp.asarray(np.stack(same_preds), jnp.float32),
                      jnp.asarray(true, jnp.float32),
                      jnp.asarray(np.stack(same_masks)))
      same = {k: np.asarray(v, np.float64).reshape(
          len(usable), len(k_shots), num_seeds) for k, v in same.items()}
    for a, name in enumerate(usable):
      for b, k in enumerate(k_shots):
        per_seed[(name, k, target)] = {m: out[m][a, b] for m in METRICS}
        coverage[(name, k, target)] = float(frac[a, b])
        if same is not None and k > 0:
          same_models[(name, k, target)] = {m: same[m][a, b]
                                            for m in METRICS}
    logging.info('target %s: %d methods x %d draws on %d models in %.2fs',
                 target, len(usable), obs.shape[0], num_models,
                 time.perf_counter() - start)

  rows = []
  for name in names:
    for k in k_shots:
      got = [t for t in targets if (name, k, t) in per_seed]
      if not got:
        continue
      vals = {t: {m: nanmean(per_seed[(name, k, t)][m],
                             f'{name} K={k} {t} {m} over seeds')
                  for m in METRICS} for t in got}
      nan = float('nan')
      rows.extend(Row(name, k, t, **vals[t],
                      seconds_per_target=seconds.get((name, t), nan))
                  for t in got)
      secs = [seconds[(name, t)] for t in got if (name, t) in seconds]
      rows.append(Row(name, k, MEAN, **{
          m: nanmean([vals[t][m] for t in got],
                     f'{name} K={k} {m} over targets') for m in METRICS},
                      seconds_per_target=(float(np.mean(secs)) if secs
                                          else nan)))
  return Results(rows=rows, per_seed=per_seed, targets=targets,
                 benchmark=getattr(history, 'name', ''), coverage=coverage,
                 predictions=first_predictions, same_models=same_models)


def load_history(benchmark: str | None = None,
                 history_path: str | None = None,
                 duplicates: str = 'error') -> tuple[Any, dict]:
  """A bundled benchmark (with its shipped estimator scores) or a CSV file.

  Args:
    benchmark: a name from `fennec_jax.benchmarks.list_benchmarks()`.
    history_path: a long-format CSV (`model,task,score`, see
      `fennec_jax.history`).
    duplicates: how a CSV's differing scores of one pair are resolved
      (`fennec_jax.history.DUPLICATE_POLICIES`).

  Returns:
    `(history, baseline_scores)`; baseline scores are empty for a CSV.

  Raises:
    ValueError: if not exactly one of the two is given.
  """
  if bool(benchmark) == bool(history_path):
    raise ValueError('give exactly one of --benchmark or --history, got '
                     f'benchmark={benchmark!r}, history={history_path!r}.')
  if history_path:
    return history_lib.History.read_csv(history_path,
                                        duplicates=duplicates), {}
  history = public.load_benchmark(benchmark)
  return history, dict(public.load_baseline_scores(benchmark))
