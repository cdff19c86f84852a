"""One launch path: every experiment is `run(config, workdir)`.

A config is an `ml_collections.ConfigDict` whose `runner` key names one of
`RUNNERS`; `default_config(name)` holds every key that runner reads, with its
default. `experiments/main.py --config=FILE` and the `fennec` subcommands
(their flags mapped onto `default_config`) both end in `run`, which checks
the config against the runner's keys before any work:

  config = runner.default_config('evaluate')
  config.targets = ('pets', 'dtd')
  runner.run(config, 'runs/evaluate')

`run` writes `workdir/config.json` (the build keeps its own, compared on
resume) and returns what the runner's library function returns.
"""

import copy
import csv
import dataclasses
import inspect
import json
import os
from typing import Any, Callable

import ml_collections
from ml_collections import config_dict

from fennec_jax import joint
from fennec_jax import space as space_lib
from fennec_jax.archi2vec import nas_bench
from fennec_jax.archi2vec import wl
from fennec_jax.benchmarks import comparisons
from fennec_jax.benchmarks import evaluate
from fennec_jax.benchmarks import images
from fennec_jax.benchmarks import models_out
from fennec_jax.benchmarks import offline
from fennec_jax.benchmarks import protocol
from fennec_jax.benchmarks import public
from fennec_jax.benchmarks.full import run as full_run
from fennec_jax.benchmarks.offline import build
from fennec_jax.benchmarks.offline import demo as demo_lib
from fennec_jax.benchmarks.offline import export
from fennec_jax.benchmarks.offline import source as offline_source

CONFIG_FILE = 'config.json'
BUILD_STAGES = ('all', 'build', 'export')


@dataclasses.dataclass(frozen=True)
class Runner:
  """A registered experiment.

  Attributes:
    description: one line for listings.
    defaults: returns the runner's keys with their defaults (no `runner`).
    fn: `fn(config, workdir)` runs the experiment.
    writes_config: whether `run` writes `workdir/config.json` (False where
      the library keeps its own).
    check: raises ValueError for a bad value, before any work (None: no
      values to check beyond what the library checks).
  """
  description: str
  defaults: Callable[[], ml_collections.ConfigDict]
  fn: Callable[[ml_collections.ConfigDict, str | None], Any]
  writes_config: bool = True
  check: Callable[[ml_collections.ConfigDict], None] | None = None


# -- defaults ------------------------------------------------------------------


def _space_defaults() -> ml_collections.ConfigDict:
  """`SpaceConfig` fields with their defaults; its seed is `config.seed`."""
  fields = dataclasses.asdict(space_lib.SpaceConfig())
  del fields['seed']
  return ml_collections.ConfigDict({
      k: config_dict.placeholder(int) if v is None else v
      for k, v in fields.items()})


def _evaluate_defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.benchmark = 'transfergraph_image'
  c.history = ''  # A long-format CSV (model,task,score) instead.
  c.duplicates = 'error'  # With history: fennec_jax.history policies.
  c.k_shots = tuple(protocol.DEFAULT_K_SHOTS)
  c.num_seeds = protocol.DEFAULT_NUM_SEEDS
  c.targets = ()  # () = the benchmark's reported targets (or all).
  c.all_targets = False
  c.methods = ()  # () = every method that applies.
  c.seed = 0
  c.space = _space_defaults()
  return c


def _images_defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data_dir = ''  # '' = the committed fennec_jax/benchmarks/offline_data.
  c.k_shots = tuple(protocol.DEFAULT_K_SHOTS)
  c.num_seeds = protocol.DEFAULT_NUM_SEEDS
  c.targets = ()  # () = every task.
  c.estimators = tuple(images.DEFAULT_IMAGE_ESTIMATORS)
  c.models = ()  # () = the whole zoo.
  c.paper = True  # Include fennec_paper.
  c.seed = 0
  c.space = _space_defaults()
  return c


def _models_out_defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.benchmark = 'parc_controlled'
  c.history = ''
  c.duplicates = 'error'  # With history: fennec_jax.history policies.
  c.seed = 0
  c.space = _space_defaults()
  return c


def _build_defaults() -> ml_collections.ConfigDict:
  c = build.default_config()
  c.export_dir = ''  # Also write the artifacts here ('' = do not).
  c.stage = 'all'  # One of BUILD_STAGES.
  return c


def _graph2vec_defaults() -> dict[str, Any]:
  params = inspect.signature(wl.Graph2Vec.__init__).parameters
  return {k: p.default for k, p in params.items() if k != 'self'}


def _nas_bench_defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.csv = ''  # '' = third_party/nats_bench_tss/nats_bench_tss_15625.csv
  c.train_fraction = 0.01
  c.seeds = 5
  c.datasets = tuple(nas_bench.DATASETS)
  c.methods = ('gnn', 'wl')
  c.flan_sizes = nas_bench.FLAN_SIZES  # () = no FLAN-protocol rows.
  c.limit = 0  # 0 = all cells.
  c.gnn = ml_collections.ConfigDict(dataclasses.asdict(nas_bench.GNNConfig()))
  c.wl = ml_collections.ConfigDict(_graph2vec_defaults())
  return c


def _demo_defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = ''  # '' = drawn with `seed`.
  c.top = 5
  c.seed = 0
  c.data_dir = ''
  return c


def _task_maps_defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seeds = 4  # Probe draws 0..seeds-1.
  c.num_images = 100  # Probe images per task through the proxy.
  c.k_shot = 5  # Observed scores in the images + scores comparison; 0 skips.
  c.targets = ()  # () = every offline task.
  c.data_dir = ''
  return c


def _joint_defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.benchmark = 'parc_controlled'
  c.protocol = 'models'  # One of comparisons.JOINT_PROTOCOLS.
  c.max_models = 0  # Held-out models (a seeded subset); 0 = all eligible.
  c.task_side = 'metadata'  # protocol 'tasks': comparisons.TASK_SIDES.
  c.graphs = False  # protocol 'models', offline: also 'joint_graph'.
  c.seed = 0
  fields = dataclasses.asdict(joint.JointConfig(rank=1))
  del fields['seed']
  c.joint = ml_collections.ConfigDict(fields)
  return c


# -- runners -------------------------------------------------------------------


def _need_workdir(workdir: str | None, name: str) -> str:
  if not workdir:
    raise ValueError(f'runner {name!r} writes files: give a workdir.')
  return workdir


def _evaluate(config, workdir):
  return evaluate.run(
      out_dir=_need_workdir(workdir, 'evaluate'),
      benchmark=config.benchmark or None,
      history_path=config.history or None,
      k_shots=tuple(config.k_shots), num_seeds=config.num_seeds,
      targets=tuple(config.targets) or None,
      all_targets=config.all_targets,
      methods=tuple(config.methods) or None,
      space_config=config.space.to_dict(), seed=config.seed,
      duplicates=config.duplicates)


def _images(config, workdir):
  return images.run_images(
      out_dir=_need_workdir(workdir, 'images'),
      data_dir=config.data_dir or None, k_shots=tuple(config.k_shots),
      num_seeds=config.num_seeds, targets=tuple(config.targets) or None,
      estimators=tuple(config.estimators), paper=config.paper,
      space_config=config.space.to_dict(), seed=config.seed,
      models=tuple(config.models) or None)


def _models_out(config, workdir):
  return models_out.run_models_out(
      _need_workdir(workdir, 'models_out'), config.benchmark or None,
      config.history or None, space_config=config.space.to_dict(),
      seed=config.seed, duplicates=config.duplicates)


def build_config(config: ml_collections.ConfigDict
                 ) -> ml_collections.ConfigDict:
  """The 'build_benchmark' config less its launch keys (`export_dir`,
  `stage`): what `build.build` sees and a work directory is tied to."""
  out = copy.deepcopy(config)
  with out.unlocked():
    for key in ('export_dir', 'stage'):
      del out[key]
  return out


def _check_build(config):
  if config.stage not in BUILD_STAGES:
    raise ValueError(f'config.stage={config.stage!r}; valid: {BUILD_STAGES}.')
  if config.stage == 'export' and not config.export_dir:
    raise ValueError("config.stage='export' needs config.export_dir.")


def _build_benchmark(config, workdir):
  """Builds and/or exports; returns `{'results': ..., 'export': ...}`."""
  workdir = _need_workdir(workdir, 'build_benchmark')
  to_build = build_config(config)
  out = {'results': None, 'export': None}
  if config.stage in ('all', 'build'):
    out['results'] = build.build(to_build, workdir)
  if config.stage == 'export' or (config.stage == 'all' and config.export_dir):
    out['export'] = export.export_artifacts(to_build, workdir,
                                           config.export_dir)
  return out


def _nas_bench(config, workdir):
  return nas_bench.run_from_config(config, _need_workdir(workdir, 'nas_bench'))


def _demo(config, workdir):
  result = demo_lib.demo(task=config.task or None, top=config.top,
                         seed=config.seed, data_dir=config.data_dir or None)
  if workdir:
    with open(os.path.join(workdir, 'demo.txt'), 'w') as f:
      f.write(demo_lib.format_demo(result) + '\n')
  return result


def _task_maps(config, workdir):
  """Writes `workdir/task_maps_offline.json`; returns its content."""
  workdir = _need_workdir(workdir, 'task_maps')
  history = offline.load(config.data_dir or None)
  source = offline_source.OfflineSource(config.data_dir or None)
  result = comparisons.task_maps(
      history, source, seeds=config.seeds, num_images=config.num_images,
      k_shot=config.k_shot, targets=tuple(config.targets) or None)
  with open(os.path.join(workdir, 'task_maps_offline.json'), 'w') as f:
    json.dump(result, f, indent=1)
  return result


def _check_joint(config):
  if config.protocol not in comparisons.JOINT_PROTOCOLS:
    raise ValueError(f'config.protocol={config.protocol!r}; valid: '
                     f'{comparisons.JOINT_PROTOCOLS}.')
  if config.task_side not in comparisons.TASK_SIDES:
    raise ValueError(f'config.task_side={config.task_side!r}; valid: '
                     f'{comparisons.TASK_SIDES}.')


def _joint_eval(config, workdir):
  """Writes `joint_eval_<benchmark>_<protocol>.{csv,json}`; returns the
  summary (the JSON's content)."""
  workdir = _need_workdir(workdir, 'joint_eval')
  history = public.load_benchmark(config.benchmark)
  joint_config = joint.JointConfig(**config.joint.to_dict(), seed=config.seed)
  keys = ('pearson', 'weighted_tau')
  if config.protocol == 'models':
    rows, extra = comparisons.joint_models_out(
        history, joint_config, max_models=config.max_models,
        graphs=config.graphs)
    keys += ('rank_error',)
  else:
    side = (comparisons.proxy_task_side(history)
            if config.task_side == 'proxy'
            else comparisons.metadata_task_side(history))
    rows, extra = comparisons.joint_tasks_out(history, side, joint_config)
    extra['task_side'] = config.task_side
  stem = os.path.join(workdir,
                      f'joint_eval_{config.benchmark}_{config.protocol}')
  with open(stem + '.csv', 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=['method', 'item', 'pearson',
                                      'weighted_tau', 'rank_error'])
    w.writeheader()
    w.writerows(rows)
  summary = {'benchmark': config.benchmark, 'protocol': config.protocol,
             'rank': joint_config.rank, 'hidden': joint_config.hidden,
             'head_precision': joint_config.head_precision,
             'means': comparisons.method_means(rows, keys), **extra}
  with open(stem + '.json', 'w') as f:
    json.dump(summary, f, indent=1)
  return summary


def _full_benchmark(config, workdir):
  return full_run.run(config, _need_workdir(workdir, 'full_benchmark'))


RUNNERS = {
    'evaluate': Runner(
        'leave one task out on a history (methods see other tasks\' scores)',
        _evaluate_defaults, _evaluate),
    'images': Runner(
        'leave one task out on the offline benchmark, methods see the '
        "target's probe images; timed", _images_defaults, _images),
    'models_out': Runner(
        'leave one model out: a cold-start model placed from its metadata',
        _models_out_defaults, _models_out),
    'build_benchmark': Runner(
        'build (or resume) the offline benchmark and export its artifacts',
        _build_defaults, _build_benchmark, writes_config=False,
        check=_check_build),
    'nas_bench': Runner(
        'NAS-Bench-201 check of the architecture encoders (GNN vs WL)',
        _nas_bench_defaults, _nas_bench),
    'demo': Runner(
        'Fennec vs LogME on a held-out task of the offline benchmark',
        _demo_defaults, _demo),
    'task_maps': Runner(
        "Fennec's task maps on the offline benchmark over probe draws",
        _task_maps_defaults, _task_maps),
    'joint_eval': Runner(
        'joint vs post-hoc side information (held-out model or task)',
        _joint_defaults, _joint_eval, check=_check_joint),
    'full_benchmark': Runner(
        'public tasks from tfds, real checkpoints, every estimator and '
        'Fennec from images; resumable, multi-process',
        full_run.default_config, _full_benchmark, check=full_run.check),
}


def _get(name: Any) -> Runner:
  if name not in RUNNERS:
    raise ValueError(f'unknown runner {name!r}; valid runners: '
                     f'{sorted(RUNNERS)}.')
  return RUNNERS[name]


def default_config(name: str) -> ml_collections.ConfigDict:
  """Every key runner `name` reads, with its default, and `runner=name`.

  Raises:
    ValueError: an unknown runner (the message lists the valid ones).
  """
  config = _get(name).defaults()
  config.runner = name
  return config


def _check_keys(config: ml_collections.ConfigDict,
                defaults: ml_collections.ConfigDict, runner: str,
                prefix: str = '') -> None:
  """Raises ValueError for a key missing from or unknown to `defaults`."""
  for key in config.keys():
    if key not in defaults:
      raise ValueError(
          f'runner {runner!r} has no config key {prefix + key!r}; valid keys'
          f'{" of " + prefix[:-1] if prefix else ""}: {sorted(defaults)}.')
    if isinstance(defaults[key], ml_collections.ConfigDict):
      if not isinstance(config[key], (ml_collections.ConfigDict, dict)):
        raise ValueError(f'config key {prefix + key!r} must be a section '
                         f'with keys {sorted(defaults[key])}, got '
                         f'{config[key]!r}.')
      _check_keys(ml_collections.ConfigDict(config[key]), defaults[key],
                  runner, f'{prefix}{key}.')
  missing = sorted(set(defaults.keys()) - set(config.keys()))
  if missing:
    raise ValueError(
        f'runner {runner!r}: config lacks keys '
        f'{[prefix + k for k in missing]}; start from '
        f'fennec_jax.benchmarks.runner.default_config({runner!r}).')


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks `config.runner`, that the keys are exactly the runner's, and the
  values the runner checks up front.

  Raises:
    ValueError: an unknown runner, a key the runner does not know (the
      message names it and lists the valid keys) or lacks, or a bad value.
  """
  if 'runner' not in config:
    raise ValueError(f'the config has no `runner` key; valid runners: '
                     f'{sorted(RUNNERS)}.')
  name = config.runner
  _check_keys(config, default_config(name), name)
  if RUNNERS[name].check:
    RUNNERS[name].check(config)


def run(config: ml_collections.ConfigDict, workdir: str | None) -> Any:
  """Validates `config` and runs its runner in `workdir`.

  Args:
    config: a config with `runner` set (start from `default_config`).
    workdir: output directory (created); `config.json` is written there.
      Only the 'demo' runner accepts None (it then writes nothing).

  Returns:
    What the runner's library function returns (e.g. `(results, paths)`
    for 'evaluate').

  Raises:
    ValueError: see `validate`; and the runner's own errors.
  """
  validate(config)
  runner = RUNNERS[config.runner]
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    if runner.writes_config:
      with open(os.path.join(workdir, CONFIG_FILE), 'w') as f:
        f.write(config.to_json_best_effort(indent=2))
  return runner.fn(config, workdir)
