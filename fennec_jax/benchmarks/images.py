"""The images protocol (`fennec evaluate --protocol=images`).

Leave one task out as `fennec_jax.benchmarks.protocol`, on a benchmark that
ships images and the candidate models (the offline benchmark): methods also
see the target's probe images, and each is timed as a user would pay for a
new task. `fennec` and `fennec_paper` embed the probe with the proxy; every
estimator runs over every zoo model's features on the probe.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import os
import time
from typing import Any

from absl import logging
import numpy as np

from fennec_jax import paper as paper_lib
from fennec_jax import recommender
from fennec_jax import space as space_lib
from fennec_jax.benchmarks import baselines
from fennec_jax.benchmarks import protocol
from fennec_jax.benchmarks import report
from fennec_jax.benchmarks.offline import loader as offline_loader
from fennec_jax.benchmarks.offline import source as offline_source
from fennec_jax.estimators import registry

# Estimators run over every zoo model by default: every registry estimator
# (the source-output ones, LEEP and NCE, where the source offers the zoo's
# source heads; `ImageSource.source_probs`).
DEFAULT_IMAGE_ESTIMATORS = ('logme', 'reg_hscore', 'hscore', 'transrate',
                            'sfda', 'fda', 'gbc', 'nleep', 'parc', 'knn',
                            'linear_probe', 'leep', 'nce')
# Estimators that read source-head outputs instead of features.
SOURCE_OUTPUT_ESTIMATORS = ('leep', 'nce')

# The protocol's own methods; the estimators follow under their registry
# names.
POPULARITY = 'popularity'
FENNEC = 'fennec'
FENNEC_RIDGE = 'fennec_ridge'  # Fennec with the mean-embedding ridge map.
FENNEC_PAPER = 'fennec_paper'


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

  Every method's prediction is `baselines.Timed` with the wall time a user
  would spend on a new task (not the leave-one-out refits): `fennec` = one
  proxy pass over `num_proxy_images` probe images + the recommendation;
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
    <estimators>...}`; each estimator covers the targets it scored.
  """
  proxy_feats, proxy_seconds = offline_source.proxy_task_features(
      source, history.task_ids, num_proxy_images, seed)
  logging.info('images protocol: proxy features of %d tasks (%d images each)',
               len(proxy_feats), num_proxy_images)

  overrides = dict(space_config or {})
  overrides.setdefault('seed', seed)
  config = recommender.FennecConfig(space=space_lib.SpaceConfig(**overrides))
  methods = {
      POPULARITY: baselines.Method(_timed_popularity),
      FENNEC: baselines.Method(
          _fennec_predict(config, proxy_feats, proxy_seconds)),
      FENNEC_RIDGE: baselines.Method(_fennec_predict(
          dataclasses.replace(config, task_map='ridge'), proxy_feats,
          proxy_seconds)),
  }
  if paper:
    methods[FENNEC_PAPER] = baselines.Method(_paper_predict(
        history, source.graphs(history.model_ids), proxy_feats,
        proxy_seconds))

  # Estimators: every zoo model's features on each target's probe, once.
  est_scores, est_seconds = zoo_estimator_scores(history.model_ids, source,
                                                 targets, estimators)
  for name in est_scores:
    methods[name] = baselines.Method(
        _estimator_predict(est_scores[name], est_seconds[name]),
        tasks=frozenset(est_scores[name]))
  return methods


def _timed_popularity(train: Any, target: str,
                      observed: np.ndarray) -> baselines.Timed:
  """`baselines.popularity`, timed."""
  out, seconds = offline_source.timed(baselines.popularity, train, target,
                                      observed)
  return baselines.Timed(out, seconds)


def _fennec_predict(config: recommender.FennecConfig,
                    proxy_feats: Mapping[str, np.ndarray],
                    proxy_seconds: Mapping[str, float]) -> baselines.Predict:
  """Fennec fit on the training tasks' proxy embeddings; charged the
  target's proxy pass and one warm recommendation."""

  def predict(train: Any, target: str,
              observed: np.ndarray) -> baselines.Timed:
    model = recommender.Fennec(config).fit(
        train, task_embeddings={t: proxy_feats[t] for t in train.task_ids})
    emb = [proxy_feats[target]] * len(observed)
    recommend_one = lambda: model.predict(task_embeddings=emb[:1],
                                          observed=observed[:1])
    recommend_one()  # Compile outside the timing (a deployment is warm).
    _, seconds = offline_source.timed(recommend_one)
    return baselines.Timed(
        model.predict(task_embeddings=emb, observed=observed)[0],
        proxy_seconds[target] + seconds)

  return predict


def _paper_predict(history: Any, graphs: Mapping[str, Any] | None,
                   proxy_feats: Mapping[str, np.ndarray],
                   proxy_seconds: Mapping[str, float]) -> baselines.Predict:
  """`FennecPaper` fit on the training tasks (with the history's task
  metadata where it has `num_classes` and `train_size`); charged the
  target's proxy pass and its prediction."""
  meta = history.task_metadata
  task_meta = None
  if 'num_classes' in meta and 'train_size' in meta:
    task_meta = {t: {'num_train': float(meta['train_size'][j]),
                     'num_classes': float(meta['num_classes'][j])}
                 for j, t in enumerate(history.task_ids)}

  def predict(train: Any, target: str,
              observed: np.ndarray) -> baselines.Timed:
    model = paper_lib.FennecPaper().fit(
        train, {t: proxy_feats[t] for t in train.task_ids}, graphs,
        None, None if task_meta is None else {
            t: task_meta[t] for t in train.task_ids})
    tm = ([task_meta[target]] if model.use_task_features and task_meta
          else None)
    out, seconds = offline_source.timed(model.predict, [proxy_feats[target]],
                                        tm)
    pred = np.asarray(getattr(out, 'merged', out))[0]
    return baselines.Timed(np.broadcast_to(pred, observed.shape).copy(),
                           proxy_seconds[target] + seconds)

  return predict


def _estimator_predict(scores: Mapping[str, np.ndarray],
                       seconds: Mapping[str, float]) -> baselines.Predict:
  """An estimator's precomputed `[M]` scores of each target, with their
  time."""

  def predict(train: Any, target: str,
              observed: np.ndarray) -> baselines.Timed:
    del train
    return baselines.Timed(
        np.broadcast_to(scores[target], observed.shape).copy(),
        seconds[target])

  return predict


def _warm_zoo(source: offline_source.ImageSource, model_ids: Sequence[str],
              images: np.ndarray) -> None:
  """Compiles every zoo model's pass over `images` before it is timed.

  Run for every target: a probe of another size would compile another pass
  (the zoo's passes pad to fixed chunks, so in practice only the first
  target compiles); where they are compiled, this costs one untimed pass
  each.
  """
  for model_id in model_ids:
    source.warm(model_id, images)


def zoo_estimator_scores(
    model_ids: Sequence[str], source: offline_source.ImageSource,
    targets: Sequence[str], estimators: Sequence[str]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, float]]]:
  """Every estimator over every zoo model on each target's probe, timed.

  Estimators take the class count as data, padded to a power-of-two
  bucket, so targets share compilations (one per bucket) and nothing is
  dropped between targets. The zoo's forward pass over a target's probe is
  done once (compiled beforehand, outside the timing) and charged in full to every estimator
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
    ValueError: an unknown estimator name, or non-finite scores.
  """
  for name in estimators:
    registry.get_spec(name)  # Unknown names fail before any work.
  est_scores: dict[str, dict[str, np.ndarray]] = {}
  est_seconds: dict[str, dict[str, float]] = {}
  for target in targets:
    images, labels = source.probe(target)
    _warm_zoo(source, model_ids, images)
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
      scores, s = offline_source.timed(registry.score_models, name, inputs,
                                       labels)
      scores = np.asarray(scores, np.float64)
      if not np.all(np.isfinite(scores)):
        raise ValueError(f'estimator {name!r} gave non-finite scores on '
                         f'target {target!r}: {scores}')
      est_scores.setdefault(name, {})[target] = scores
      est_seconds.setdefault(name, {})[target] = forward + s
    logging.info('images protocol: %s: %d models forward in %.2fs',
                 target, len(feats), forward)
  return est_scores, est_seconds


def run_images(
    out_dir: str,
    source: offline_source.ImageSource | None = None,
    history: Any = None,
    k_shots: Sequence[int] = protocol.DEFAULT_K_SHOTS,
    num_seeds: int = protocol.DEFAULT_NUM_SEEDS,
    targets: Sequence[str] | None = None,
    estimators: Sequence[str] = DEFAULT_IMAGE_ESTIMATORS,
    paper: bool = True,
    space_config: Mapping[str, Any] | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    models: Sequence[str] | None = None,
) -> tuple[protocol.Results, dict[str, str]]:
  """The images protocol (`fennec evaluate --protocol=images`).

  Leave one task out as `protocol.evaluate`, with methods that see the
  target's probe images (`image_methods`); writes `results.{csv,md,png}`
  with a `seconds_per_target` column, `quality_vs_time.png` and
  `predicted_vs_true.png` (each method's first-draw prediction at the first
  K of `k_shots` vs the fine-tuned accuracy).

  Args:
    out_dir: output directory.
    source: probes and features (default: the committed offline benchmark).
    history: the ground truth (default: the offline benchmark's).
    k_shots: K values.
    num_seeds: draws per (target, K).
    targets: default every task.
    estimators: feature-based estimators to run over the zoo.
    paper: include `fennec_paper`.
    space_config: `SpaceConfig` overrides for `fennec`.
    seed: root seed.
    data_dir: offline artifacts directory for the default `source` and
      `history` (default: the committed ones).
    models: the candidate models (default: the whole zoo); a smaller zoo
      makes a quick run, since every estimator runs every candidate.

  Returns:
    `(results, paths)`.

  Raises:
    ValueError: a model id not in the history (naming the valid ones).
  """
  start = time.perf_counter()
  if history is None:
    history = offline_loader.load(data_dir)
  if models:
    history = history.subset(models=list(models))
  source = source or offline_source.OfflineSource(data_dir)
  targets = list(targets or history.task_ids)
  methods = image_methods(history, source, targets, estimators,
                          space_config=space_config, paper=paper, seed=seed)
  results = protocol.evaluate(history, methods, k_shots=k_shots,
                              num_seeds=num_seeds, targets=targets, seed=seed)
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
