"""Recipe validation: does the fixed fine-tuning recipe rank like a long one?

The benchmark's ground truth is one fixed, short recipe per (model, target).
It is worth ranking on only if it orders the models the way a user's much
longer fine-tune would. `validate` fine-tunes every zoo model on a sample of
targets under several step counts (the same head initialization and batch
stream as the build: task key = fold_in(seed, target index), batches drawn by
`fold_in(key, step)`, warmup a fixed fraction of the steps) and `agreement`
reports, per target, the weighted Kendall tau between each recipe's model
ranking and the longest one's, plus the best model's accuracy against the
3x-chance bar. Results go to `<out>/steps<S>.csv` (the build's results
format: one fsync'ed line per pair), so a killed validation resumes.
"""

import copy
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import ml_collections
import numpy as np

from fennec_jax import metrics
from fennec_jax import progress as progress_lib
from fennec_jax import sharding
from fennec_jax.benchmarks.offline import build
from fennec_jax.benchmarks.offline import zoo as zoo_lib
from fennec_jax.data import tasks as tasks_lib


def recipe_config(config: ml_collections.ConfigDict,
                  steps: int) -> ml_collections.ConfigDict:
  """`config` with `steps` fine-tuning steps, warmup scaled to match."""
  out = copy.deepcopy(config)
  fc = config.finetune
  out.finetune.steps = int(steps)
  out.finetune.warmup = max(1, round(fc.warmup * steps / fc.steps))
  return out


def chance_bar(num_classes: int) -> float:
  """min(3x chance, chance + 30% of the headroom): the issue's floor."""
  chance = 1.0 / num_classes
  return min(3 * chance, chance + 0.3 * (1 - chance))


def results_path(out_dir: str, steps: int) -> str:
  return os.path.join(out_dir, f'steps{int(steps)}.csv')


def validate(config: ml_collections.ConfigDict, workdir: str,
             targets: list[str], steps: list[int], out_dir: str,
             models: list[str] | None = None,
             load: Callable[[str], Any] | None = None) -> dict[int, dict]:
  """Fine-tunes `models` (default: the zoo) x `targets` under each recipe.

  Args:
    config: the build config (its zoo must be pretrained in `workdir`).
    workdir: the build's work directory (zoo checkpoints, task data).
    targets: the sample of targets (each in `config.targets`).
    steps: the step counts to compare (the longest is the reference).
    out_dir: where the per-recipe results files go (resumable).
    models: model ids to use (default: every zoo model).
    load: `model_id -> {collection: backbone variables}` (default: the
      workdir's checkpoints; e.g. the committed weights via `loader`).

  Returns:
    `{steps: {(model, task): accuracy}}`.

  Raises:
    ValueError: a target outside the config or an unknown model id.
  """
  os.makedirs(out_dir, exist_ok=True)
  plan = zoo_lib.zoo_plan(config)
  if models is not None:
    unknown = sorted(set(models) - {m.model_id for m in plan})
    if unknown:
      raise ValueError(f'Unknown zoo model ids {unknown}.')
    plan = [m for m in plan if m.model_id in models]
  for t in targets:
    if t not in config.targets:
      raise ValueError(f'{t!r} is not a target of this config; valid: '
                       f'{list(config.targets)}')
  data = build.TaskData(config, workdir)
  mesh = sharding.make_mesh(config.num_devices)
  root = jax.random.fold_in(jax.random.key(config.seed), 2)
  done = {s: build.read_results(results_path(out_dir, s)) for s in steps}
  total = len(plan) * len(targets) * len(steps)
  progress = progress_lib.Progress('recipe', total,
                                   done=sum(len(d) for d in done.values()))
  fns: dict[tuple[int, str], Any] = {}
  for task in targets:
    spec = tasks_lib.get_task(task)
    x, y = data.get(task, 'train')
    xt, yt = data.get(task, 'test')
    fc = config.finetune
    chunk = min(fc.eval_chunk, len(yt))
    n_test = -(-len(yt) // chunk) * chunk
    args = (build._pad(x, fc.max_train), build._pad(y, fc.max_train),  # pylint: disable=protected-access
            np.int32(min(len(y), fc.max_train)),
            build._class_mask(spec.num_classes, fc.max_classes),  # pylint: disable=protected-access
            build._pad(xt, n_test), build._pad(yt, n_test),  # pylint: disable=protected-access
            np.int32(len(yt)))
    key = jax.random.fold_in(root, list(config.targets).index(task))
    for m in plan:
      todo = [s for s in steps if (m.model_id, task) not in done[s]]
      if not todo:
        continue
      if load is None:
        v, _ = build.load_pretrained(workdir, m.model_id)
        backbone = [{k: c['backbone'] for k, c in v.items()}]
      else:
        backbone = [load(m.model_id)]
      for s in todo:
        fkey = (s, m.arch, n_test)
        if fkey not in fns:
          fns[fkey] = build.finetune_fn(recipe_config(config, s), mesh,
                                        m.arch, chunk, 1)
        t0 = time.time()
        acc = float(fns[fkey](backbone, key, *args)[0])
        build.append_result(results_path(out_dir, s), m.model_id, task, acc,
                            time.time() - t0)
        done[s][(m.model_id, task)] = acc
        progress.update()
    logging.info('recipe validation: %s done', task)
    data.drop(task)
  return done


def agreement(done: dict[int, dict[tuple[str, str], float]],
              min_models: int = 3) -> dict[str, Any]:
  """Per target: weighted tau of each recipe's ranking vs the longest one.

  Args:
    done: `{steps: {(model, task): accuracy}}` (from `validate` or read
      back with `read`).
    min_models: targets with fewer models measured under every recipe are
      left out.

  Returns:
    `{'reference': steps, 'per_target': [...], 'summary': {steps: ...}}`;
    per target: the models compared, weighted and plain Kendall tau per
    recipe, the best accuracy per recipe and the 3x-chance bar.
  """
  steps = sorted(done)
  ref = steps[-1]
  tasks = sorted({t for d in done.values() for _, t in d})
  rows = []
  for t in tasks:
    models = sorted(set.intersection(*[{m for m, tt in done[s] if tt == t}
                                       for s in steps]))
    if len(models) < min_models:
      continue
    true = np.array([done[ref][(m, t)] for m in models])
    row = dict(task=t, models=len(models),
               bar=chance_bar(tasks_lib.get_task(t).num_classes),
               best={}, mean={}, wtau={}, tau={})
    for s in steps:
      pred = np.array([done[s][(m, t)] for m in models])
      row['best'][s] = float(pred.max())
      row['mean'][s] = float(pred.mean())
      if s != ref:
        row['wtau'][s] = float(metrics.weighted_tau(pred, true))
        row['tau'][s] = float(metrics.kendall_tau(pred, true))
    rows.append(row)
  summary = {}
  for s in steps[:-1]:
    w = np.array([r['wtau'][s] for r in rows])
    summary[s] = dict(mean_wtau=float(np.nanmean(w)) if rows else None,
                      min_wtau=float(np.nanmin(w)) if rows else None,
                      targets_ge_08=int(np.sum(w >= 0.8)),
                      targets_best_ge_bar=int(sum(
                          r['best'][s] >= r['bar'] for r in rows)))
  return dict(reference=ref, steps=steps, per_target=rows, summary=summary,
              targets=len(rows))


def read(out_dir: str) -> dict[int, dict[tuple[str, str], float]]:
  """The results files `steps<S>.csv` under `out_dir`, by step count."""
  out = {}
  for name in sorted(os.listdir(out_dir)):
    if name.startswith('steps') and name.endswith('.csv'):
      out[int(name[5:-4])] = build.read_results(os.path.join(out_dir, name),
                                                repair=False)
  return out


def format_markdown(report: dict[str, Any]) -> str:
  """The data card's recipe-validation section body."""
  steps, ref = report['steps'], report['reference']
  short = [s for s in steps if s != ref]
  lines = [
      f'Reference: {ref} steps. Weighted Kendall tau (scipy weightedtau '
      'defaults) between each recipe\'s model ranking and the reference\'s, '
      'per target; best = best model\'s test accuracy; bar = min(3x chance, '
      'chance + 30% of the headroom).', '',
      '| recipe (steps) | mean weighted tau | min | targets >= 0.8 | '
      'targets whose best model clears the bar |', '|---|---|---|---|---|']
  for s in short:
    m = report['summary'][s]
    lines.append(f"| {s} | {m['mean_wtau']:.3f} | {m['min_wtau']:.3f} | "
                 f"{m['targets_ge_08']} / {report['targets']} | "
                 f"{m['targets_best_ge_bar']} / {report['targets']} |")
  lines += ['', '| target | models | bar | ' + ' | '.join(
      f'best@{s}' for s in steps) + ' | ' + ' | '.join(
          f'wtau {s} vs {ref}' for s in short) + ' |',
            '|---' * (3 + len(steps) + len(short)) + '|']
  for r in report['per_target']:
    lines.append(f"| {r['task']} | {r['models']} | {100 * r['bar']:.1f} | "
                 + ' | '.join(f"{100 * r['best'][s]:.1f}" for s in steps)
                 + ' | ' + ' | '.join(f"{r['wtau'][s]:.3f}" for s in short)
                 + ' |')
  return '\n'.join(lines) + '\n'
