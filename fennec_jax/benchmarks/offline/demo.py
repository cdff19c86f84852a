"""`fennec demo` and recommending from images on the offline benchmark.

`demo` holds out one task, fits Fennec on the others (scores and their proxy
image embeddings), ranks the zoo from the held-out task's images alone and
times that against LogME over the whole zoo. `recommend_offline` does the same
for a user's own images.
"""

from collections.abc import Mapping
import time
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from PIL import Image

from fennec_jax import metrics
from fennec_jax import progress
from fennec_jax import recommender
from fennec_jax import space as space_lib
from fennec_jax.benchmarks.offline import loader
from fennec_jax.benchmarks.offline import source as source_lib
from fennec_jax.estimators import registry
from fennec_jax.proxy import embed


class DemoResult(NamedTuple):
  """What `fennec demo` shows.

  Attributes:
    task: the held-out task.
    rows: top models as `(model_id, predicted, std, actual)`, best first.
    fennec_seconds: one proxy pass over the task's probe subset + the
      recommendation over the whole zoo.
    logme_seconds: a forward pass of every zoo model over the probe + LogME.
    weighted_tau: `{'fennec': ..., 'logme': ...}` against the actual
      fine-tuned accuracies of all models.
    logme_top: LogME's top models as `(model_id, score, actual)`.
    confidence: the task map's `TaskConfidence` for the held-out task (not
      in distribution: Fennec's rows are the population prior's).
  """
  task: str
  rows: list[tuple[str, float, float, float]]
  fennec_seconds: float
  logme_seconds: float
  weighted_tau: dict[str, float]
  logme_top: list[tuple[str, float, float]]
  confidence: Any = None


def demo(task: str | None = None, top: int = 5, history: Any = None,
         source: Any = None, num_proxy_images: int = 100,
         seed: int = 0, config: recommender.FennecConfig | None = None,
         data_dir: str | None = None) -> DemoResult:
  """Holds out one task of the offline benchmark and recommends for it.

  Fennec is fit on the other tasks (scores + their proxy embeddings), then
  ranks the zoo from the held-out task's images alone; LogME is run over the
  whole zoo on the same probe for comparison.

  Args:
    task: the held-out task (default: one drawn with `seed`).
    top: models to show.
    history: default `fennec_jax.benchmarks.loader.load()`.
    source: a `fennec_jax.benchmarks.offline.source.ImageSource` (default: the
      committed offline benchmark).
    num_proxy_images: probe images the proxy sees.
    seed: seed of the task choice, probe subset and space.
    config: Fennec's configuration (default: the space defaults, `seed`).
    data_dir: offline artifacts directory (default: the committed ones);
      used when `history` / `source` are not given.

  Returns:
    The `DemoResult`.

  Raises:
    ValueError: an unknown task.
  """

  if history is None:
    history = loader.load(data_dir)
  source = source or source_lib.OfflineSource(data_dir)
  if task is None:
    task = history.task_ids[int(np.random.default_rng(seed).integers(
        history.num_tasks))]
  j = history.task_index(task)
  top = min(top, history.num_models)
  train = history.subset(tasks=np.arange(history.num_tasks) != j)
  feats, _ = source_lib.proxy_task_features(source, train.task_ids,
                                            num_proxy_images, seed)
  config = config or recommender.FennecConfig(
      space=space_lib.SpaceConfig(seed=seed))
  fennec = recommender.Fennec(config).fit(train, task_embeddings=feats)

  # The probe is read once, outside both timings (reading or regenerating
  # images costs the same for every method); each timed pass gets a fresh
  # copy so no cached output is reused.
  images, labels = source.probe(task)
  subset = images[embed.probe_indices(len(images), labels,
                                      budget=num_proxy_images, seed=seed)]

  def recommend_new_task():
    feats = source.proxy_features(subset.copy())
    return fennec.recommend(task_embeddings=[np.asarray(feats)], top=top)

  recommend_new_task()  # Warm (compilation), as a deployed service would be.
  start = time.perf_counter()
  rec = recommend_new_task()
  fennec_seconds = time.perf_counter() - start

  def logme_over_zoo(what=None):
    x = images.copy()
    models = (history.model_ids if what is None  # No logging when timed.
              else progress.track(history.model_ids, what))
    zoo = [source.model_features(m, x) for m in models]
    return np.asarray(registry.score_models('logme', zoo, labels))

  # Compile every model and LogME: timed warm too.
  logme_over_zoo('zoo models (compiling)')
  start = time.perf_counter()
  logme = logme_over_zoo()
  logme_seconds = time.perf_counter() - start

  actual = history.scores[:, j]
  seen = history.mask[:, j]
  tau = {name: float(metrics.weighted_tau(
      jnp.asarray(pred), jnp.asarray(np.where(seen, actual, 0.0)),
      mask=jnp.asarray(seen)))
         for name, pred in (('fennec', rec.all_predicted[0]),
                            ('logme', logme))}
  rows = [(m, float(p), float(s), float(actual[i]))
          for m, i, p, s in zip(rec.model_ids[0], rec.indices[0],
                                rec.predicted[0], rec.std[0])]
  order = np.argsort(-logme, kind='stable')[:top]
  logme_top = [(history.model_ids[i], float(logme[i]), float(actual[i]))
               for i in order]
  return DemoResult(task, rows, fennec_seconds, logme_seconds, tau,
                    logme_top, rec.confidence[0])


def format_demo(result: DemoResult) -> str:
  """The demo's printed report."""
  lines = [f'Held-out task: {result.task}', '']
  c = result.confidence
  if c is not None and not c.in_distribution:
    lines += [f'WARNING: its images do not place it among the other tasks: '
              f'{c.reason}. Fennec ranks by the population prior.', '']
  lines += [
           f'Fennec top-{len(result.rows)} (predicted vs actual fine-tuned '
           'accuracy):']
  for r, (m, p, s, a) in enumerate(result.rows):
    lines.append(f'  {r + 1}. {m:40s} predicted {p:.3f} +- {s:.3f}   '
                 f'actual {a:.3f}')
  lines += ['', f'LogME top-{len(result.logme_top)} (score, actual):']
  for r, (m, sc, a) in enumerate(result.logme_top):
    lines.append(f'  {r + 1}. {m:40s} LogME {sc:8.4f}   actual {a:.3f}')
  ratio = result.logme_seconds / max(result.fennec_seconds, 1e-9)
  lines += ['',
            'weighted tau vs actual: Fennec '
            f'{result.weighted_tau["fennec"]:.3f}, LogME '
            f'{result.weighted_tau["logme"]:.3f}',
            f'time for this task: Fennec {result.fennec_seconds:.3f} s (one '
            f'proxy pass + one matmul), LogME over the zoo '
            f'{result.logme_seconds:.3f} s ({ratio:.0f}x)']
  return '\n'.join(lines)


def fit_offline(history: Any = None, source: Any = None,
                num_proxy_images: int = 100, seed: int = 0,
                config: recommender.FennecConfig | None = None
                ) -> recommender.Fennec:
  """Fennec fit on the offline benchmark's scores and its tasks' embeddings.

  Args:
    history: default `fennec_jax.benchmarks.loader.load()`.
    source: default the committed offline benchmark's `OfflineSource`.
    num_proxy_images: probe images per task through the proxy.
    seed: seed of the probe subsets and the space.
    config: Fennec's configuration (default: the space defaults, `seed`).

  Returns:
    The fitted Fennec (it accepts `task_embeddings` from the same proxy).
  """
  if history is None:
    history = loader.load()
  source = source or source_lib.OfflineSource()
  feats, _ = source_lib.proxy_task_features(source, history.task_ids,
                                            num_proxy_images, seed)
  config = config or recommender.FennecConfig(
      space=space_lib.SpaceConfig(seed=seed))
  return recommender.Fennec(config).fit(history, task_embeddings=feats)


def images_to_embedding(images: Any, source: Any, image_shape: tuple[int, ...],
                        labels: Any = None, num_images: int = 100,
                        seed: int = 0) -> np.ndarray:
  """A new task's image embeddings from its images (any size; resized).

  Args:
    images: a sequence of uint8 [h, w, c] images (e.g. a
      `fennec_jax.data.sources.FolderSource`).
    source: the `ImageSource` whose proxy embedded the history's tasks.
    image_shape: (h, w, c) the proxy expects (the benchmark's probe shape).
    labels: optional labels (class-balanced subset).
    num_images: images through the proxy.
    seed: seed of the subset.

  Returns:
    [n, D] the proxy features of the (class-balanced) subset: the task's
    description for `Fennec.recommend(task_embeddings=[...])`.

  Raises:
    ValueError: no images, or an image that is not uint8 [h, w(, 1|3|4)].
  """
  if not len(images):
    raise ValueError('no images: a new task needs images or observed scores.')
  idx = embed.probe_indices(
      len(images), None if labels is None else np.asarray(labels),
      budget=num_images, seed=seed)
  h, w, c = image_shape
  batch = []
  for i in idx:
    arr = np.asarray(images[int(i)])
    if arr.ndim == 3 and arr.shape[-1] == 1:
      arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
      raise ValueError(f'image {int(i)} has shape {arr.shape}; expected '
                       '[h, w], [h, w, 1], [h, w, 3] or [h, w, 4] (any h, w).')
    if arr.dtype != np.uint8:
      raise ValueError(f'image {int(i)} has dtype {arr.dtype}; expected '
                       'uint8 pixels (0..255).')
    img = Image.fromarray(arr)
    img = img.convert('RGB' if c == 3 else 'L').resize((w, h),
                                                       Image.BILINEAR)
    batch.append(np.asarray(img, np.uint8).reshape(h, w, c))
  return np.asarray(source.proxy_features(np.stack(batch)))


def recommend_offline(images: Any, top: int = 5,
                      observed: Mapping[str, float] | None = None,
                      labels: Any = None, data_dir: str | None = None,
                      num_proxy_images: int = 100,
                      seed: int = 0) -> tuple[recommender.Recommendation,
                                              recommender.Fennec]:
  """Ranks the offline zoo for a new task given by its images (any size).

  Fennec is fit on every task of the offline benchmark (scores + their
  proxy features); the images go through the same proxy (resized to the
  benchmark's image shape) and the task map
  (`recommender.FennecConfig.task_map`) to a prior; observed scores, if
  any, are folded in on top.

  Args:
    images: uint8 images, a sequence or a `fennec_jax.data.sources` source.
    top: models to return.
    observed: optional `{model_id: score}` of the new task.
    labels: optional labels (the proxy then sees a class-balanced subset).
    data_dir: offline artifacts directory (default: the committed ones).
    num_proxy_images: images through the proxy.
    seed: seed of the subsets and the space.

  Returns:
    (the `Recommendation` for one task, the fitted `Fennec`).

  Raises:
    ValueError: no images, bad image shapes, model ids not in the zoo.
  """
  history = loader.load(data_dir)
  source = source_lib.OfflineSource(data_dir)
  # Bad images or model ids fail before the fit, not after it.
  space_lib.kshot_lazy.sparse_observed([dict(observed or {})],
                                       history.model_ids)
  shape = source.probe(history.task_ids[0])[0].shape[1:]
  emb = images_to_embedding(images, source, shape, labels=labels,
                            num_images=num_proxy_images, seed=seed)
  fennec = fit_offline(history, source, num_proxy_images, seed)
  rec = fennec.recommend(task_embeddings=[emb],
                         observed=[dict(observed or {})],
                         top=min(top, history.num_models))
  return rec, fennec
