"""Features of a whole task to an `.npz` (the logic behind `fennec features`).

`task_features(proxy, source)` embeds every image (or the class-balanced probe)
and summarizes the task; `write_features` saves the result:

* `features` `[n, d]` float32, in source order (sorted file names for folders),
* `indices` `[n]`: positions in the source (all of them, or the probe),
* `names` (file names) and `labels` when the source knows them,
* `task_embedding` `[d]` plus `cov_diag`, `cov_spectrum` and, with labels,
  `prototypes` / `classes` (see `fennec_jax.proxy.embed`),
* `model` and `checkpoint` (strings) for provenance.
"""

import os
from typing import Any

from absl import logging
import numpy as np

from fennec_jax.data import sources
from fennec_jax.proxy import embed
from fennec_jax.proxy import proxy as proxy_lib


def task_features(proxy: proxy_lib.Proxy, source: sources.ImageSource, *,
                  probe: int = 0, seed: int = 0, batch_size: int = 64,
                  **extract_kwargs: Any) -> dict[str, np.ndarray]:
  """Embeds a task's images and summarizes them.

  Args:
    proxy: the loaded proxy.
    source: the task's images.
    probe: if > 0, embed only a class-balanced probe of this many images
      (`embed.probe_indices`, seeded); 0 embeds every image.
    seed: probe seed.
    batch_size: global extraction batch size.
    **extract_kwargs: `FeatureExtractor` options.

  Returns:
    The arrays listed in the module docstring (without provenance).
  """
  n = len(source)
  if probe:
    indices = embed.probe_indices(n, source.labels, budget=probe, seed=seed)
    source = sources.Subset(source, indices)
  else:
    indices = np.arange(n, dtype=np.int64)
  feats = proxy.embed(source, batch_size=batch_size, **extract_kwargs)
  labels = source.labels
  out = {'features': feats, 'indices': indices}
  if labels is not None:
    out['labels'] = np.asarray(labels, np.int64)
  if source.names is not None:
    out['names'] = np.asarray(source.names, dtype=str)
  out.update(embed.task_embedding(feats, labels).as_dict())
  return out


def write_features(out_path: str, arrays: dict[str, np.ndarray], *,
                   model: str, checkpoint: str) -> None:
  """Saves `arrays` plus provenance to `out_path` (`.npz`)."""
  if not out_path.endswith('.npz'):
    raise ValueError(f'--out must name an .npz file, got {out_path!r}.')
  parent = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(parent, exist_ok=True)
  np.savez(out_path, model=np.asarray(model), checkpoint=np.asarray(checkpoint),
           **arrays)
  logging.info('features: wrote %s (%d images, %d-d features).', out_path,
               arrays['features'].shape[0], arrays['features'].shape[1])
