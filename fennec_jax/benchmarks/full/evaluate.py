"""Leave one task out on a public table's ground truth, from stored work.

The methods see the target's probe as a user would: `fennec` and
`fennec_paper` embed the proxy subset (its stored seconds are charged), every
estimator ran over every candidate's features on the probe (the candidates'
forward passes are charged to each estimator in full, plus its own time),
`popularity` ranks by the other tasks' scores. Where the benchmark ships
published estimator scores (Model Spider's LogME, ...), they are evaluated
beside ours as `published_<name>` on the same targets and models.
"""

from collections.abc import Mapping, Sequence
import time
from typing import Any

import networkx as nx
import numpy as np

from fennec_jax import paper as paper_lib
from fennec_jax import recommender
from fennec_jax import space as space_lib
from fennec_jax.benchmarks import baselines
from fennec_jax.benchmarks import protocol
from fennec_jax.benchmarks import public

POPULARITY = 'popularity'
FENNEC = 'fennec'
FENNEC_PAPER = 'fennec_paper'


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
  start = time.perf_counter()
  out = fn(*args, **kwargs)
  return out, time.perf_counter() - start


def fennec_config(space_config: Mapping[str, Any], seed: int
                  ) -> recommender.FennecConfig:
  overrides = dict(space_config)
  overrides.setdefault('seed', seed)
  return recommender.FennecConfig(space=space_lib.SpaceConfig(**overrides))


def _popularity(train: Any, target: str,
                observed: np.ndarray) -> baselines.Timed:
  out, seconds = _timed(baselines.popularity, train, target, observed)
  return baselines.Timed(out, seconds)


def _fennec(config: recommender.FennecConfig,
            proxy: Mapping[str, np.ndarray],
            proxy_seconds: Mapping[str, float]) -> baselines.Predict:
  def predict(train, target, observed):
    model = recommender.Fennec(config).fit(
        train, task_embeddings={t: proxy[t] for t in train.task_ids})
    emb = [proxy[target]] * len(observed)
    model.predict(task_embeddings=emb[:1], observed=observed[:1])  # Warm.
    _, seconds = _timed(model.predict, task_embeddings=emb[:1],
                        observed=observed[:1])
    pred = model.predict(task_embeddings=emb, observed=observed)[0]
    return baselines.Timed(pred, proxy_seconds[target] + seconds)
  return predict


def _paper(history: Any, graphs: Mapping[str, nx.DiGraph],
           proxy: Mapping[str, np.ndarray],
           proxy_seconds: Mapping[str, float]) -> baselines.Predict:
  def predict(train, target, observed):
    model = paper_lib.FennecPaper().fit(
        train, {t: proxy[t] for t in train.task_ids}, graphs)
    out, seconds = _timed(model.predict, [proxy[target]], None)
    pred = np.asarray(getattr(out, 'merged', out))[0]
    return baselines.Timed(np.broadcast_to(pred, observed.shape).copy(),
                           proxy_seconds[target] + seconds)
  del history
  return predict


def _estimator(model_ids: Sequence[str],
               scores: Mapping[str, Mapping[str, float]],
               seconds: Mapping[str, Mapping[str, float]]
               ) -> baselines.Predict:
  def predict(train, target, observed):
    del train
    row = np.asarray([scores[target][m] for m in model_ids], np.float64)
    return baselines.Timed(np.broadcast_to(row, observed.shape).copy(),
                           float(sum(seconds[target].values())))
  return predict


def published_methods(benchmark: str, history: Any) -> dict[str, Any]:
  """The benchmark's shipped estimator scores as `published_<name>`
  methods, restricted to `history`'s models and tasks."""
  out = {}
  for name, est in public.load_baseline_scores(benchmark).items():
    models = [m for m in history.model_ids if m in est.model_ids]
    if len(models) < 2 or not set(history.task_ids) & set(est.task_ids):
      continue
    out[f'published_{name}'] = baselines.estimator_method(
        name, est, list(history.model_ids))
  return out


def methods(history: Any, proxy: Mapping[str, np.ndarray],
            proxy_seconds: Mapping[str, float],
            est_scores: Mapping[str, Mapping[str, Mapping[str, float]]],
            est_seconds: Mapping[str, Mapping[str, Mapping[str, float]]],
            graphs: Mapping[str, nx.DiGraph] | None,
            space_config: Mapping[str, Any], seed: int,
            benchmark: str) -> dict[str, baselines.Method]:
  """Every method of the full benchmark on one table."""
  out = {
      POPULARITY: baselines.Method(_popularity),
      FENNEC: baselines.Method(_fennec(fennec_config(space_config, seed),
                                       proxy, proxy_seconds)),
  }
  if graphs is not None:
    out[FENNEC_PAPER] = baselines.Method(_paper(history, graphs, proxy,
                                                proxy_seconds))
  for name in est_scores:
    out[name] = baselines.Method(
        _estimator(history.model_ids, est_scores[name], est_seconds[name]),
        tasks=frozenset(est_scores[name]))
  out.update(published_methods(benchmark, history))
  return out


def evaluate(history: Any, methods_: Mapping[str, baselines.Method],
             k_shots: Sequence[int], num_seeds: int, seed: int
             ) -> protocol.Results:
  """`protocol.evaluate` over every task of `history`."""
  return protocol.evaluate(history, methods_, k_shots=k_shots,
                           num_seeds=num_seeds,
                           targets=list(history.task_ids), seed=seed)


def fit_recommender(history: Any, proxy: Mapping[str, np.ndarray],
                    space_config: Mapping[str, Any], seed: int
                    ) -> recommender.Fennec:
  """Fennec on every task of the table, from the proxy embeddings (what
  `fennec recommend --checkpoint --images` serves)."""
  return recommender.Fennec(fennec_config(space_config, seed)).fit(
      history, task_embeddings={t: proxy[t] for t in history.task_ids})
