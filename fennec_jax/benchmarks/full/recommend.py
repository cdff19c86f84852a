"""Serving a full-benchmark run: rank its models for a user's own images.

A run saves `recommender/<benchmark>/`: a Fennec checkpoint fit on every
task of the table from the proxy's embeddings, plus `proxy.json` naming the
proxy (registry name, checkpoint file, dtype, preprocessing, probe size and
seed). `recommend_images` embeds the new task's images with that same proxy
and preprocessing (a class-balanced probe where the folder has classes) and
ranks the benchmark's models (`fennec recommend --checkpoint=DIR
--images=FOLDER`).
"""

from collections.abc import Mapping
import json
import os
import shutil
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp

from fennec_jax import recommender
from fennec_jax.proxy import extract
from fennec_jax.proxy import pipeline
from fennec_jax.proxy import proxy as proxy_lib

PROXY_RECORD = 'proxy.json'


def is_full_checkpoint(path: str | None) -> bool:
  """Whether `path` is a recommender saved by a full-benchmark run."""
  return bool(path) and os.path.isfile(os.path.join(path, PROXY_RECORD))


def save(fennec: recommender.Fennec, record: Mapping[str, Any],
         path: str) -> None:
  """Writes the Fennec checkpoint with `proxy.json` inside; an existing
  `path` is replaced whole (a rerun of the same benchmark)."""
  tmp = f'{path}.tmp-{os.getpid()}'
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  fennec.save(tmp)
  with open(os.path.join(tmp, PROXY_RECORD), 'w') as f:
    json.dump(dict(record), f, indent=1)
  if os.path.exists(path):
    shutil.rmtree(path)
  os.replace(tmp, path)
  logging.info('saved the recommender (proxy %s) to %s', record['name'], path)


def read_proxy_record(path: str) -> dict[str, Any]:
  """The checkpoint's proxy record.

  Raises:
    ValueError: no record, or one without the keys a proxy needs (naming
      the file).
  """
  record_path = os.path.join(path, PROXY_RECORD)
  try:
    with open(record_path) as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f'{record_path}: cannot read the proxy record '
                     f'({e}).') from None
  missing = sorted({'name', 'checkpoint', 'preprocessing', 'probe_images',
                    'seed'} - set(record))
  if missing:
    raise ValueError(f'{record_path}: missing keys {missing}.')
  return record


def recommend_images(path: str, images: Any, *, top: int = 5,
                     observed: Mapping[str, float] | None = None,
                     batch_size: int | None = None
                     ) -> tuple[recommender.Recommendation,
                                recommender.Fennec]:
  """Ranks the saved benchmark's models for the task of `images`.

  Args:
    path: the run's `recommender/<benchmark>` directory.
    images: a `fennec_jax.data.sources` source (labels, if any, make the
      proxy's probe class-balanced).
    top: models to return.
    observed: optional `{model_id: score}` of the new task.
    batch_size: the proxy's global batch (a multiple of the devices;
      default: the run's `per_device_batch` on every device, so the new
      task's embedding runs the shapes the run's did).

  Returns:
    (the `Recommendation` of one task, the loaded `Fennec`).

  Raises:
    ValueError: a damaged record or checkpoint, a missing proxy file, or
      model ids the checkpoint does not hold.
  """
  record = read_proxy_record(path)
  fennec = recommender.Fennec.load(path)
  prep = dict(record['preprocessing'])
  prep['size'] = tuple(prep['size'])
  prep['mean'], prep['std'] = tuple(prep['mean']), tuple(prep['std'])
  if not os.path.exists(record['checkpoint']):
    raise ValueError(f'{os.path.join(path, PROXY_RECORD)}: the proxy '
                     f'checkpoint {record["checkpoint"]} is missing.')
  proxy = proxy_lib.load_proxy(
      record['name'], record['checkpoint'],
      dtype=jnp.dtype(record.get('dtype', 'float32')),
      preprocessing=extract.Preprocessing(**prep))
  if batch_size is None:
    batch_size = int(record.get('per_device_batch', 16)) * jax.device_count()
  feats = pipeline.task_features(proxy, images,
                                 probe=record['probe_images'],
                                 seed=record['seed'],
                                 batch_size=batch_size)['features']
  unknown = sorted(set(observed or {}) - set(fennec.model_ids))
  if unknown:
    raise ValueError(f'observed models {unknown[:5]} are not in {path} '
                     f'({len(fennec.model_ids)} models).')
  rec = fennec.recommend(task_embeddings=[feats],
                         observed=[dict(observed or {})],
                         top=min(top, len(fennec.model_ids)))
  return rec, fennec

