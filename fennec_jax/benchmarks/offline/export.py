"""The committed artifacts of an offline build, and its data card.

`export_artifacts` turns a (finished or partial) build's work directory into
what `loader` reads: results, model and task tables, float16 weights, probes,
architecture graphs, statistics and a README data card with the numbers.
Nothing here trains; it only reads the build's checkpoints and results.
"""

import csv
import hashlib
import json
import os
import shutil
from typing import Any

from absl import logging
from flax import serialization
import jax
import ml_collections
import numpy as np

from fennec_jax.archi2vec import graphs as graphs_lib
from fennec_jax.archi2vec import trace as trace_lib
from fennec_jax.benchmarks.offline import build
from fennec_jax.benchmarks.offline import proxy_probe
from fennec_jax.benchmarks.offline import zoo as zoo_lib
from fennec_jax.data import probe
from fennec_jax.data import tasks as tasks_lib


def benchmark_stats(results: dict[tuple[str, str], float],
                    models: list[dict[str, Any]],
                    targets: list[str]) -> dict[str, Any]:
  """Is the benchmark worth ranking on? Spread, relatedness, architecture.

  Args:
    results: `{(model, task): accuracy}`.
    models: model metadata rows (`model`, `family`, `size`,
      `source_domains` as a list).
    targets: target task names.

  Returns:
    A dict with a `per_target` list and summary numbers.
  """
  by_id = {m['model']: m for m in models}
  per_target, wins = [], {}
  same_all, other_all = [], []
  for t in targets:
    dom = tasks_lib.get_task(t).domain
    acc = {m: s for (m, tt), s in results.items() if tt == t and m in by_id}
    if not acc:
      continue
    vals = np.array(list(acc.values()))
    best = max(acc, key=acc.get)
    wins[best] = wins.get(best, 0) + 1
    same = [s for m, s in acc.items() if dom in by_id[m]['source_domains']]
    other = [s for m, s in acc.items()
             if dom not in by_id[m]['source_domains']]
    same_all += [s - vals.mean() for s in same]
    other_all += [s - vals.mean() for s in other]
    per_target.append(dict(
        task=t, domain=dom, models=len(acc), min=float(vals.min()),
        max=float(vals.max()), mean=float(vals.mean()),
        spread=float(vals.max() - vals.min()), best=best,
        same_domain_mean=float(np.mean(same)) if same else float('nan'),
        other_domain_mean=float(np.mean(other)) if other else float('nan')))
  fam = {}
  for (m, t), s in results.items():
    if m in by_id and t in targets:
      key = f"{by_id[m]['family']}_{by_id[m]['size']}"
      fam.setdefault(key, []).append(s)
  return dict(
      per_target=per_target,
      targets_with_spread_ge_10=sum(r['spread'] >= 0.10 for r in per_target),
      num_targets=len(per_target),
      wins=dict(sorted(wins.items(), key=lambda kv: -kv[1])),
      same_minus_target_mean=float(np.mean(same_all)) if same_all else None,
      other_minus_target_mean=float(np.mean(other_all)) if other_all
      else None,
      arch_mean={k: float(np.mean(v)) for k, v in sorted(fam.items())})


def _to_float16(variables: Any) -> Any:
  """Params to float16 (halves the artifact size); BatchNorm stats stay f32."""
  out = {}
  for col, tree in jax.device_get(variables).items():
    dtype = np.float16 if col == 'params' else np.float32
    out[col] = jax.tree.map(lambda a, d=dtype: np.asarray(a, d), tree)
  return out


def export_artifacts(config: ml_collections.ConfigDict, workdir: str,
                     out_dir: str, probe_size: int = 500,
                     graphs: bool = True) -> dict[str, Any]:
  """Writes the committed artifacts from a (finished or partial) build.

  Files: results.csv (model,task,score), models.csv, tasks.csv,
  weights/<model>.msgpack (float16 params), probes/<task>.npz (class-balanced
  train probe), graphs/<arch>.json + index.json (archi2vec traces),
  stats.json, build_info.json.

  Args:
    config: the build config.
    workdir: the build's work directory.
    out_dir: where to write the artifacts.
    probe_size: images per target probe.
    graphs: whether to export architecture graphs.

  Returns:
    `benchmark_stats` of the exported results.
  """
  workdir = os.path.abspath(workdir)
  build.check_workdir(config, workdir)
  os.makedirs(os.path.join(out_dir, 'weights'), exist_ok=True)
  os.makedirs(os.path.join(out_dir, 'probes'), exist_ok=True)
  results = build.read_results(os.path.join(workdir, build.RESULTS_FILE),
                               repair=False)
  plan = zoo_lib.zoo_plan(config)
  ids = [m.model_id for m in plan] + ['proxy']
  metas = []
  for model_id in ids:
    if not os.path.exists(build.model_paths(workdir, model_id)[1]):
      logging.warning('export: %s is not pretrained yet; skipped.', model_id)
      continue
    variables, meta = build.load_pretrained(workdir, model_id)
    with open(os.path.join(out_dir, 'weights', f'{model_id}.msgpack'),
              'wb') as f:
      f.write(serialization.msgpack_serialize(_to_float16(variables)))
    metas.append(meta)
  cols = ('model', 'family', 'size', 'arch', 'num_params', 'source',
          'source_domains', 'source_classes', 'source_accuracy',
          'head_classes')
  with open(os.path.join(out_dir, 'models.csv'), 'w') as f:
    f.write(','.join(cols) + '\n')
    for m in metas:
      row = dict(m, model=m['model_id'],
                 source_domains=';'.join(m['source_domains']),
                 source_accuracy=f"{m['source_accuracy']:.4f}",
                 source=m['source'] if m['model_id'] != 'proxy'
                 else 'all single-domain sources')
      f.write(','.join(str(row[c]) for c in cols) + '\n')
  data = build.TaskData(config, workdir)
  tcols = ('task', 'role', 'domain', 'domains', 'num_classes', 'train_size',
           'test_size', 'seed', 'needs_system_data', 'description')
  with open(os.path.join(out_dir, 'tasks.csv'), 'w') as f:
    f.write(','.join(tcols) + '\n')
    for name in list(config.targets) + list(config.sources):
      spec = tasks_lib.get_task(name)
      train, test = data.sizes(name)
      row = dict(task=name, role=spec.role, domain=spec.domain,
                 domains=';'.join(spec.domains), num_classes=spec.num_classes,
                 train_size=train, test_size=test, seed=spec.seed,
                 needs_system_data=spec.needs_system_data,
                 description=spec.description.replace(',', ';'))
      f.write(','.join(str(row[c]) for c in tcols) + '\n')
  for name in config.targets:
    x, y = data.get(name, 'train')
    idx = probe.class_balanced_indices(y, probe_size, seed=config.seed)
    # Procedural probes are regenerated (noisy images compress badly); only
    # tasks made from system data ship their pixels. The hash catches a
    # renderer (PIL / FreeType) that draws differently.
    extra = ({'images': x[idx]} if tasks_lib.get_task(name).needs_system_data
             else {})
    digest = hashlib.sha256(np.ascontiguousarray(x[idx]).tobytes())
    np.savez_compressed(os.path.join(out_dir, 'probes', f'{name}.npz'),
                        labels=y[idx], indices=idx,
                        sha256=np.array(digest.hexdigest()), **extra)
    data.drop(name)
  with open(os.path.join(out_dir, 'results.csv'), 'w') as f:
    f.write('model,task,score\n')
    for (m, t), s in sorted(results.items()):
      f.write(f'{m},{t},{s:.6f}\n')
  if graphs:
    os.makedirs(os.path.join(out_dir, 'graphs'), exist_ok=True)
    index = {}
    for arch in dict.fromkeys([m['arch'] for m in metas]):
      g = trace_lib.trace(arch)
      graphs_lib.write_graph(g, os.path.join(out_dir, 'graphs',
                                              f'{arch}.json'))
      index[arch] = f'{arch}.json'
    with open(os.path.join(out_dir, 'graphs', 'index.json'), 'w') as f:
      json.dump(index, f, indent=1, sort_keys=True)
  models = [dict(model=m['model_id'], family=m['family'], size=m['size'],
                 source_domains=m['source_domains']) for m in metas]
  stats = benchmark_stats(results, models, list(config.targets))
  with open(os.path.join(out_dir, 'stats.json'), 'w') as f:
    json.dump(stats, f, indent=1)
  _export_reports(config, workdir, out_dir)
  timing = []
  if os.path.exists(os.path.join(workdir, 'timing.jsonl')):
    with open(os.path.join(workdir, 'timing.jsonl')) as f:
      timing = [json.loads(line) for line in f if line.strip()]
  info = dict(config=build.work_config(config), runs=timing,
              pairs_done=len(results),
              pairs_total=len(plan) * len(config.targets),
              jax=jax.__version__, devices=str(jax.devices()[0].device_kind))
  with open(os.path.join(out_dir, 'build_info.json'), 'w') as f:
    json.dump(info, f, indent=1, sort_keys=True)
  write_data_card(out_dir)
  return stats


def _export_reports(config: ml_collections.ConfigDict, workdir: str,
                    out_dir: str) -> None:
  """The recipe validation (`<workdir>/recipe/recipe.md`, if run) and, for
  a v2 build (any v2-suite target), the proxy's linear probe per target."""
  src = os.path.join(workdir, 'recipe', 'recipe.md')
  if os.path.exists(src):
    shutil.copyfile(src, os.path.join(out_dir, 'recipe.md'))
  v2 = any(tasks_lib.get_task(t).suite == 'v2' for t in config.targets)
  proxy_meta = build.model_paths(workdir, proxy_probe.PROXY_ID)[1]
  if not v2 or not os.path.exists(proxy_meta):
    return
  with open(proxy_meta) as f:
    meta = json.load(f)
  accs = proxy_probe.probe_targets(config, workdir)
  with open(os.path.join(out_dir, 'proxy_probe.json'), 'w') as f:
    json.dump(dict(source_accuracy=meta['source_accuracy'],
                   source_classes=meta['source_classes'], targets=accs), f,
              indent=1)


def write_data_card(out_dir: str) -> str:
  """Writes `<out_dir>/README.md` from the exported files (numbers included).

  Args:
    out_dir: a directory written by `export_artifacts`.

  Returns:
    The path of the data card.
  """
  def rows(name):
    with open(os.path.join(out_dir, name), newline='') as f:
      return list(csv.DictReader(f))

  with open(os.path.join(out_dir, 'stats.json')) as f:
    stats = json.load(f)
  with open(os.path.join(out_dir, 'build_info.json')) as f:
    info = json.load(f)
  models, task_rows = rows('models.csv'), rows('tasks.csv')
  cfg = info['config']
  v2 = any(tasks_lib.get_task(t['task']).suite == 'v2' for t in task_rows)
  wall = sum(r.get('pretrain_s', 0) + r.get('finetune_s', 0)
             for r in info['runs'])
  fam_counts = {}
  for m in models:
    if m['model'] != 'proxy':
      fam_counts[m['family']] = fam_counts.get(m['family'], 0) + 1
  size = sum(os.path.getsize(os.path.join(dp, f))
             for dp, _, fs in os.walk(out_dir) for f in fs)
  out = [
      '# Offline benchmark: data card',
      '',
      'A models x tasks table of measured fine-tuning accuracy, built end to '
      'end on offline data by `fennec_jax.benchmarks.offline.build`. '
      'Everything here is generated; nothing was downloaded.',
      '',
      f"* **{stats['num_targets']} target tasks** over "
      f"{len({t['domain'] for t in task_rows if t['role'] == 'target'})} "
      f"visual domains; **{len(models) - 1} zoo models** "
      f"({', '.join(f'{k}: {v}' for k, v in sorted(fam_counts.items()))}) "
      'at two sizes (s, l), each pretrained on its own source task or '
      'mixture; one proxy '
      f"(`{next(m['arch'] for m in models if m['model'] == 'proxy')}`) "
      'pretrained on all single-domain sources.',
      f"* Pairs measured: {info['pairs_done']} / {info['pairs_total']}.",
      f'* Build wall time of the run(s) that completed: {wall / 60:.1f} min '
      '(2-core CPU shared with other jobs; runs killed and resumed before '
      'are not counted); per-run timings in build_info.json.',
      f'* Size on disk: {size / 2**20:.1f} MiB.',
      '',
      '## Build command',
      '',
      '```',
      *_build_command(v2),
      '```',
      '',
      'Resumable: kill it at any moment and rerun the same command. Fashion '
      'tasks need the Debian package `dataset-fashion-mnist`'
      + ('; digit and photo tasks the `offline2` extra (scikit-learn and '
         'scikit-image wheels, read as files).' if v2 else '.'),
      '',
      '## Recipe (one for every pair)',
      '',
      f"* Pretraining: {cfg['pretrain']['steps']} AdamW steps, batch "
      f"{cfg['pretrain']['batch_size']}, lr {cfg['pretrain']['lr']} "
      f"(warmup-cosine), weight decay {cfg['pretrain']['weight_decay']}, "
      f"{cfg['source_sizes'][0]} train / {cfg['source_sizes'][1]} held-out "
      'images per source. With `vmap` on, the models of one architecture '
      'train together (off on CPU, where it measured slower). Proxy: '
      f"{cfg['proxy']['steps']} steps, batch "
      f"{cfg['proxy']['batch_size']}.",
      f"* Fine-tuning: full fine-tune, new linear head (padded to "
      f"{cfg['finetune']['max_classes']} outputs, masked), "
      f"{cfg['finetune']['steps']} AdamW steps, batch "
      f"{cfg['finetune']['batch_size']}, lr {cfg['finetune']['lr']} "
      f"(warmup-cosine), weight decay {cfg['finetune']['weight_decay']}; "
      'the same batches and head initialization for every model. Score: '
      'accuracy on the target test split.',
      '* Images: 28x28x3 uint8, scaled to [-1, 1] (`offline.preprocess`).',
      '',
      '## Is it worth ranking on?',
      '',
      f"* Targets whose accuracy spread across models is >= 10 points: "
      f"**{stats['targets_with_spread_ge_10']} / {stats['num_targets']}**.",
      f"* Best-model counts (model: targets won): "
      + ', '.join(f'{k}: {v}' for k, v in list(stats['wins'].items())[:8])
      + '.',
      '* Source-target relatedness: mean accuracy minus the target mean, '
      'for models whose source shares the target domain: '
      f"**{100 * (stats['same_minus_target_mean'] or 0):+.1f} points**; "
      'other-domain sources: '
      f"**{100 * (stats['other_minus_target_mean'] or 0):+.1f} points**.",
      '* Mean accuracy by architecture: '
      + ', '.join(f'{k} {100 * v:.1f}' for k, v in stats['arch_mean'].items())
      + '.',
      '',
      '| target | domain | classes | train | min | mean | max | spread | '
      'same-domain mean | other-domain mean | best model |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  tmeta = {t['task']: t for t in task_rows}
  for r in stats['per_target']:
    t = tmeta[r['task']]
    out.append(
        f"| {r['task']} | {r['domain']} | {t['num_classes']} | "
        f"{t['train_size']} | {100 * r['min']:.1f} | {100 * r['mean']:.1f} | "
        f"{100 * r['max']:.1f} | {100 * r['spread']:.1f} | "
        f"{100 * r['same_domain_mean']:.1f} | "
        f"{100 * r['other_domain_mean']:.1f} | {r['best']} |")
  out += ['', '## Tasks', '',
          'Targets come from the Fashion-MNIST *test* file (split 6000/4000 '
          'into train/test pools), DejaVu glyphs (the fonts bundled with '
          'matplotlib), and procedural shapes, textures and counting scenes. '
          'Sources use the Fashion-MNIST *train* file, other character sets '
          '(lowercase, symbols, fonts), other shape/texture/counting '
          'definitions, and mixtures of two or three sources; no source sees '
          "a target's test split. Every task is deterministic from its seed "
          '(crc32 of the name).', '', *_v2_task_text(v2),
          '| task | role | domain | classes | train | test | description |',
          '|---|---|---|---|---|---|---|']
  for t in task_rows:
    out.append(f"| {t['task']} | {t['role']} | {t['domains']} | "
               f"{t['num_classes']} | {t['train_size']} | {t['test_size']} | "
               f"{t['description']} |")
  out += _optional_sections(out_dir)
  out += ['', '## Models', '',
          '| model | family | size | params | source | source domains | '
          'source acc |', '|---|---|---|---|---|---|---|']
  for m in models:
    out.append(f"| {m['model']} | {m['family']} | {m['size']} | "
               f"{int(m['num_params']):,} | {m['source']} | "
               f"{m['source_domains']} | "
               f"{100 * float(m['source_accuracy']):.1f} |")
  out += ['', '## Files', '',
          '* `results.csv`: `model,task,score` (test accuracy), long format; '
          '`fennec_jax.benchmarks.offline.load()` returns it as a `History` '
          'with model and task metadata.',
          '* `models.csv`, `tasks.csv`: metadata (family, size, #params, '
          'source, source accuracy; domain, classes, split sizes, seed).',
          '* `weights/<model>.msgpack`: flax msgpack, params float16 (+ '
          'BatchNorm stats float32) of backbone and padded source head; '
          '`offline.load_model(id)` returns `(module, variables)`.',
          '* `probes/<task>.npz`: class-balanced 500-image probe of each '
          "target's train split: indices, labels, SHA-256; Fashion probes "
          'also carry pixels, the others are regenerated '
          '(`offline.load_probe`).',
          '* `graphs/<arch>.json`: archi2vec traces (`offline.load_graph`).',
          '* `stats.json`, `build_info.json`: the numbers above, the config.',
          '', '## Limitations', '',
          '* Tiny images (28x28), tiny models (19k-700k params) and short '
          'fine-tunes: a world for testing recommenders end to end, not a '
          'substitute for public benchmarks.',
          '* One seed per pair; differences of a point or two are noise.',
          '* Glyph rendering depends on PIL/FreeType; `load_probe` checks '
          'the SHA-256 and logs a warning if pixels differ.', '']
  path = os.path.join(out_dir, 'README.md')
  with open(path, 'w') as f:
    f.write('\n'.join(out))
  return path


def _build_command(v2: bool) -> list[str]:
  if not v2:
    return ['fennec build-benchmark --workdir=runs/offline_build \\',
            '    --export_dir=fennec_jax/benchmarks/offline_data']
  return ['fennec build-benchmark \\',
          '    --config=experiments/configs/build_benchmark.py:v2 \\',
          '    --workdir=runs/offline_v2 --export_dir=<dir>']


def _v2_task_text(v2: bool) -> list[str]:
  """The v2 suite's extra sources of images (`fennec_jax.data.suite_v2`)."""
  if not v2:
    return []
  return [
      'v2 adds: 10-character glyph subsets (every k-th character of a '
      'script) in place of the many-class glyph targets; the UCI handwritten '
      "digits shipped in scikit-learn's wheel (1,797 real 8x8 scans: even "
      'rows feed targets, split 60/40 into train/test pools, odd rows feed '
      'sources; each image upsampled to a random size and place on 28x28); '
      "and patches of scikit-image's sample photographs (targets crop 8 "
      'photographs, train from the left 70% of the columns and test from '
      'the right 30%; sources crop 8 other photographs).', '']


def _optional_sections(out_dir: str) -> list[str]:
  """Recipe validation (`recipe.md`) and proxy probe (`proxy_probe.json`)."""
  out = []
  path = os.path.join(out_dir, 'recipe.md')
  if os.path.exists(path):
    with open(path) as f:
      out += ['', '## Recipe validation', '',
              'Does the fixed recipe rank the models as a much longer one '
              'would? (`fennec_jax.benchmarks.offline.recipe`; every model '
              'of the sample fine-tuned under each step count with the '
              "build's head initialization and batch stream.)", '',
              f.read().rstrip('\n')]
  path = os.path.join(out_dir, 'proxy_probe.json')
  if os.path.exists(path):
    with open(path) as f:
      probe_ = json.load(f)
    accs = probe_['targets']
    out += ['', '## Proxy', '',
            f"* Held-out accuracy on its own source mixture "
            f"({probe_['source_classes']} classes): "
            f"**{100 * probe_['source_accuracy']:.1f}%**.",
            '* Linear probe (L2 logistic regression on the pooled features, '
            "fit on the target's train split, scored on its test split), "
            f"mean over {len(accs)} targets: "
            f"**{100 * float(np.mean(list(accs.values()))):.1f}%**.", '',
            '| target | linear-probe accuracy |', '|---|---|']
    out += [f'| {t} | {100 * a:.1f} |' for t, a in accs.items()]
  return out
