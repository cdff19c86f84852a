"""What the images protocol reads: probes, proxy features, zoo features.

`ImageSource` is the interface (a benchmark that ships images and candidate
models); `OfflineSource` serves the committed offline benchmark.
"""

from collections.abc import Sequence
import time
from typing import Any

import jax
import numpy as np

from fennec_jax.benchmarks.offline import loader
from fennec_jax.proxy import embed


class ImageSource:
  """What the images protocol needs from a benchmark; see `OfflineSource`.

  Subclasses implement `probe(task) -> (uint8 images [n, h, w, c], int
  labels [n])`, `proxy_features(images) -> [n, D]` and
  `model_features(model_id, images) -> [n, d]` (all blocking, NumPy out);
  optionally `source_probs` (for LEEP / NCE), `warm` and `graphs`.
  """

  def probe(self, task: str) -> tuple[np.ndarray, np.ndarray]:
    raise NotImplementedError

  def proxy_features(self, images: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  def model_features(self, model_id: str, images: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  def source_probs(self, model_id: str,
                   images: np.ndarray) -> np.ndarray | None:
    """`[n, c_src]` source-task class probabilities, or None if unknown."""
    del model_id, images
    return None

  def warm(self, model_id: str | None, images: np.ndarray) -> None:
    """Compiles a model's (None: the proxy's) pass, outside any timing."""
    del model_id, images

  def graphs(self, model_ids: Sequence[str]) -> dict[str, Any] | None:
    """Architecture DAGs of the models (for `fennec_paper`), if known."""
    del model_ids
    return None


class OfflineSource(ImageSource):
  """The committed offline benchmark (`fennec_jax.benchmarks.offline`).

  Each model's pass is one jitted function over fixed-size chunks (the last
  one zero-padded; `chunk`, or the next power of two for fewer images), so
  probes of any size reuse a few compilations. The pass
  returns the pooled features and the source head's logits together; the
  logits of the source task's classes give `source_probs` (LEEP, NCE) at
  the cost of one small matmul, and are cached per (model, images) so a
  forward pass is charged once.
  """

  def __init__(self, data_dir: str | None = None, chunk: int = 250):
    self._offline = loader
    self._data_dir = data_dir
    self._chunk = chunk
    self._fns: dict[str, Any] = {}
    # model -> (the images array last passed, its outputs); holding the
    # array keeps identity checks sound.
    self._last: dict[str, tuple[np.ndarray, Any]] = {}

  def _load(self, model_id: str):
    if model_id not in self._fns:
      module, variables = self._offline.load_model(model_id, self._data_dir,
                                                   head=True)
      backbone = module.backbone
      meta = {r['model']: r for r in self._offline.model_table(
          self._data_dir, include_proxy=True)}[model_id]
      num_src = int(meta['source_classes'])

      @jax.jit
      def apply(v, images):
        x = self._offline.preprocess(images)
        feats = backbone.apply(
            {k: c['backbone'] for k, c in v.items()}, x, train=False)
        head = v['params']['head']
        logits = feats @ head['kernel'].astype(feats.dtype) + head['bias']
        return feats, jax.nn.softmax(logits[:, :num_src], axis=-1)

      self._fns[model_id] = (apply, variables)
    return self._fns[model_id]

  def _outputs(self, model_id: str,
               images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if model_id in self._last and self._last[model_id][0] is images:
      return self._last[model_id][1]
    apply, variables = self._load(model_id)
    n, c = len(images), self._chunk_size(len(images))
    padded = np.zeros((-(-n // c) * c,) + images.shape[1:], np.uint8)
    padded[:n] = images
    outs = [apply(variables, padded[i:i + c]) for i in range(0, n, c)]
    feats = np.concatenate([np.asarray(f, np.float32) for f, _ in outs])[:n]
    probs = np.concatenate([np.asarray(p, np.float32) for _, p in outs])[:n]
    self._last[model_id] = (images, (feats, probs))
    return feats, probs

  def _chunk_size(self, n: int) -> int:
    """`chunk`, or the power of two >= n if smaller (few compiled shapes)."""
    return min(self._chunk, 1 << max(n - 1, 0).bit_length())

  def probe(self, task: str) -> tuple[np.ndarray, np.ndarray]:
    return self._offline.load_probe(task, self._data_dir)

  def proxy_features(self, images: np.ndarray) -> np.ndarray:
    return self._outputs(self._offline.PROXY_ID, images)[0]

  def model_features(self, model_id: str, images: np.ndarray) -> np.ndarray:
    return self._outputs(model_id, images)[0]

  def source_probs(self, model_id: str, images: np.ndarray) -> np.ndarray:
    return self._outputs(model_id, images)[1]

  def warm(self, model_id: str | None, images: np.ndarray) -> None:
    model_id = model_id or self._offline.PROXY_ID
    apply, variables = self._load(model_id)
    jax.block_until_ready(apply(variables, np.zeros(
        (self._chunk_size(len(images)),) + images.shape[1:], np.uint8)))

  def graphs(self, model_ids: Sequence[str]) -> dict[str, Any]:
    return {m: self._offline.load_graph(m, self._data_dir) for m in model_ids}


def timed(fn, *args):
  """(fn(*args), seconds it took)."""
  start = time.perf_counter()
  out = fn(*args)
  return out, time.perf_counter() - start


def proxy_task_features(
    source: ImageSource, tasks: Sequence[str], num_images: int = 100,
    seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """Proxy features of each task's class-balanced probe subset, timed.

  Args:
    source: probes and the proxy.
    tasks: task ids.
    num_images: images per task (`proxy.embed.probe_indices` budget).
    seed: seed of the subset.

  Returns:
    (`{task: [n, D] features}`, `{task: seconds of the proxy pass}`).
  """
  feats: dict[str, np.ndarray] = {}
  seconds: dict[str, float] = {}
  warm = True
  for task in tasks:
    images, labels = source.probe(task)
    idx = embed.probe_indices(len(images), labels, budget=num_images,
                              seed=seed)
    if warm:  # Compile outside the timing (a deployed proxy is warm).
      source.warm(None, images[idx])
      warm = False
    feats[task], seconds[task] = timed(source.proxy_features, images[idx])
  return feats, seconds
