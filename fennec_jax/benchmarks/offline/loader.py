"""The committed offline benchmark: ground truth, zoo weights, probes, graphs.

Everything here reads `fennec_jax/benchmarks/offline_data/` (built by
`fennec build-benchmark`, see its README.md data card), so it works on a fresh
clone with no system data:

  history = offline.load()                       # models x targets accuracy
  module, variables = offline.load_model('cnn_s__fashion_all')   # features
  images, labels = offline.load_probe('glyph_hebrew')            # 500 images
  feats = module.apply(variables, offline.preprocess(images))
"""

import csv
import functools
import hashlib
import json
import os
from typing import Any

from absl import logging
from flax import serialization
import flax.linen as nn
import jax
import networkx as nx
import numpy as np

from fennec_jax import history as history_lib
from fennec_jax.archi2vec import graphs as graphs_lib
from fennec_jax import models as models_lib
from fennec_jax.benchmarks.offline import zoo as zoo_lib
from fennec_jax.data import tasks as tasks_lib

DATA_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    'offline_data')
PROXY_ID = 'proxy'
preprocess = zoo_lib.preprocess

_NUMERIC_MODEL = ('num_params', 'source_accuracy', 'source_classes',
                  'head_classes')
_NUMERIC_TASK = ('num_classes', 'train_size', 'test_size', 'seed')


def _path(data_dir: str | None, *parts: str) -> str:
  path = os.path.join(data_dir or DATA_DIR, *parts)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path} is missing: the offline benchmark artifacts are not built. '
        'Run `fennec build-benchmark --workdir=runs/offline_build` (see '
        'fennec_jax/benchmarks/offline_data/README.md).')
  return path


def _read_csv(path: str) -> list[dict[str, str]]:
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def _typed(rows: list[dict[str, str]], numeric: tuple[str, ...]):
  out = []
  for row in rows:
    out.append({k: (float(v) if k in numeric else v) for k, v in row.items()})
  return out


def model_table(data_dir: str | None = None,
                include_proxy: bool = False) -> list[dict[str, Any]]:
  """Rows of models.csv (family, size, arch, #params, source, ...)."""
  rows = _typed(_read_csv(_path(data_dir, 'models.csv')), _NUMERIC_MODEL)
  return [r for r in rows if include_proxy or r['model'] != PROXY_ID]


def task_table(data_dir: str | None = None) -> list[dict[str, Any]]:
  """Rows of tasks.csv (domain, role, #classes, split sizes, ...)."""
  return _typed(_read_csv(_path(data_dir, 'tasks.csv')), _NUMERIC_TASK)


def load(data_dir: str | None = None) -> history_lib.History:
  """The ground truth as a `History`: zoo models x target tasks, accuracy.

  Args:
    data_dir: artifacts directory (default: the committed one).

  Returns:
    History with model metadata (family, size, arch, num_params, source,
    source_domains, source_accuracy) and task metadata (domain, num_classes,
    train_size, test_size).
  """
  results = _path(data_dir, 'results.csv')
  models = model_table(data_dir)
  targets = [t for t in task_table(data_dir) if t['role'] == 'target']
  records = [(r['model'], r['task'], float(r['score']))
             for r in _read_csv(results)]
  model_ids = {m['model'] for m in models}
  target_ids = {t['task'] for t in targets}
  for m, t, _ in records:
    if m not in model_ids or t not in target_ids:
      raise ValueError(f'{results}: pair ({m}, {t}) is not in models.csv / '
                       'tasks.csv; the artifacts are inconsistent, rebuild '
                       'them with `fennec build-benchmark`.')
  # Declare every pair (None = unobserved) so ids keep the tables' order.
  declared = [(m['model'], t['task'], None) for m in models for t in targets]
  mcols = ('family', 'size', 'arch', 'num_params', 'source',
           'source_domains', 'source_accuracy')
  tcols = ('domain', 'num_classes', 'train_size', 'test_size')
  return history_lib.History.from_records(
      declared + records, duplicates='first',
      model_metadata={c: {m['model']: m[c] for m in models} for c in mcols},
      task_metadata={c: {t['task']: t[c] for t in targets} for c in tcols},
      name='offline', score_name='test_accuracy', source=results)


def _meta(model_id: str, data_dir: str | None) -> dict[str, Any]:
  for row in model_table(data_dir, include_proxy=True):
    if row['model'] == model_id:
      return row
  valid = [r['model'] for r in model_table(data_dir, include_proxy=True)]
  raise ValueError(f'Unknown offline model {model_id!r}; valid: '
                   f'{", ".join(valid)}')


def load_model(model_id: str, data_dir: str | None = None,
               head: bool = False) -> tuple[nn.Module, Any]:
  """A zoo model (or `'proxy'`) with its pretrained weights, as float32.

  Args:
    model_id: a model of `model_table()` or 'proxy'.
    data_dir: artifacts directory.
    head: if True return the source classifier (`Classifier`: backbone +
      padded source head, logits of the first `source_classes` entries are
      the source task's); else the registry backbone with `num_classes=0`,
      which returns pooled features.

  Returns:
    `(module, variables)`; call `module.apply(variables, preprocess(images))`.
  """
  meta = _meta(model_id, data_dir)
  path = _path(data_dir, 'weights', f'{model_id}.msgpack')
  with open(path, 'rb') as f:
    state = serialization.msgpack_restore(f.read())
  variables = jax.tree.map(lambda a: np.asarray(a, np.float32), state)
  if head:
    return zoo_lib.make_classifier(meta['arch'],
                                 int(meta['head_classes'])), variables
  backbone = {k: v['backbone'] for k, v in variables.items()}
  return models_lib.get_model(meta['arch'], num_classes=0), backbone


def load_proxy(data_dir: str | None = None) -> tuple[nn.Module, Any]:
  """The offline proxy (feature extractor) and its weights."""
  return load_model(PROXY_ID, data_dir)


def load_probe(task: str,
               data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The class-balanced probe (<= 500 images) of a target's train split.

  Fashion-MNIST probes ship their pixels; procedural ones are regenerated
  from the task's seed and checked against the build's SHA-256 (a mismatch,
  e.g. another FreeType version drawing glyphs differently, is logged).

  Returns:
    `(images uint8 [n, 28, 28, 3], labels int32 [n])`.
  """
  with np.load(_path(data_dir, 'probes', f'{task}.npz')) as z:
    labels = z['labels'].astype(np.int32)
    if 'images' in z:
      return z['images'], labels
    indices, digest = z['indices'], str(z['sha256'])
  images, all_labels = task_images(task, 'train', data_dir)
  images = images[indices]
  if not np.array_equal(all_labels[indices], labels):
    raise ValueError(f'Regenerated probe of {task!r} has other labels than '
                     'the build; the task generator changed. Rebuild the '
                     'benchmark with `fennec build-benchmark`.')
  if hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest() != (
      digest):
    logging.warning('Probe of %s: regenerated pixels differ from the build '
                    '(another PIL/FreeType version?); labels match.', task)
  return images, labels


def task_images(task: str, split: str,
                data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Regenerates a task split exactly as the build saw it (same sizes)."""
  for row in task_table(data_dir):
    if row['task'] == task:
      size = int(row['train_size'] if split == 'train' else row['test_size'])
      return tasks_lib.generate(task, split, size)
  raise ValueError(f'Task {task!r} is not in the offline benchmark; valid: '
                   f'{", ".join(r["task"] for r in task_table(data_dir))}')


@functools.cache
def _graph_index(data_dir: str | None) -> dict[str, str]:
  with open(_path(data_dir, 'graphs', 'index.json')) as f:
    return json.load(f)


def load_graph(model_id: str, data_dir: str | None = None) -> nx.DiGraph:
  """The architecture graph (archi2vec trace) of a zoo model or the proxy."""
  arch = _meta(model_id, data_dir)['arch']
  name = _graph_index(data_dir)[arch]
  return graphs_lib.read_graph(_path(data_dir, 'graphs', name))
