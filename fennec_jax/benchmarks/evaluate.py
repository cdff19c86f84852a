"""The leave-one-task-out evaluation protocol (`fennec evaluate`).

For every target task: hide its column from the history the methods see; for
each K in `k_shots` and each of `num_seeds` seeds, draw K of the target's
models at random whose scores are revealed (the SAME draws for every method,
seeded by (seed, target, K)); every method predicts a score for every model;
Pearson, weighted tau and top-1 regret are computed on the UNOBSERVED models
only. Per-target values are averaged over seeds; a `MEAN` row averages them
over targets (for `transfergraph_image`, over the 8 targets its paper
reports, so the numbers compare with the published ones).

Methods are `fennec_jax.benchmarks.baselines.Method` callables; the
transfer space enters as `fennec_space` (fit once per target on the other
tasks, all draws folded in as one batch).
"""

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import os
import time
from typing import Any
import zlib

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import metrics
from fennec_jax.benchmarks import baselines
from fennec_jax.benchmarks import report
from fennec_jax.benchmarks.offline import source as offline_source

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
    predictions: images protocol only: `{method: {target: [M]}}`, each
      method's raw prediction at the first K of `k_shots`, first draw.
  """
  rows: list[Row]
  per_seed: dict[tuple[str, int, str], dict[str, np.ndarray]]
  targets: list[str]
  benchmark: str
  coverage: dict[tuple[str, int, str], float] = dataclasses.field(
      default_factory=dict)
  predictions: dict[str, dict[str, np.ndarray]] = dataclasses.field(
      default_factory=dict)

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


def _nanmean(values: Sequence[float], what: str) -> float:
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
    methods: Mapping[str, baselines.Method],
    k_shots: Sequence[int] = DEFAULT_K_SHOTS,
    num_seeds: int = DEFAULT_NUM_SEEDS,
    targets: Sequence[str] | None = None,
    seed: int = 0,
) -> Results:
  """Runs the leave-one-task-out protocol.

  Args:
    history: a History (model_ids, task_ids, scores [M, T], mask [M, T]).
    methods: method name -> `baselines.Method`.
    k_shots: the K values (models of the target revealed to the methods).
    num_seeds: draws per (target, K); the protocol asks for >= 10.
    targets: task ids to evaluate; default `default_targets(history)`.
    seed: root seed of the draws.

  Returns:
    The `Results`. A method that cannot score a target (an estimator without
    scores there) has no row for it; a `partial` method is scored on the
    models it covers; both are logged.

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
  names = list(methods)

  per_seed: dict[tuple[str, int, str], dict[str, np.ndarray]] = {}
  coverage: dict[tuple[str, int, str], float] = {}
  seconds: dict[tuple[str, str], float] = {}
  for target in targets:
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
    usable = [n for n in names if baselines.has_target(methods[n], target)]
    skipped = sorted(set(names) - set(usable))
    if skipped:
      logging.info('target %s: %s have no scores there; skipped.', target,
                   skipped)
    if not usable:
      continue
    preds, masks, scored_names = [], [], []
    for name in usable:
      pred = np.asarray(methods[name](train, target, observed.copy()),
                        np.float64)
      if pred.shape != obs.shape:
        raise ValueError(f'method {name!r} returned shape {pred.shape} on '
                         f'target {target!r}; expected {obs.shape}.')
      scored = eval_mask & ~np.isnan(pred)
      if np.isinf(np.where(scored, pred, 0.0)).any() or (
          not baselines.is_partial(methods[name])
          and (scored != eval_mask).any()):
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
      timing = getattr(methods[name], 'seconds', {})
      if target in timing:
        seconds[(name, target)] = float(timing[target])
    frac = (np.stack(masks).sum(-1) / eval_mask.sum(-1)).reshape(
        len(usable), len(k_shots), num_seeds).mean(-1)
    for a, name in enumerate(usable):
      for b, k in enumerate(k_shots):
        per_seed[(name, k, target)] = {m: out[m][a, b] for m in METRICS}
        coverage[(name, k, target)] = float(frac[a, b])
    logging.info('target %s: %d methods x %d draws on %d models in %.2fs',
                 target, len(usable), obs.shape[0], num_models,
                 time.perf_counter() - start)

  rows = []
  for name in names:
    for k in k_shots:
      got = [t for t in targets if (name, k, t) in per_seed]
      if not got:
        continue
      vals = {t: {m: _nanmean(per_seed[(name, k, t)][m],
                              f'{name} K={k} {t} {m} over seeds')
                  for m in METRICS} for t in got}
      nan = float('nan')
      rows.extend(Row(name, k, t, **vals[t],
                      seconds_per_target=seconds.get((name, t), nan))
                  for t in got)
      secs = [seconds[(name, t)] for t in got if (name, t) in seconds]
      rows.append(Row(name, k, MEAN, **{
          m: _nanmean([vals[t][m] for t in got],
                      f'{name} K={k} {m} over targets') for m in METRICS},
                      seconds_per_target=(float(np.mean(secs)) if secs
                                          else nan)))
  return Results(rows=rows, per_seed=per_seed, targets=targets,
                 benchmark=getattr(history, 'name', ''), coverage=coverage)


# -- methods, loading and the end-to-end run -----------------------------------

FENNEC_SPACE = 'fennec_space'
# The paper's transfer phase (NMF, k = 5, raw scores) with the same fold-in.
PAPER_NMF = 'paper_nmf'


def space_method(space_config: Mapping[str, Any] | None = None,
                 seed: int = 0) -> baselines.Method:
  """`Method` `fennec_space`: the transfer space fit on the training tasks.

  The space is fit once per call (i.e. once per target, as it depends on
  neither K nor the draw); all draws are folded in as one batch, K = 0
  giving the prior.

  Args:
    space_config: overrides of `fennec_jax.space.SpaceConfig` fields.
    seed: the space's seed.

  Returns:
    The method.
  """
  from fennec_jax import space as space_lib  # pylint: disable=g-import-not-at-top

  overrides = dict(space_config or {})
  overrides.setdefault('seed', seed)
  config = space_lib.SpaceConfig(**overrides)

  def method(train: Any, target: str, observed: np.ndarray) -> np.ndarray:
    del target
    fitted = space_lib.fit(train.scores, train.mask, config)
    obs_mask = ~np.isnan(observed)
    fold = fitted.fold_in(np.where(obs_mask, observed, 0.0), obs_mask)
    return np.asarray(fold.predicted, np.float64)

  return method


def build_methods(
    history: Any,
    names: Sequence[str] | None = None,
    baseline_scores: Mapping[str, Any] | None = None,
    space_config: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, baselines.Method]:
  """The protocol's methods for `history`, optionally restricted to `names`.

  Args:
    history: the evaluated History.
    names: method names to keep (default: all that apply).
    baseline_scores: raw estimator scores by method name.
    space_config: `SpaceConfig` overrides for `fennec_space`.
    seed: seed of the transfer space.

  Returns:
    Name -> method: baselines, then `fennec_space` and `paper_nmf` (the
    paper's NMF transfer space, k = 5, folded in the same way).

  Raises:
    ValueError: a requested name that does not apply, listing the valid ones.
  """
  from fennec_jax import recommender  # pylint: disable=g-import-not-at-top
  methods = baselines.baseline_methods(history, baseline_scores)
  methods[FENNEC_SPACE] = space_method(space_config, seed)
  methods[PAPER_NMF] = space_method(recommender.PAPER_SPACE, seed)
  if names:
    unknown = [n for n in names if n not in methods]
    if unknown:
      raise ValueError(f'unknown or inapplicable methods {unknown} for '
                       f'{getattr(history, "name", "")!r}; valid: '
                       f'{list(methods)}')
    methods = {n: methods[n] for n in names}
  return methods


def load_history(benchmark: str | None = None,
                 history_path: str | None = None) -> tuple[Any, dict]:
  """A bundled benchmark (with its shipped estimator scores) or a CSV file.

  Args:
    benchmark: a name from `fennec_jax.benchmarks.list_benchmarks()`.
    history_path: a long-format CSV (`model,task,score`, see
      `fennec_jax.history`).

  Returns:
    `(history, baseline_scores)`; baseline scores are empty for a CSV.

  Raises:
    ValueError: if not exactly one of the two is given.
  """
  if bool(benchmark) == bool(history_path):
    raise ValueError('give exactly one of --benchmark or --history, got '
                     f'benchmark={benchmark!r}, history={history_path!r}.')
  from fennec_jax import benchmarks  # pylint: disable=g-import-not-at-top
  from fennec_jax import history as history_lib  # pylint: disable=g-import-not-at-top
  if history_path:
    return history_lib.History.read_csv(history_path), {}
  history = benchmarks.load_benchmark(benchmark)
  return history, dict(benchmarks.load_baseline_scores(benchmark))


def run(
    out_dir: str,
    benchmark: str | None = None,
    history_path: str | None = None,
    k_shots: Sequence[int] = DEFAULT_K_SHOTS,
    num_seeds: int = DEFAULT_NUM_SEEDS,
    targets: Sequence[str] | None = None,
    all_targets: bool = False,
    methods: Sequence[str] | None = None,
    space_config: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> tuple[Results, dict[str, str]]:
  """Loads a history, runs the protocol and writes CSV, markdown and PNG.

  This is the one library function behind `fennec evaluate` and
  `experiments/main.py --config=experiments/configs/evaluate.py`.

  Args:
    out_dir: where `results.{csv,md,png}` go (created).
    benchmark: bundled benchmark name (exclusive with `history_path`).
    history_path: long-format CSV file.
    k_shots: K values.
    num_seeds: draws per (target, K).
    targets: task ids; default: the benchmark's reported targets, or all.
    all_targets: evaluate every task (ignored if `targets` is given).
    methods: method names to run (default all that apply).
    space_config: `SpaceConfig` overrides.
    seed: root seed (draws and space).

  Returns:
    `(results, paths)`.
  """
  start = time.perf_counter()
  history, baseline_scores = load_history(benchmark, history_path)
  logging.info('evaluating %r', history)
  method_fns = build_methods(history, methods, baseline_scores, space_config,
                             seed)
  if not targets:
    targets = default_targets(history, all_targets)
  results = evaluate(history, method_fns, k_shots=k_shots,
                     num_seeds=num_seeds, targets=targets, seed=seed)
  paths = report.write_all(results, out_dir)
  logging.info('evaluate: %d targets, %d methods in %.1fs', len(targets),
               len(method_fns), time.perf_counter() - start)
  return results, paths


def run_from_config(config: Any, workdir: str) -> tuple[Results,
                                                        dict[str, str]]:
  """`run` driven by an `experiments/configs/evaluate.py` ConfigDict."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  return run(
      out_dir=workdir,
      benchmark=config.benchmark or None,
      history_path=config.history or None,
      k_shots=tuple(config.k_shots),
      num_seeds=config.num_seeds,
      targets=tuple(config.targets) or None,
      all_targets=config.all_targets,
      methods=tuple(config.methods) or None,
      space_config=config.space.to_dict(),
      seed=config.seed)


# -- the images protocol (offline benchmark: methods see the target's images) --

# Estimators run over every zoo model by default: every registry estimator
# (the source-output ones, LEEP and NCE, where the source offers the zoo's
# source heads; `ImageSource.source_probs`).
DEFAULT_IMAGE_ESTIMATORS = ('logme', 'reg_hscore', 'hscore', 'transrate',
                            'sfda', 'fda', 'gbc', 'nleep', 'parc', 'knn',
                            'linear_probe', 'leep', 'nce')
# Estimators that read source-head outputs instead of features.
SOURCE_OUTPUT_ESTIMATORS = ('leep', 'nce')


def image_methods(
    history: Any,
    source: offline_source.ImageSource,
    targets: Sequence[str],
    estimators: Sequence[str] = DEFAULT_IMAGE_ESTIMATORS,
    num_proxy_images: int = 100,
    space_config: Mapping[str, Any] | None = None,
    paper: bool = True,
    seed: int = 0,
) -> dict[str, baselines.Method]:
  """Methods of the images protocol, each timing its per-target work.

  Every method carries `seconds: {target: s}`, the wall time a user would
  spend on a new task (not the leave-one-out refits): `fennec` = one proxy
  pass over `num_proxy_images` probe images + the recommendation;
  `fennec_paper` = the same proxy pass + its prediction; each estimator = a
  forward pass of every zoo model over the target's probe (shared by all
  estimators, so each is charged it in full) + the estimator itself;
  `popularity` = its (negligible) computation.

  Args:
    history: the offline History (models x targets).
    source: where probes and features come from.
    targets: the targets that will be evaluated (estimators run there only).
    estimators: registry names of feature-based estimators.
    num_proxy_images: class-balanced probe images seen by the proxy.
    space_config: `SpaceConfig` overrides of Fennec's space.
    paper: include `fennec_paper` (`fennec_jax.paper`).
    seed: seed of the proxy probe and of the space.

  Returns:
    `{'popularity', 'fennec', 'fennec_ridge', 'fennec_paper',
    <estimators>...}` (`fennec_ridge`: Fennec with the 'ridge' task map).
  """
  from fennec_jax import recommender  # pylint: disable=g-import-not-at-top
  from fennec_jax import space as space_lib  # pylint: disable=g-import-not-at-top
  from fennec_jax.estimators import registry  # pylint: disable=g-import-not-at-top

  proxy_feats, proxy_seconds = offline_source.proxy_task_features(
      source, history.task_ids, num_proxy_images, seed)
  logging.info('images protocol: proxy features of %d tasks (%d images each)',
               len(proxy_feats), num_proxy_images)

  overrides = dict(space_config or {})
  overrides.setdefault('seed', seed)
  config = recommender.FennecConfig(space=space_lib.SpaceConfig(**overrides))

  def fennec_method(config):
    def method(train: Any, target: str, observed: np.ndarray) -> np.ndarray:
      model = recommender.Fennec(config).fit(
          train, task_embeddings={t: proxy_feats[t] for t in train.task_ids})
      emb = [proxy_feats[target]] * len(observed)
      predict = lambda: model.predict(task_embeddings=emb[:1],
                                      observed=observed[:1])
      predict()  # Compile outside the timing (a deployment is warm).
      _, seconds = offline_source.timed(predict)
      method.seconds[target] = proxy_seconds[target] + seconds
      return model.predict(task_embeddings=emb, observed=observed)[0]
    method.seconds = {}
    return method

  fennec = fennec_method(config)
  # The same space with the mean-embedding ridge map, for comparison.
  fennec_ridge = fennec_method(dataclasses.replace(config, task_map='ridge'))
  methods: dict[str, baselines.Method] = {}

  def popularity(train: Any, target: str, observed: np.ndarray) -> np.ndarray:
    out, seconds = offline_source.timed(baselines.popularity, train, target, observed)
    popularity.seconds[target] = seconds
    return out

  popularity.seconds = {}
  methods['popularity'] = popularity
  methods['fennec'] = fennec
  methods['fennec_ridge'] = fennec_ridge

  if paper:
    from fennec_jax import paper as paper_lib  # pylint: disable=g-import-not-at-top
    graphs = source.graphs(history.model_ids)

    meta = history.task_metadata
    task_meta = None
    if 'num_classes' in meta and 'train_size' in meta:
      task_meta = {t: {'num_train': float(meta['train_size'][j]),
                       'num_classes': float(meta['num_classes'][j])}
                   for j, t in enumerate(history.task_ids)}

    def fennec_paper(train: Any, target: str,
                     observed: np.ndarray) -> np.ndarray:
      model = paper_lib.FennecPaper().fit(
          train, {t: proxy_feats[t] for t in train.task_ids}, graphs,
          None, None if task_meta is None else {
              t: task_meta[t] for t in train.task_ids})
      tm = ([task_meta[target]] if model.use_task_features and task_meta
            else None)
      out, seconds = offline_source.timed(model.predict, [proxy_feats[target]], tm)
      fennec_paper.seconds[target] = proxy_seconds[target] + seconds
      pred = np.asarray(getattr(out, 'merged', out))[0]
      return np.broadcast_to(pred, observed.shape).copy()

    fennec_paper.seconds = {}
    methods['fennec_paper'] = fennec_paper

  # Estimators: every zoo model's features on each target's probe, once.
  est_scores, est_seconds = zoo_estimator_scores(history.model_ids, source,
                                                 targets, estimators)
  for name in est_scores:
    def method(train, target, observed, name=name):
      del train
      return np.broadcast_to(est_scores[name][target], observed.shape).copy()
    method.seconds = est_seconds[name]
    method.tasks = frozenset(est_scores[name])
    methods[name] = method
  return {name: _recording(method) for name, method in methods.items()}


def _recording(method: baselines.Method) -> baselines.Method:
  """`method` that also keeps its first-draw prediction of every target in
  `.predictions[target]` (the first K of the protocol, i.e. K = 0 if asked);
  its other attributes (`seconds`, `tasks`) are shared, not copied."""

  @functools.wraps(method)
  def wrapper(train: Any, target: str, observed: np.ndarray) -> np.ndarray:
    out = method(train, target, observed)
    wrapper.predictions[target] = np.array(out, np.float64)[0]
    return out

  wrapper.predictions = {}
  return wrapper


def zoo_estimator_scores(
    model_ids: Sequence[str], source: offline_source.ImageSource, targets: Sequence[str],
    estimators: Sequence[str]) -> tuple[dict[str, dict[str, np.ndarray]],
                                        dict[str, dict[str, float]]]:
  """Every estimator over every zoo model on each target's probe, timed.

  The zoo's forward pass over a target's probe is done once (compiled
  beforehand, outside the timing) and charged in full to every estimator
  (plus the estimator's own time, measured on a second, compiled call),
  as a user running just that estimator would pay it; LEEP / NCE read the
  source heads' outputs of the same pass (NCE: their argmax).

  Args:
    model_ids: the zoo, in the history's order.
    source: probes, features and (optionally) source-head outputs.
    targets: tasks to score.
    estimators: registry names.

  Returns:
    (`{estimator: {target: [M] scores}}`, `{estimator: {target: seconds}}`);
    source-output estimators are left out (logged) if the source has no
    source heads.

  Raises:
    ValueError: an unknown estimator name.
  """
  from fennec_jax.estimators import registry  # pylint: disable=g-import-not-at-top
  for name in estimators:
    registry.get_spec(name)  # Unknown names fail before any work.
  est_scores: dict[str, dict[str, np.ndarray]] = {}
  est_seconds: dict[str, dict[str, float]] = {}
  if not targets:
    return est_scores, est_seconds
  for target in targets:
    images, labels = source.probe(target)
    for model_id in model_ids:  # Compile outside the timed forward passes.
      source.warm(model_id, images)
    feats, forward = [], 0.0
    for model_id in model_ids:
      f, s = offline_source.timed(source.model_features, model_id, images)
      feats.append(f)
      forward += s
    probs = [source.source_probs(m, images) for m in model_ids]
    for name in estimators:
      if name in SOURCE_OUTPUT_ESTIMATORS:
        if any(p is None for p in probs):
          if target == targets[0]:
            logging.warning('images protocol: %s needs source-head outputs, '
                            'which this source lacks; left out.', name)
          continue
        inputs = (probs if name == 'leep' else
                  [np.argmax(p, -1).astype(np.int32) for p in probs])
      else:
        inputs = feats
      registry.score_models(name, inputs, labels)  # Compile, untimed.
      scores, s = offline_source.timed(registry.score_models, name, inputs, labels)
      scores = np.asarray(scores, np.float64)
      if not np.all(np.isfinite(scores)):
        raise ValueError(f'estimator {name!r} gave non-finite scores on '
                         f'target {target!r}: {scores}')
      est_scores.setdefault(name, {})[target] = scores
      est_seconds.setdefault(name, {})[target] = forward + s
    logging.info('images protocol: %s: %d models forward in %.2fs',
                 target, len(feats), forward)
    # Each target's class count compiles every estimator anew; keeping all of
    # them made XLA:CPU run out of memory for code after 18 of 26 offline
    # targets. Dropping the compiled estimators frees it; the zoo's forward
    # passes recompile once per target, outside every timed call.
    jax.clear_caches()
  return est_scores, est_seconds


def run_images(
    out_dir: str,
    source: offline_source.ImageSource | None = None,
    history: Any = None,
    k_shots: Sequence[int] = DEFAULT_K_SHOTS,
    num_seeds: int = DEFAULT_NUM_SEEDS,
    targets: Sequence[str] | None = None,
    estimators: Sequence[str] = DEFAULT_IMAGE_ESTIMATORS,
    paper: bool = True,
    space_config: Mapping[str, Any] | None = None,
    seed: int = 0,
    data_dir: str | None = None,
) -> tuple[Results, dict[str, str]]:
  """The images protocol (`fennec evaluate --protocol=images`).

  Leave one task out as `evaluate`, with methods that see the target's
  probe images (`image_methods`); writes `results.{csv,md,png}` with a
  `seconds_per_target` column, `quality_vs_time.png` and
  `predicted_vs_true.png` (each method's first-draw prediction at the first
  K of `k_shots` vs the fine-tuned accuracy).

  Args:
    out_dir: output directory.
    source: probes and features (default: the committed offline benchmark).
    history: the ground truth (default: `offline.load()`).
    k_shots: K values.
    num_seeds: draws per (target, K).
    targets: default every task.
    estimators: feature-based estimators to run over the zoo.
    paper: include `fennec_paper`.
    space_config: `SpaceConfig` overrides for `fennec`.
    seed: root seed.
    data_dir: offline artifacts directory for the default `source` and
      `history` (default: the committed ones).

  Returns:
    `(results, paths)`.
  """
  start = time.perf_counter()
  if history is None:
    from fennec_jax.benchmarks import offline  # pylint: disable=g-import-not-at-top
    history = offline.load(data_dir)
  source = source or offline_source.OfflineSource(data_dir)
  targets = list(targets or history.task_ids)
  methods = image_methods(history, source, targets, estimators,
                          space_config=space_config, paper=paper, seed=seed)
  results = evaluate(history, methods, k_shots=k_shots, num_seeds=num_seeds,
                     targets=targets, seed=seed)
  results.predictions = {n: m.predictions for n, m in methods.items()}
  paths = report.write_all(results, out_dir)
  paths['time_png'] = os.path.join(out_dir, 'quality_vs_time.png')
  report.write_time_plot(results, paths['time_png'])
  paths['pred_png'] = os.path.join(out_dir, 'predicted_vs_true.png')
  scores = np.where(history.mask, history.scores, np.nan)
  report.write_prediction_plot(
      results.predictions,
      {t: scores[:, history.task_index(t)] for t in targets},
      paths['pred_png'], f'{getattr(history, "name", "")}: predicted vs true '
      f'accuracy (K={k_shots[0]}, first draw)')
  logging.info('images protocol: %d targets in %.1fs', len(targets),
               time.perf_counter() - start)
  return results, paths


# -- leave one model out (cold-start models) ------------------------------------

MODELS_OUT_COLUMNS = ('method', 'model', 'pearson', 'weighted_tau',
                      'rank_error')


def metadata_embeddings(history: Any, max_categories: int = 50
                        ) -> tuple[np.ndarray, list[str]]:
  """Model features from the history's model metadata (for cold start).

  Numeric columns enter as is (`num_params`: log10), with missing values set
  to the column mean plus a missing-indicator column; text columns are one-hot
  (columns with one value or more than `max_categories` are left out, as is
  any column unique per model; each drop is logged).

  Args:
    history: the History.
    max_categories: most categories of a one-hot column.

  Returns:
    (`[M, E]` features, their names).

  Raises:
    ValueError: if no metadata column is usable.
  """
  cols, names = [], []
  for key in sorted(history.model_metadata):
    v = np.asarray(history.model_metadata[key])
    if v.dtype.kind == 'f':
      x = np.log10(np.maximum(v, 1.0)) if key == 'num_params' else v
      miss = np.isnan(x)
      if miss.all() or np.nanstd(x) == 0:
        logging.info('metadata_embeddings: %s is constant/empty; left out.',
                     key)
        continue
      cols.append(np.where(miss, np.nanmean(x), x))
      names.append(key)
      if miss.any():
        cols.append(miss.astype(np.float64))
        names.append(f'{key}:missing')
      continue
    cats = sorted({str(c) for c in v if c is not None})
    if not 1 < len(cats) <= min(max_categories, len(v) - 1):
      logging.info('metadata_embeddings: %s has %d categories; left out.',
                   key, len(cats))
      continue
    for c in cats:
      cols.append(np.array([str(x) == c for x in v], np.float64))
      names.append(f'{key}={c}')
  if not cols:
    raise ValueError(f'no usable model metadata in {history.name!r} '
                     f'(columns: {sorted(history.model_metadata)}).')
  return np.stack(cols, 1), names


def _percentile(value: float, others: np.ndarray) -> float:
  """Fraction of `others` below `value` (ties count half)."""
  return float(((others < value).sum() + 0.5 * (others == value).sum())
               / len(others))


def evaluate_models_out(
    history: Any,
    model_embeddings: np.ndarray,
    models: Sequence[str] | None = None,
    space_config: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
  """Leave one model out: place an unseen model from its embedding.

  For each held-out model m (default: every model observed on >= 3 tasks)
  the methods see the history without m's row and m's embedding, and
  predict m's score on each task m was observed on. Metrics per model, over
  its tasks: Pearson and weighted tau of predicted vs true scores, and
  `rank_error`, the mean over tasks of |predicted - true| percentile of m
  among the task's other models (both against their true scores).

  Methods: `fennec_cold` (`Fennec.fit(model_embeddings=...)` +
  `add_models`), `mean_model` (the task's mean score: no model knowledge),
  `nearest_model` (the scores of the nearest model in standardized
  embedding space, the task mean where it has none).

  Args:
    history: the History.
    model_embeddings: `[M, E]` features of every model.
    models: held-out models (default as above).
    space_config: `SpaceConfig` overrides.
    seed: seed of the space.

  Returns:
    Rows `{method, model, pearson, weighted_tau, rank_error}` plus one
    `model='MEAN'` row per method (NaN values left out of the mean).

  Raises:
    ValueError: embeddings of the wrong shape or an unknown model.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  from fennec_jax import recommender  # pylint: disable=g-import-not-at-top
  from fennec_jax import space as space_lib  # pylint: disable=g-import-not-at-top

  emb = np.asarray(model_embeddings, np.float64)
  if emb.ndim != 2 or emb.shape[0] != history.num_models:
    raise ValueError(f'model_embeddings must be [{history.num_models}, E], '
                     f'got {emb.shape}.')
  counts = history.mask.sum(1)
  if models is None:
    models = [m for i, m in enumerate(history.model_ids) if counts[i] >= 3]
  overrides = dict(space_config or {})
  overrides.setdefault('seed', seed)
  config = recommender.FennecConfig(space=space_lib.SpaceConfig(**overrides))
  z = (emb - emb.mean(0)) / np.where(emb.std(0) > 0, emb.std(0), 1.0)
  rows = []
  for model in models:
    i = history.model_index(model)
    keep = np.arange(history.num_models) != i
    train = history.subset(models=keep)
    tasks = np.flatnonzero(history.mask[i])
    true = history.scores[i, tasks]
    fennec = recommender.Fennec(config).fit(train, model_embeddings=emb[keep])
    grown = fennec.add_models([f'{model}::cold'], emb[i:i + 1])
    task_means = np.array([history.scores[keep & history.mask[:, t], t].mean()
                           for t in tasks])
    nearest = np.flatnonzero(keep)[np.argmin(
        ((z[keep] - z[i]) ** 2).sum(1))]
    preds = {
        'fennec_cold': np.asarray(grown.space.predict(), np.float64)[-1,
                                                                     tasks],
        'mean_model': task_means,
        'nearest_model': np.where(history.mask[nearest, tasks],
                                  history.scores[nearest, tasks], task_means),
    }
    for name, pred in preds.items():
      errs = []
      for p, y, t in zip(pred, true, tasks):
        others = history.scores[keep & history.mask[:, t], t]
        errs.append(abs(_percentile(p, others) - _percentile(y, others)))
      defined = len(tasks) >= 2 and np.std(pred) > 0 and np.std(true) > 0
      rows.append({
          'method': name, 'model': model,
          'pearson': (float(stats.pearsonr(pred, true)[0]) if defined
                      else float('nan')),
          'weighted_tau': (float(stats.weightedtau(pred, true)[0]) if defined
                           else float('nan')),
          'rank_error': float(np.mean(errs))})
    logging.info('models out: %s (%d tasks) done', model, len(tasks))
  for name in ('fennec_cold', 'mean_model', 'nearest_model'):
    mine = [r for r in rows if r['method'] == name]
    rows.append({'method': name, 'model': MEAN, **{
        k: _nanmean([r[k] for r in mine], f'{name} {k} over models')
        for k in ('pearson', 'weighted_tau', 'rank_error')}})
  return rows


def run_models_out(out_dir: str, benchmark: str | None = None,
                   history_path: str | None = None,
                   space_config: Mapping[str, Any] | None = None,
                   seed: int = 0) -> tuple[list[dict[str, Any]], str]:
  """`fennec evaluate --protocol=models`: cold-start models from metadata.

  Writes `out_dir/models_out.csv` (`MODELS_OUT_COLUMNS`).

  Returns:
    (rows, csv path).
  """
  import csv  # pylint: disable=g-import-not-at-top
  history, _ = load_history(benchmark, history_path)
  emb, names = metadata_embeddings(history)
  logging.info('models out: %d metadata features: %s', len(names), names)
  rows = evaluate_models_out(history, emb, space_config=space_config,
                             seed=seed)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, 'models_out.csv')
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=MODELS_OUT_COLUMNS)
    w.writeheader()
    for r in rows:
      w.writerow({k: (f'{v:.6f}' if isinstance(v, float) else v)
                  for k, v in r.items()})
  return rows, path
