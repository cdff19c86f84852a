"""What a full-benchmark config asks for: the plan, and its dry run.

`make_plan` resolves a config against the catalogue: which tasks (catalogue
keys) and candidate checkpoints each benchmark uses, and which rows of its
table are left out and why (unmapped, not selected, no data). Nothing is
dropped silently: every left-out row is in `Plan.skipped` and the report.
`describe` prints the plan with the images to read, the bytes (from the
prepared tfds metadata where present) and the device time estimated from
throughput measured here on the proxy and every candidate architecture.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import models
from fennec_jax.benchmarks import public
from fennec_jax.benchmarks.full import catalogue
from fennec_jax.benchmarks.full import checkpoints


@dataclasses.dataclass
class BenchmarkPlan:
  """One benchmark's part of the run.

  Attributes:
    name: the bundled benchmark.
    tasks: `{task id: catalogue Task}` that run.
    models: `{model id: catalogue Checkpoint}` that run.
    skipped: `(kind, id, reason)` of every table row left out.
  """
  name: str
  tasks: dict[str, catalogue.Task]
  models: dict[str, catalogue.Checkpoint]
  skipped: list[tuple[str, str, str]]


@dataclasses.dataclass
class Plan:
  benchmarks: list[BenchmarkPlan]

  @property
  def tasks(self) -> dict[str, catalogue.Task]:
    """`{catalogue key: Task}` over every benchmark (each key once)."""
    out = {}
    for b in self.benchmarks:
      for t in b.tasks.values():
        out.setdefault(t.key, t)
    return out

  @property
  def models(self) -> dict[str, catalogue.Checkpoint]:
    """`{store model key: Checkpoint}` over every benchmark."""
    out = {}
    for b in self.benchmarks:
      for c in b.models.values():
        out.setdefault(checkpoints.model_key(c), c)
    return out


def folders(config: Any) -> dict[str, str]:
  """`config.task_folders` ('KEY=DIR' strings) as a dict."""
  out = {}
  for item in config.task_folders:
    key, sep, path = str(item).partition('=')
    if not sep or not key or not path:
      raise ValueError(f'config.task_folders entry {item!r}: expected '
                       "'KEY=DIR' (a catalogue task key and a folder).")
    out[key] = path
  return out


def make_plan(config: Any) -> Plan:
  """Resolves the config's benchmarks, tasks and models.

  Raises:
    ValueError: an unknown benchmark, task key or model id (naming the
      valid ones), or a benchmark left with fewer than 3 tasks or 2 models.
  """
  given = folders(config)
  out = []
  all_keys = {t.key for t in catalogue.load_tasks() if t.key}
  unknown = sorted(set(config.tasks) - all_keys)
  if unknown:
    raise ValueError(f'config.tasks: unknown catalogue keys {unknown}; '
                     f'valid: {sorted(all_keys)}.')
  known = {m for b in config.benchmarks for m in catalogue.checkpoints_of(b)}
  unknown = sorted(set(config.models) - known)
  if unknown:
    raise ValueError(f'config.models: {unknown} are models of none of '
                     f'{list(config.benchmarks)}.')
  for name in config.benchmarks:
    history = public.load_benchmark(name)
    rows, ckpts = catalogue.tasks_of(name), catalogue.checkpoints_of(name)
    tasks, models_, skipped = {}, {}, []
    for t in history.task_ids:
      row = rows.get(t)
      if row is None:
        skipped.append(('task', t, 'no catalogue row'))
      elif config.tasks and row.key not in config.tasks:
        skipped.append(('task', t, 'not in config.tasks'))
      elif row.status == 'tfds' or row.key in given:
        tasks[t] = row
      else:
        skipped.append(('task', t, row.note))
    for m in history.model_ids:
      row = ckpts.get(m)
      if row is None:
        skipped.append(('model', m, 'no catalogue row'))
      elif config.models and m not in config.models:
        skipped.append(('model', m, 'not in config.models'))
      elif not row.mapped:
        skipped.append(('model', m, row.note))
      else:
        models_[m] = row
    if len(tasks) < 4 or len(models_) < 3:
      raise ValueError(
          f'benchmark {name}: {len(tasks)} tasks and {len(models_)} models '
          'left (leave one task out needs >= 4 tasks, so that Fennec learns '
          'from >= 3, and >= 3 models); '
          f'skipped: {skipped[:8]}.')
    out.append(BenchmarkPlan(name, tasks, models_, skipped))
  return Plan(out)


def _throughput(arch: str, size: int, overrides: Mapping[str, Any],
                batch: int) -> float:
  """Images per second of `arch` (random weights) at `size` on the
  default device, timed after a compiling call."""
  model = models.get_model(arch, **dict(overrides))
  x = jnp.zeros((batch, size, size, 3), jnp.float32)
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          jax.random.key(0), x)
  variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  fn = jax.jit(functools.partial(model.apply, train=False))
  fn(variables, x).block_until_ready()
  start = time.perf_counter()
  fn(variables, x).block_until_ready()
  return batch / max(time.perf_counter() - start, 1e-9)


# Throughput measured by this project on a named device, the anchors of the
# dry run's estimate for a device not at hand. Forward passes: CLIP
# ViT-L/14 at 224 px, bf16, batch 256, plain Flax with cuDNN attention, on
# an NVIDIA H200 (DESIGN.md, "Anchors"; README speed table: 2,722 img/s end
# to end in another run). Estimators: seconds per call for 64 models x
# 2,000 images x 768 dims x 100 classes (median, and the first, compiling
# call), H200, jax 0.11.2 (experiments/benchmarks/results/estimators_h200.*).
H200 = 'NVIDIA H200'
H200_PROXY_ARCH, H200_PROXY_IMG_S = 'clip_vit_l14', 2673.0
H200_ESTIMATOR_S = {  # name: (median s for 64 models, first call s)
    'logme': (0.121, 5.85), 'hscore': (0.121, 2.63), 'fda': (0.123, 3.40),
    'reg_hscore': (0.123, 0.91), 'leep': (0.080, 0.41), 'nce': (0.001, 0.40),
    'gbc': (0.056, 0.61), 'knn': (0.060, 0.95), 'transrate': (0.121, 1.13),
    'sfda': (0.188, 3.64), 'parc': (0.144, 2.97), 'nleep': (0.217, 4.57),
    'linear_probe': (0.331, 6.59)}


@functools.lru_cache(maxsize=None)
def flops_per_image(arch: str, size: int,
                    overrides: tuple[tuple[str, Any], ...] = ()) -> float:
  """Forward FLOPs of one image: XLA's cost analysis of the lowered
  (traced, not compiled) step, so no device time is spent."""
  model = models.get_model(arch, **dict(overrides))
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          jax.random.key(0), x)
  cost = jax.jit(functools.partial(model.apply, train=False)).lower(
      shapes, x).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops'])


def h200_estimate(flops: float, pairs: int, shapes: int,
                  estimators: Sequence[str]) -> tuple[float, float, float]:
  """(forward s, estimator s, estimator compile s) on an NVIDIA H200.

  Forward passes: `flops` at the FLOP rate the CLIP ViT-L/14 anchor reached
  (2,673 img/s x its FLOPs per image); CNNs reach a smaller share of the
  peak, so the real time is longer. Estimators: each (task, model) pair
  scored alone at 1/64 of the anchor's 64-model time (probes of 500 images
  hold a quarter of the anchor's rows: errs long), plus one first call per
  estimator and distinct probe shape (`shapes`: tasks x feature widths).
  Estimators without an anchor count as the slowest one.
  """
  rate = H200_PROXY_IMG_S * flops_per_image(
      H200_PROXY_ARCH, models.get_spec(H200_PROXY_ARCH).input_shape[0])
  slowest = max(H200_ESTIMATOR_S.values())
  est = [H200_ESTIMATOR_S.get(e, slowest) for e in estimators]
  return (flops / rate, pairs * sum(m for m, _ in est) / 64,
          shapes * sum(f for _, f in est))


def _bytes_per_image(task: catalogue.Task, data_dir: str | None
                     ) -> float | None:
  """Mean stored bytes per record of the prepared split, if prepared."""
  if task.status != 'tfds' or not data_dir:
    return None
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    info = tfds.builder(task.tfds_name, data_dir=data_dir).info
    split = info.splits[task.split]
    return float(split.num_bytes) / max(split.num_examples, 1)
  except Exception:  # pylint: disable=broad-except
    return None


def describe(plan: Plan, config: Any, measure: bool = True,
             local: bool = True) -> str:
  """The dry run's text: tasks, models, images, bytes, estimated time
  (`measure`; `local`: also timed on the devices at hand, which compiles
  every architecture at full size: minutes on a CPU)."""
  lines = ['Full benchmark plan', '']
  n_probe, n_proxy = config.probe_images, config.proxy_images
  tiny = config.tiny.enabled
  total_bytes, unknown_bytes = 0.0, []
  lines.append(f'tasks ({len(plan.tasks)}; probe {n_probe} images, proxy '
               f'{n_proxy} of them):')
  for key, t in plan.tasks.items():
    per = _bytes_per_image(t, config.data_dir or None)
    if per is None:
      unknown_bytes.append(key)
    else:
      total_bytes += per * n_probe
    src = (f'tfds {t.tfds_name}[{t.split}] v{t.tfds_version}'
           if t.status == 'tfds' else 'image folder')
    lines.append(f'  {key}: {src}' + (f', ~{per / 1e3:.0f} kB/image'
                                      if per else ''))
  archs = {}
  lines.append(f'models ({len(plan.models)} checkpoint files):')
  for mkey, c in plan.models.items():
    path = os.path.join(config.checkpoint_dir or '<workdir>/checkpoints',
                        c.file)
    lines.append(f'  {c.model}: {c.arch} ({c.format}) {path}'
                 + ('' if tiny or os.path.exists(path) else
                    f'  [MISSING: download {c.url}]'))
    archs[c.arch] = archs.get(c.arch, 0) + 1
  for b in plan.benchmarks:
    lines.append(f'{b.name}: {len(b.tasks)} tasks x {len(b.models)} models; '
                 f'{len(b.skipped)} table rows left out'
                 + (f' (e.g. {b.skipped[0][0]} {b.skipped[0][1]}: '
                    f'{b.skipped[0][2][:80]})' if b.skipped else ''))
  images = len(plan.tasks) * n_probe
  lines.append(f'images read: {images} (+ {len(plan.tasks) * n_proxy} '
               'through the proxy, a subset of them)')
  lines.append('bytes read: ' + (f'{total_bytes / 1e6:.1f} MB' if total_bytes
                                 else 'unknown') +
               (f' (not prepared here: {unknown_bytes})' if unknown_bytes
                else ''))
  if measure:
    lines += _estimates(plan, config, archs, images, local)
  logging.info('dry run: %d tasks, %d checkpoint files, %d images.',
               len(plan.tasks), len(plan.models), images)
  return '\n'.join(lines) + '\n'


def _estimates(plan: Plan, config: Any, archs: Mapping[str, int],
               images: int, local: bool) -> list[str]:
  """The dry run's device time: measured on the devices at hand, and on an
  NVIDIA H200 from the project's measured anchors (`h200_estimate`)."""
  lines, seconds, flops = [], 0.0, 0.0
  # A few images per device keep the measurement short on a CPU; larger
  # batches run faster per image, so the estimate errs long.
  batch = max(min(config.per_device_batch, 4), 1)
  size = config.tiny.image_size or None
  for arch, count in archs.items():
    side = size or models.get_spec(arch).input_shape[0]
    over = (checkpoints.TINY_OVERRIDES.get(arch, {}) if config.tiny.enabled
            else {})
    flops += count * images * flops_per_image(arch, side,
                                              tuple(sorted(over.items())))
    if local:
      rate = _throughput(arch, side, over, batch) * jax.device_count()
      seconds += count * images / rate
      lines.append(f'  measured {arch} at {side}px, batch {batch}/device: '
                   f'{rate:.1f} img/s on {jax.device_count()} '
                   f'{jax.default_backend()} devices')
  p = config.proxy.name
  side = size or models.get_spec(p).input_shape[0]
  over = {} if 'clip' in p else {'num_classes': 0}
  n_proxy = len(plan.tasks) * config.proxy_images
  flops += n_proxy * flops_per_image(p, side, tuple(sorted(over.items())))
  if local:
    rate = _throughput(p, side, over, batch) * jax.device_count()
    seconds += n_proxy / rate
    lines.append(f'  measured proxy {p} at {side}px: {rate:.1f} img/s')
    lines.append(f'estimated device time (forward passes, compiled): '
                 f'{seconds:.1f} s = {seconds / 3600:.2f} h on these '
                 f'{jax.device_count()} {jax.devices()[0].device_kind} '
                 'devices, measured now')
  pairs = len(plan.tasks) * len(plan.models)  # Every model on every task.
  fwd, est, first = h200_estimate(
      flops, pairs, len(plan.tasks) * len(archs), config.estimators)
  lines.append(
      f'estimated on one {H200} (bf16; not measured here, no GPU or TPU '
      f'at hand): forward passes >= {fwd:.1f} s ({flops / 1e9:,.0f} GFLOP '
      f'at the rate of the measured {H200_PROXY_ARCH} anchor, '
      f'{H200_PROXY_IMG_S:.0f} img/s; CNNs reach less of the peak); '
      f'{len(config.estimators)} estimators on {pairs} (task, model) '
      f'pairs ~{est:.1f} s plus up to {first:.0f} s of first calls '
      '(compiling, one per estimator and probe shape); checkpoint '
      'conversion and image decoding not counted. A TPU has no measured '
      'anchor yet.')
  return lines


def skipped_rows(plan: Plan) -> list[tuple[str, str, str, str]]:
  """`(benchmark, kind, id, reason)` of every left-out row."""
  return [(b.name, *s) for b in plan.benchmarks for s in b.skipped]


def seed_of(key: str, seed: int) -> int:
  """A per-key seed (the twin's random checkpoints differ per model)."""
  return int(np.random.default_rng([seed, *key.encode()]).integers(2**31))
