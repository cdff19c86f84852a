"""The run's device work: probes, proxy embeddings, candidate features and
every estimator, each unit stored as it finishes (`store.Store`).

Order: every task's probe and proxy embedding first, then model by model
(each candidate is read and converted once) over every task. Each pass is a
`fennec_jax.proxy.extract.FeatureExtractor`: a jitted step on the mesh of
every process's devices, fed by a prefetch thread; each process decodes only
its own rows of each batch (resized to the model's input by a pool of host
threads, `tasks.ResizedProbe`) and the batch is one global array
(`sharding.global_array`); the features come back whole to every process,
which then score the estimators on identical inputs. Compilation happens on
a warm-up batch outside every timing, as a deployed service would be warm.
"""

from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
import dataclasses
import time
from typing import Any

from absl import logging
import jax
import numpy as np

from fennec_jax.benchmarks import images as images_protocol
from fennec_jax.benchmarks.full import checkpoints
from fennec_jax.benchmarks.full import store as store_lib
from fennec_jax.benchmarks.full import tasks as tasks_lib
from fennec_jax.estimators import registry
from fennec_jax.proxy import extract


@dataclasses.dataclass
class TaskState:
  """An open task: its reader, probe and probe images (with their cache)."""
  key: str
  reader: tasks_lib.TaskReader
  probe: tasks_lib.Probe
  images: tasks_lib.ProbeImages


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def _warm_and_time(extractor: extract.FeatureExtractor,
                   images: tasks_lib.ProbeImages, pool: futures.Executor
                   ) -> tuple[np.ndarray, float]:
  """Features of `images`, resized on the host by `pool`, timed after a
  compiling call on one image."""
  extractor(images.subset(np.arange(1)).resized(extractor.prep, pool))
  return _timed(lambda: extractor(images.resized(extractor.prep, pool)))


def open_probe(store: store_lib.Store, key: str,
               reader: tasks_lib.TaskReader, num_images: int,
               num_proxy: int, seed: int) -> TaskState:
  """The task's probe: drawn (and stored) or read back."""
  path = store.probe_path(key)
  if store.done(path, f'probe of {key}'):
    arrays = store.read_npz(path)
    probe = tasks_lib.Probe(arrays['indices'], arrays['labels'],
                            arrays['proxy'])
  else:
    probe = tasks_lib.draw_probe(reader, num_images, num_proxy, seed)
    store_lib.write_npz(path, dataclasses.asdict(probe))
    store.computed += 1
  return TaskState(key, reader, probe,
                   tasks_lib.ProbeImages(reader, probe.indices))


def proxy_features(store: store_lib.Store, state: TaskState,
                   extractor: Callable[[], extract.FeatureExtractor],
                   pool: futures.Executor) -> None:
  """Stores the proxy's features of the task's proxy subset, timed."""
  path = store.proxy_path(state.key)
  if store.done(path, f'proxy features of {state.key}'):
    return
  feats, seconds = _warm_and_time(
      extractor(), state.images.subset(state.probe.proxy), pool)
  store_lib.write_npz(path, {'features': feats.astype(np.float32),
                         'seconds': np.float64(seconds)})
  store.computed += 1
  logging.info('proxy: %s: %d images in %.2fs', state.key, len(feats),
               seconds)


def score_pair(features: np.ndarray, probs: np.ndarray | None,
               labels: np.ndarray, estimators: Sequence[str], model: str
               ) -> tuple[dict[str, float], dict[str, float]]:
  """Every estimator's score of one candidate on one probe, each timed on
  a second (compiled) call.

  Returns:
    (`{estimator: score}`, `{estimator: seconds}`); LEEP / NCE are left out
    (logged) for a candidate without a source classifier.

  Raises:
    ValueError: a non-finite score (naming the estimator and the model).
  """
  scores, seconds = {}, {}
  for name in estimators:
    if name in images_protocol.SOURCE_OUTPUT_ESTIMATORS:
      if probs is None:
        logging.info('%s: no source classifier; %s left out.', model, name)
        continue
      inputs = [probs if name == 'leep'
                else np.argmax(probs, -1).astype(np.int32)]
    else:
      inputs = [features]
    registry.score_models(name, inputs, labels, model_ids=[model])
    out, s = _timed(lambda: registry.score_models(  # pylint: disable=cell-var-from-loop
        name, inputs, labels, model_ids=[model]))
    value = float(np.asarray(out, np.float64)[0])
    if not np.isfinite(value):
      raise ValueError(f'estimator {name!r} gave a non-finite score for '
                       f'model {model!r}.')
    scores[name], seconds[name] = value, s
  return scores, seconds


def candidate_work(store: store_lib.Store, model_key: str,
                   load: Callable[[], checkpoints.Candidate],
                   states: Sequence[TaskState], estimators: Sequence[str],
                   batch_size: int, mesh: jax.sharding.Mesh,
                   pool: futures.Executor,
                   check: Callable[[extract.FeatureExtractor], None]
                   = lambda ex: None) -> None:
  """One candidate over every task: features and estimator scores, each
  (task, model) unit stored as it finishes; finished units are skipped.
  `check` sees the candidate's extractor once it is built."""
  def has_all(path):
    record = store.read_json(path)
    return set(estimators) <= set(record['scores']) | set(
        record['left_out'])

  todo = [s for s in states
          if not store.done(store.scores_path(s.key, model_key),
                            f'scores of {model_key} on {s.key}', has_all)]
  if not todo:
    return
  holder: dict[str, Any] = {}

  def extractor() -> tuple[extract.FeatureExtractor, int]:
    if 'x' not in holder:
      cand = load()
      holder['x'] = (extract.FeatureExtractor(
          cand.apply, cand.variables, cand.preprocessing,
          batch_size=batch_size, mesh=mesh), cand.num_features)
      check(holder['x'][0])
    return holder['x']

  for state in todo:
    fpath = store.features_path(state.key, model_key)
    if store.done(fpath, f'features of {model_key} on {state.key}'):
      arrays = store.read_npz(fpath)
    else:
      ex, num_features = extractor()
      out, seconds = _warm_and_time(ex, state.images, pool)
      arrays = {'features': out[:, :num_features].astype(np.float32),
                'seconds': np.float64(seconds)}
      if out.shape[1] > num_features:
        arrays['probs'] = out[:, num_features:].astype(np.float32)
      store_lib.write_npz(fpath, arrays)
      store.computed += 1
    scores, seconds = score_pair(arrays['features'], arrays.get('probs'),
                                 state.probe.labels, estimators, model_key)
    store_lib.write_json(store.scores_path(state.key, model_key), {
        'scores': scores, 'seconds': seconds,
        'left_out': sorted(set(estimators) - set(scores)),
        'forward_seconds': float(arrays['seconds'])})
    store.computed += 1
    logging.info('%s on %s: features %s, %d estimators', model_key,
                 state.key, arrays['features'].shape, len(scores))


def read_results(store: store_lib.Store, task_keys: Mapping[str, str],
                 model_keys: Mapping[str, str]
                 ) -> tuple[dict[str, np.ndarray], dict[str, float],
                            dict[str, dict[str, dict[str, float]]],
                            dict[str, dict[str, dict[str, float]]]]:
  """What the evaluation reads back, by benchmark ids.

  Args:
    store: the work store.
    task_keys: `{benchmark task id: catalogue key}`.
    model_keys: `{benchmark model id: store model key}`.

  Returns:
    (`{task: proxy features}`, `{task: proxy seconds}`,
    `{estimator: {task: {model: score}}}`,
    `{estimator: {task: {model: seconds incl. the forward pass}}}`).
  """
  proxy, proxy_seconds = {}, {}
  scores: dict[str, dict[str, dict[str, float]]] = {}
  seconds: dict[str, dict[str, dict[str, float]]] = {}
  for task, key in task_keys.items():
    arrays = store.read_npz(store.proxy_path(key))
    proxy[task] = arrays['features']
    proxy_seconds[task] = float(arrays['seconds'])
    for model, mkey in model_keys.items():
      record = store.read_json(store.scores_path(key, mkey))
      for name, value in record['scores'].items():
        scores.setdefault(name, {}).setdefault(task, {})[model] = value
        seconds.setdefault(name, {}).setdefault(task, {})[model] = (
            record['seconds'][name] + record['forward_seconds'])
  return proxy, proxy_seconds, scores, seconds
