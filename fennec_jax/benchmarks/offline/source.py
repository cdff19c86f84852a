"""What the images protocol reads: probes, proxy features, zoo features.

`ImageSource` is the interface (a benchmark that ships images and candidate
models); `OfflineSource` serves the committed offline benchmark.
"""

from collections.abc import Sequence
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import progress
from fennec_jax import sharding
from fennec_jax.benchmarks.offline import loader
from fennec_jax.data import tasks as tasks_lib
from fennec_jax.proxy import embed
from fennec_jax.proxy import extract

# `zoo.preprocess` (uint8 -> [-1, 1]) as the extractor's on-device step:
# (x / 255 - 0.5) / 0.5 at the zoo's own image size (no resize, no crop).
ZOO_PREPROCESSING = extract.Preprocessing(
    size=tasks_lib.IMAGE_SHAPE[:2], mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    interpolation='bilinear', crop_fraction=1.0)


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

  Each model's pass is a `fennec_jax.proxy.extract.FeatureExtractor`
  (mesh-sharded, jitted, zero-padded fixed-size chunks): every probe, of any
  size, goes through chunks of one size, so each model compiles once per
  run. The pass returns the pooled features and the source head's
  probabilities over the source task's classes together (for `source_probs`:
  LEEP, NCE), cached per (model, images) so a forward pass is charged once.

  Attributes:
    trace_counts: `{model_id: times its pass was traced}` (1 per run, unless
      JAX's caches are cleared).
  """

  def __init__(self, data_dir: str | None = None, chunk: int = 128,
               mesh: jax.sharding.Mesh | None = None):
    """Reads nothing yet; each model is loaded on its first pass.

    Args:
      data_dir: the artifacts directory (default: the committed ones).
      chunk: images per compiled call, rounded up to a multiple of the mesh
        size; a probe of n images costs `ceil(n / chunk)` calls.
      mesh: a mesh with a `'data'` axis (default: every device).
    """
    self._data_dir = data_dir
    self._mesh = mesh if mesh is not None else sharding.make_mesh()
    self._chunk = sharding.padded_length(
        chunk, self._mesh.shape[sharding.DATA_AXIS])
    self.trace_counts: dict[str, int] = {}
    # model -> (its pass, the feature dimension).
    self._passes: dict[str, tuple[extract.FeatureExtractor, int]] = {}
    # model -> (the images array last passed, its outputs); holding the
    # array keeps identity checks sound.
    self._last: dict[str, tuple[np.ndarray, Any]] = {}

  def _pass(self, model_id: str) -> tuple[extract.FeatureExtractor, int]:
    """A model's pass: images -> `[n, d + c_src]` (features, then probs)."""
    if model_id not in self._passes:
      module, variables = loader.load_model(model_id, self._data_dir,
                                            head=True)
      backbone = module.backbone
      meta = {r['model']: r for r in loader.model_table(
          self._data_dir, include_proxy=True)}[model_id]
      num_src = int(meta['source_classes'])

      def features_and_probs(v, x):
        # Runs only while tracing: counts compilations.
        self.trace_counts[model_id] = self.trace_counts.get(model_id, 0) + 1
        feats = backbone.apply(
            {k: c['backbone'] for k, c in v.items()}, x, train=False)
        head = v['params']['head']
        logits = feats @ head['kernel'].astype(feats.dtype) + head['bias']
        probs = jax.nn.softmax(logits[:, :num_src], axis=-1)
        return jnp.concatenate([feats, probs.astype(feats.dtype)], axis=-1)

      extractor = extract.FeatureExtractor(
          features_and_probs, variables, ZOO_PREPROCESSING,
          batch_size=self._chunk, mesh=self._mesh)
      num_features = variables['params']['head']['kernel'].shape[0]
      self._passes[model_id] = (extractor, num_features)
    return self._passes[model_id]

  def _outputs(self, model_id: str,
               images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if model_id in self._last and self._last[model_id][0] is images:
      return self._last[model_id][1]
    extractor, num_features = self._pass(model_id)
    out = np.asarray(extractor(images), np.float32)
    feats, probs = out[:, :num_features], out[:, num_features:]
    self._last[model_id] = (images, (feats, probs))
    return feats, probs

  def probe(self, task: str) -> tuple[np.ndarray, np.ndarray]:
    return loader.load_probe(task, self._data_dir)

  def proxy_features(self, images: np.ndarray) -> np.ndarray:
    return self._outputs(loader.PROXY_ID, images)[0]

  def model_features(self, model_id: str, images: np.ndarray) -> np.ndarray:
    return self._outputs(model_id, images)[0]

  def source_probs(self, model_id: str, images: np.ndarray) -> np.ndarray:
    return self._outputs(model_id, images)[1]

  def warm(self, model_id: str | None, images: np.ndarray) -> None:
    # One chunk compiles the pass that every probe size reuses.
    self._pass(model_id or loader.PROXY_ID)[0](images[:1])

  def graphs(self, model_ids: Sequence[str]) -> dict[str, Any]:
    return {m: loader.load_graph(m, self._data_dir) for m in model_ids}


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
  for task in progress.track(tasks, 'proxy features of the tasks'):
    images, labels = source.probe(task)
    idx = embed.probe_indices(len(images), labels, budget=num_images,
                              seed=seed)
    if warm:  # Compile outside the timing (a deployed proxy is warm).
      source.warm(None, images[idx])
      warm = False
    feats[task], seconds[task] = timed(source.proxy_features, images[idx])
  return feats, seconds
