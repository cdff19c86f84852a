"""The full benchmark: public tasks from tfds, real checkpoints, resumable.

`run(config, workdir)` (runner 'full_benchmark') does, for the benchmarks in
`config.benchmarks`:

1. resolve the plan against the catalogue (`plan.make_plan`); with
   `config.dry_run` print it with measured throughput and stop;
2. for the small-scale twin (`config.tiny.enabled`), write random-weight
   checkpoints in each source's own format;
3. every task's class-balanced probe and proxy embedding, then every
   candidate's features and every estimator on every probe
   (`compute`, each unit stored atomically; a restart skips what is done);
4. leave one task out on each table's ground truth (`evaluate`), written by
   process 0 only: `results.csv`
   (`method,benchmark,k_shot,target,pearson,weighted_tau,top1_regret,
   seconds_per_target`), `report.md` (95% intervals, published estimator
   scores beside ours, every skipped row), a plot per benchmark;
5. a Fennec checkpoint per benchmark under `recommender/<benchmark>/`,
   with `proxy.json` naming its proxy (name, checkpoint, preprocessing), for
   `fennec recommend --checkpoint=DIR --images=FOLDER`.

As many JAX processes as `jax.distributed` started run the same code
(`experiments/launch_local.py`): the passes are sharded over every
process's devices, `config.per_device_batch` rows per device whatever the
layout; the evaluation runs whole in every process on one device of its
own (`evaluate_stored`), and process 0 alone writes.
"""

from concurrent import futures
import contextlib
import csv
import dataclasses
import io
import os
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from fennec_jax import sharding
from fennec_jax import space as space_lib
from fennec_jax.archi2vec import trace as trace_lib
from fennec_jax.benchmarks import images as images_protocol
from fennec_jax.benchmarks import public
from fennec_jax.benchmarks import report
from fennec_jax.benchmarks.full import checkpoints
from fennec_jax.benchmarks.full import compute
from fennec_jax.benchmarks.full import evaluate
from fennec_jax.benchmarks.full import plan as plan_lib
from fennec_jax.benchmarks.full import recommend
from fennec_jax.benchmarks.full import store as store_lib
from fennec_jax.benchmarks.full import tasks as tasks_lib
from fennec_jax.proxy import proxy as proxy_lib

RESULTS_COLUMNS = ('method', 'benchmark', 'k_shot', 'target', 'pearson',
                   'weighted_tau', 'top1_regret', 'seconds_per_target')
PROXY_RECORD = recommend.PROXY_RECORD


def default_config() -> ml_collections.ConfigDict:
  """Every key of the 'full_benchmark' runner, at the paper's sizes."""
  c = ml_collections.ConfigDict()
  c.benchmarks = ('sfda_group1', 'model_spider_single', 'parc_controlled')
  c.tasks = ()  # Catalogue keys; () = every task with data.
  c.models = ()  # Model ids; () = every mapped model.
  c.data_dir = ''  # tfds data directory ('' = tfds' default).
  c.task_folders = ()  # 'KEY=DIR' image folders for tasks without tfds.
  c.checkpoint_dir = ''  # '' = workdir/checkpoints.
  c.proxy = ml_collections.ConfigDict(dict(
      name='clip_vit_l14', checkpoint='clip-vit-large-patch14',
      dtype='float32'))
  c.probe_images = 500
  c.proxy_images = 100
  # Images per device per step: the global batch is this times the device
  # count, so every device runs the same shapes whatever the layout
  # (`extract_batch`).
  c.per_device_batch = 16
  # Host threads that decode and resize each batch (0: one per CPU).
  c.host_threads = 0
  c.estimators = tuple(images_protocol.DEFAULT_IMAGE_ESTIMATORS)
  c.k_shots = (0, 1, 3)
  c.num_seeds = 10
  c.paper = True
  c.seed = 0
  c.dry_run = False
  # The dry run also times every architecture on the devices at hand.
  c.dry_run_measure = True
  c.tiny = ml_collections.ConfigDict(dict(enabled=False, mock_examples=0,
                                          image_size=0))
  fields = dataclasses.asdict(space_lib.SpaceConfig())
  del fields['seed']
  c.space = ml_collections.ConfigDict({
      k: ml_collections.config_dict.placeholder(int) if v is None else v
      for k, v in fields.items()})
  return c


def check(config: ml_collections.ConfigDict) -> None:
  """Bad values, before any work."""
  for key in ('probe_images', 'proxy_images', 'per_device_batch',
              'num_seeds'):
    if int(config[key]) < 1:
      raise ValueError(f'config.{key}={config[key]!r}; must be >= 1.')
  if config.proxy_images > config.probe_images:
    raise ValueError(f'config.proxy_images={config.proxy_images} exceeds '
                     f'config.probe_images={config.probe_images} (the proxy '
                     'sees a subset of the probe).')
  if int(config.host_threads) < 0:
    raise ValueError(f'config.host_threads={config.host_threads}; must be '
                     '>= 0 (0: one per CPU).')
  plan_lib.folders(config)


def extract_batch(config: ml_collections.ConfigDict) -> int:
  """The extraction's global batch: `config.per_device_batch` on every
  device.

  A fixed per-device batch keeps every device's program the same whatever
  the number of processes and devices (a padded last batch included), so
  features do not move with the layout: XLA tiles a convolution or a
  reduction by its shapes, and a batch of 4 or 2 rows per device gives
  sums in a different order (up to 5e-7 apart on the twin's MobileNetV2).
  """
  return int(config.per_device_batch) * jax.device_count()


def _checkpoint_dir(config, workdir) -> str:
  return os.path.abspath(config.checkpoint_dir
                         or os.path.join(workdir, 'checkpoints'))


def _proxy_path(config, ckpt_dir) -> str:
  p = config.proxy.checkpoint
  return p if os.path.isabs(p) else os.path.join(ckpt_dir, p)


def _write_twin(plan: plan_lib.Plan, config, ckpt_dir: str) -> None:
  """The twin's random checkpoints (process 0 writes; all wait)."""
  if jax.process_index() == 0:
    for mkey, c in plan.models.items():
      checkpoints.write_tiny_candidate(c, ckpt_dir,
                                       plan_lib.seed_of(mkey, config.seed))
    checkpoints.write_tiny_proxy(_proxy_path(config, ckpt_dir), config.seed)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('fennec full: twin checkpoints')


def _overrides(config, arch: str) -> dict[str, Any]:
  return dict(checkpoints.TINY_OVERRIDES.get(arch, {})) if (
      config.tiny.enabled) else {}


def _graphs(bplan, config) -> dict[str, Any]:
  """Architecture DAGs of the benchmark's candidates (for fennec_paper)."""
  cache, out = {}, {}
  for m, c in bplan.models.items():
    if c.arch not in cache:
      over = _overrides(config, c.arch)
      side = config.tiny.image_size or None
      shape = None if side is None else (1, side, side, 3)
      cache[c.arch] = trace_lib.trace(c.arch, shape, **over)
    out[m] = cache[c.arch]
  return out


def _check_per_device(extractor, config) -> None:
  """Every extractor runs `config.per_device_batch` rows per device."""
  per = extractor.batch_size // extractor.mesh.size
  if per != config.per_device_batch:
    raise AssertionError(f'extractor runs {per} rows per device, config.'
                         f'per_device_batch={config.per_device_batch}.')


def _compute(plan, config, workdir, store) -> None:
  """Steps 3: probes, proxy, candidates (all stored)."""
  ckpt_dir = _checkpoint_dir(config, workdir)
  mesh = sharding.make_mesh()
  folders = plan_lib.folders(config)
  readers, states = [], []
  pool = futures.ThreadPoolExecutor(config.host_threads or os.cpu_count())
  try:
    for key, task in plan.tasks.items():
      reader = tasks_lib.open_task(task, config.data_dir or None, folders)
      readers.append(reader)
      states.append(compute.open_probe(store, key, reader,
                                       config.probe_images,
                                       config.proxy_images, config.seed))
    holder = {}

    def proxy_extractor():
      if 'p' not in holder:
        proxy = proxy_lib.load_proxy(config.proxy.name,
                                     _proxy_path(config, ckpt_dir),
                                     dtype=jnp.dtype(config.proxy.dtype))
        holder['p'] = proxy.extractor(extract_batch(config), mesh)
        _check_per_device(holder['p'], config)
      return holder['p']

    for state in states:
      compute.proxy_features(store, state, proxy_extractor, pool)
    side = config.tiny.image_size or None
    start = time.perf_counter()
    for i, (mkey, c) in enumerate(plan.models.items()):
      elapsed = time.perf_counter() - start
      eta = (f', ETA {elapsed / i * (len(plan.models) - i):.0f}s' if i
             else '')
      logging.info('candidate %d/%d: %s (%s); %.0fs so far%s', i + 1,
                   len(plan.models), mkey, c.arch, elapsed, eta)
      compute.candidate_work(
          store, mkey,
          lambda c=c: checkpoints.load_candidate(
              c, ckpt_dir, overrides=_overrides(config, c.arch),
              image_size=side),
          states, config.estimators, extract_batch(config), mesh, pool,
          check=lambda ex: _check_per_device(ex, config))
  finally:
    pool.shutdown()
    for reader in readers:
      reader.close()


def _published_note(results) -> str:
  pub = [m for m in results.methods if m.startswith('published_')]
  if not pub:
    return ''
  return ('\n`published_<name>` rows rank by the estimator scores the '
          "benchmark's authors published (bundled table) on the same "
          'targets and models: the published numbers beside ours.\n')


def _evaluate_all(plan, config, workdir, store) -> list[list[Any]]:
  """Step 4-5; returns the results.csv rows (process 0 writes files)."""
  rows, md = [], ['# Full benchmark', '']
  ckpt_dir = _checkpoint_dir(config, workdir)
  writer = jax.process_index() == 0
  for b in plan.benchmarks:
    history = public.load_benchmark(b.name).subset(
        models=list(b.models), tasks=list(b.tasks))
    proxy, proxy_s, est, est_s = compute.read_results(
        store, {t: r.key for t, r in b.tasks.items()},
        {m: checkpoints.model_key(c) for m, c in b.models.items()})
    graphs = _graphs(b, config) if config.paper else None
    methods = evaluate.methods(history, proxy, proxy_s, est, est_s, graphs,
                               config.space.to_dict(), config.seed, b.name)
    results = evaluate.evaluate(history, methods, config.k_shots,
                                config.num_seeds, config.seed)
    for r in results.rows:
      rows.append([r.method, b.name, r.k_shot, r.target, r.pearson,
                   r.weighted_tau, r.top1_regret, r.seconds_per_target])
    md += [f'## {b.name}', '', report.markdown_table(results),
           _published_note(results),
           f'{len(b.tasks)} tasks, {len(b.models)} models; '
           f'{len(b.skipped)} table rows left out:', '']
    md += [f'* {kind} `{ident}`: {why}' for kind, ident, why in b.skipped]
    md.append('')
    fennec = evaluate.fit_recommender(history, proxy,
                                      config.space.to_dict(), config.seed)
    if writer:
      report.write_plot(results, os.path.join(workdir,
                                              f'results_{b.name}.png'))
      recommend.save(fennec, {
          'name': config.proxy.name,
          'checkpoint': _proxy_path(config, ckpt_dir),
          'dtype': config.proxy.dtype,
          'preprocessing': dataclasses.asdict(
              proxy_lib.default_preprocessing(config.proxy.name)),
          'probe_images': config.proxy_images, 'seed': config.seed,
          'per_device_batch': config.per_device_batch,
      }, os.path.join(workdir, 'recommender', b.name))
  if writer:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    w.writerow(RESULTS_COLUMNS)
    for r in rows:
      w.writerow(r[:4] + [f'{v:.6f}' for v in r[4:]])
    store_lib.write_text(os.path.join(workdir, 'results.csv'),
                         buf.getvalue())
    store_lib.write_text(os.path.join(workdir, 'report.md'), '\n'.join(md))
  return rows


def evaluate_stored(config: ml_collections.ConfigDict, workdir: str,
                    plan: plan_lib.Plan | None = None) -> list[list[Any]]:
  """Steps 4-5 from a finished store, on one device of each process.

  The evaluation reads only stored units, identical for every process, and
  is host-sized (tables of tens of models and tasks). Every process runs
  it whole on its own first device (`sharding.default_devices`): the
  transfer space's fits read their arrays back to the host, which an array
  spread over several processes does not allow, and a one-device fit gives
  the same numbers whatever the run's layout. Every process computes the
  same tables; process 0 alone writes them and the recommender checkpoints.
  """
  plan = plan if plan is not None else plan_lib.make_plan(config)
  with sharding.default_devices(jax.local_devices()[:1]):
    return _evaluate_all(plan, config, workdir, store_lib.Store(workdir))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs (or resumes) the full benchmark; see the module docstring.

  Returns:
    `{'plan', 'rows', 'computed', 'skipped', 'seconds'}` (`rows`: the
    results.csv rows; `computed` / `skipped`: stored units done now /
    found done), or `{'plan', 'dry_run'}` for a dry run.
  """
  start = time.perf_counter()
  check(config)
  plan = plan_lib.make_plan(config)
  if config.dry_run:
    text = plan_lib.describe(plan, config, local=config.dry_run_measure)
    if jax.process_index() == 0:
      print(text, end='')
      store_lib.write_text(os.path.join(workdir, 'plan.txt'), text)
    return {'plan': plan, 'dry_run': text}
  logging.info('full benchmark: %d processes, %d devices; %d tasks, %d '
               'checkpoints', jax.process_count(), jax.device_count(),
               len(plan.tasks), len(plan.models))
  store = store_lib.Store(workdir)
  if config.tiny.enabled:
    _write_twin(plan, config, _checkpoint_dir(config, workdir))
  with contextlib.ExitStack() as stack:
    if config.tiny.mock_examples:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      stack.enter_context(tfds.testing.mock_data(
          num_examples=config.tiny.mock_examples))
    _compute(plan, config, workdir, store)
  logging.info('full benchmark: %d units computed, %d found done',
               store.computed, store.skipped)
  rows = evaluate_stored(config, workdir, plan)
  seconds = time.perf_counter() - start
  logging.info('full benchmark: done in %.1fs', seconds)
  return {'plan': plan, 'rows': rows, 'computed': store.computed,
          'skipped': store.skipped, 'seconds': seconds}
