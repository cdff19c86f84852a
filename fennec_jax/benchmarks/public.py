"""Published fine-tuning results, bundled under `third_party/`, as Histories.

Each loader turns one public table into a `History` (models × target tasks,
scores as published) with model and task metadata, and, where the source ships
them, the raw transferability-estimator scores as one History per method.
The data files live in the repository's `third_party/<source>/` (each with a
README giving origin, commit, paper and licence); `fennec_jax/third_party` is a
symlink to it, so the files are package data and load the same from a source
checkout, an editable install and a wheel.

Conventions shared by all benchmarks:
  * `imagenet_acc` model metadata: ImageNet-1k top-1 of the source model in
    percent (TransferGraph's table stores fractions; they are scaled by 100).
  * `num_params`, `family` (architecture family), `source_dataset` model
    metadata where the tables have them; `num_classes`, `train_size` task
    metadata where known.
  * Nothing is dropped silently: every filtered row is counted in a log line.

Benchmarks (see each loader's docstring for its filtering and duplicate rule):
  transfergraph_image  180 HF image models × 13 targets (Li et al., ICDE 2024).
  transfergraph_text   full fine-tunes of 167 HF text models × 10 targets.
  sfda_group1          11 torchvision CNNs × 11 targets (Shao et al.,
                       ECCV 2022).
  model_spider_single  10 torchvision CNNs × 8 targets (+2 regression sets as
                       an option), nine estimator scores (Zhang et al., 2023).
  model_spider_multi   66 backbones fine-tuned on 22 sources × 7 targets.
  parc_all             71 source models (5 archs, many sources) × 7 targets,
                       67 per target (Bolya et al., NeurIPS 2021).
  parc_controlled      32 models (4 archs × 8 sources) × 7 targets, 28 per
                       target.
"""

import collections
import csv
import functools
import importlib.resources
import math
import pathlib
from typing import Any, Callable, Iterable, Mapping

from absl import logging
import numpy as np

from fennec_jax import history as history_lib
from fennec_jax.benchmarks.offline import loader as offline_loader

History = history_lib.History

# The estimators' names as the estimator registry spells them.
_TG_METRICS = {
    'TransferabilityMethod.LOG_ME': 'logme',
    'TransferabilityMethod.REG_H_SCORE': 'reg_h_score',
}
_MODEL_SPIDER_METRICS = {
    'H-Score': 'h_score',
    'LEEP': 'leep',
    'LogME': 'logme',
    'NCE': 'nce',
    'NLEEP': 'nleep',
    'OTCE': 'otce',
    'PACTranDirichlet': 'pactran_dirichlet',
    'GBC': 'gbc',
    'LFC': 'lfc',
}

# Number of classes of the target datasets that the tables name without it
# (the datasets' standard classification label sets; Caltech-101 without its
# background class; VOC 2007 is multi-label over 20 classes).
_NUM_CLASSES = {
    'aid': 30, 'aircraft': 100, 'caltech101': 101, 'cars': 196,
    'cifar10': 10, 'cifar100': 100, 'cub200': 200, 'cub2011': 200, 'dtd': 47,
    'flowers': 102, 'food': 101, 'nabird': 555, 'oxford_pets': 37, 'pet': 37,
    'pets': 37, 'stanford_dogs': 120, 'stl10': 10, 'sun397': 397,
    'vlcs': 5, 'voc2007': 20,
}

# Model Spider's 42-model zoo leaves out backbones fine-tuned on these sources
# (they are, or overlap with, its targets).
_MODEL_SPIDER_EXCLUDED_SOURCES = frozenset(
    {'Aircraft', 'DTD', 'SVHN', 'Pet', 'VLCS', 'STL10', 'CUB2011', 'ImageNet'})


def third_party_path(*parts: str) -> pathlib.Path:
  """Path of a bundled data file, e.g. `third_party_path('parc', 'x.csv')`.

  Args:
    *parts: path components below `third_party/`.

  Returns:
    The path (inside the installed package).

  Raises:
    FileNotFoundError: if the file is missing (a broken install).
  """
  root = pathlib.Path(str(importlib.resources.files('fennec_jax')))
  path = root.joinpath('third_party', *parts)
  if not path.exists():
    raise FileNotFoundError(
        f'Bundled data file {path} is missing; fennec_jax/third_party should '
        'link to the repository\'s third_party/ (reinstall the package).')
  return path


def _read(path: pathlib.Path, required: Iterable[str]
          ) -> list[tuple[int, dict[str, str]]]:
  """Rows of a CSV as (line number, {column: stripped value})."""
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in required if c not in header]
    if missing:
      raise ValueError(f'{path}: line 1 (header) lacks column(s) {missing}; '
                       f'found {header}.')
    rows = []
    for row in reader:
      if all(v is None or not str(v).strip() for v in row.values()):
        continue
      rows.append((reader.line_num, {
          k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()}))
  if not rows:
    raise ValueError(f'{path}: the table has no rows.')
  return rows


def _float(path: pathlib.Path, line: int, column: str, raw: Any) -> float:
  """A finite float, or a ValueError naming file, line and column."""
  try:
    value = float(raw)
  except (TypeError, ValueError):
    raise ValueError(f'{path}: line {line}, column {column!r}: {raw!r} is not '
                     'a number.') from None
  if not math.isfinite(value):
    raise ValueError(f'{path}: line {line}, column {column!r}: {raw!r} is not '
                     'finite.')
  return value


def _optional_float(raw: Any) -> float:
  try:
    value = float(raw)
  except (TypeError, ValueError):
    return math.nan
  return value if math.isfinite(value) else math.nan


def _log_drops(source: Any, drops: Mapping[str, int]) -> None:
  for reason, count in drops.items():
    if count:
      logging.info('%s: dropped %d row(s): %s.', source, count, reason)


def _with_metadata(history: History, model_meta: Mapping[str, Mapping],
                   task_meta: Mapping[str, Mapping]) -> History:
  """Adds metadata columns given as {column: {id: value}} (missing -> NaN)."""
  models = dict(history.model_metadata)
  for key, values in model_meta.items():
    models[key] = history_lib.metadata_column(
        [values.get(m) for m in history.model_ids])
  tasks = dict(history.task_metadata)
  for key, values in task_meta.items():
    tasks[key] = history_lib.metadata_column(
        [values.get(t) for t in history.task_ids])
  return history.replace(model_metadata=models, task_metadata=tasks)


def _num_classes(task_ids: Iterable[str]) -> dict[str, int]:
  return {t: _NUM_CLASSES[t.lower()] for t in task_ids
          if t.lower() in _NUM_CLASSES}


def _torchvision_metadata() -> dict[str, dict[str, Any]]:
  """torchvision IMAGENET1K_V1 top-1 (%) and parameter count per model."""
  path = third_party_path('torchvision', 'imagenet1k_v1.csv')
  out = {'imagenet_acc': {}, 'num_params': {}}
  for line, row in _read(path, ('model', 'imagenet_top1', 'num_params')):
    out['imagenet_acc'][row['model']] = _float(path, line, 'imagenet_top1',
                                               row['imagenet_top1'])
    out['num_params'][row['model']] = _float(path, line, 'num_params',
                                             row['num_params'])
  return out


def _family(model: str) -> str:
  """'resnet50' -> 'resnet', 'mobilenet_v2' -> 'mobilenet', ..."""
  head = model.split('_')[0]
  return head.rstrip('0123456789') or head


def _estimator_histories(ground_truth: History, records: Mapping[str, list],
                         source: str, duplicates: str) -> dict[str, History]:
  """Estimator Histories aligned to the ground truth's models and tasks.

  Args:
    ground_truth: the benchmark's History; estimator rows use its model order
      and the subset of its tasks that have scores.
    records: method -> [(model, task, score, where)].
    source: file name for log lines.
    duplicates: rule for repeated (model, task) scores.

  Returns:
    method -> History (same model_ids as `ground_truth`).
  """
  out = {}
  models, tasks = set(ground_truth.model_ids), set(ground_truth.task_ids)
  for method, rows in sorted(records.items()):
    kept = [(m, t, s) for m, t, s, _ in rows if m in models and t in tasks]
    unknown = len(rows) - len(kept)
    if unknown:
      logging.info('%s: %s: dropped %d score(s) of models or tasks that are '
                   'not in the ground truth.', source, method, unknown)
    history = History.from_records(
        kept, duplicates=duplicates, name=f'{ground_truth.name}:{method}',
        score_name=method, source=f'{source} ({method})')
    task_order = [t for t in ground_truth.task_ids if t in history.task_ids]
    full = np.full((ground_truth.num_models, len(task_order)), np.nan)
    cols = [history.task_index(t) for t in task_order]
    for i, model in enumerate(ground_truth.model_ids):
      if model in history.model_ids:
        full[i] = history.scores[history.model_index(model), cols]
    out[method] = History.from_matrix(
        full, ground_truth.model_ids, task_order, name=history.name,
        score_name=method)
  return out


# -- TransferGraph ------------------------------------------------------------


def _transfergraph_tasks(kind: str) -> dict[str, dict[str, float]]:
  path = third_party_path('transfergraph', kind,
                          'target_dataset_features.csv')
  meta = {'num_classes': {}, 'train_size': {}}
  for line, row in _read(path, ('finetune_dataset', 'size',
                                'number_of_classes')):
    meta['train_size'][row['finetune_dataset']] = _float(
        path, line, 'size', row['size'])
    meta['num_classes'][row['finetune_dataset']] = _float(
        path, line, 'number_of_classes', row['number_of_classes'])
  return meta


@functools.cache
def _transfergraph_image() -> History:
  """TransferGraph image classification: 180 HF models × 13 targets.

  Scores: `eval_accuracy` (fraction) of fine-tuning every model on every
  target (30 epochs, lr 0.01). The table has one record per pair; a repeated
  pair would be an error (`duplicates='error'`).
  Model metadata from `model_config_dataset.csv`: `num_params`, `family`
  (HF `model_type`), `source_dataset` (HF `dataset`), `source_accuracy`,
  `feature_dim`, `num_source_labels`, and `imagenet_acc` (`accuracy` × 100 for
  models whose `dataset` is `imagenet`; the column is what the uploader
  reported, not re-measured). Task metadata: `num_classes`, `train_size`
  (`target_dataset_features.csv`, verbatim, e.g. flowers lists 10 classes).
  """
  base = ('transfergraph', 'image_classification')
  path = third_party_path(*base, 'records.csv')
  records = [
      (row['model'], row['finetuned_dataset'],
       _float(path, line, 'eval_accuracy', row['eval_accuracy']))
      for line, row in _read(path, ('model', 'finetuned_dataset',
                                    'eval_accuracy'))]
  history = History.from_records(
      records, duplicates='error', name='transfergraph_image',
      score_name='finetune_accuracy', source=str(path))
  config = third_party_path(*base, 'model_config_dataset.csv')
  meta = collections.defaultdict(dict)
  for _, row in _read(config, ('model', 'dataset', 'accuracy', 'model_type',
                               'number_of_parameters')):
    m = row['model']
    meta['num_params'][m] = _optional_float(row['number_of_parameters'])
    meta['family'][m] = row['model_type'] or None
    meta['source_dataset'][m] = row['dataset'] or None
    meta['source_accuracy'][m] = _optional_float(row['accuracy'])
    meta['feature_dim'][m] = _optional_float(row.get('output_shape'))
    meta['num_source_labels'][m] = _optional_float(row.get('#labels'))
    if row['dataset'] == 'imagenet':
      meta['imagenet_acc'][m] = 100 * _optional_float(row['accuracy'])
  _log_missing_metadata(history, meta['family'], config)
  return _with_metadata(history, meta, _transfergraph_tasks(base[1]))


def _log_missing_metadata(history: History, column: Mapping[str, Any],
                          path: Any) -> None:
  missing = [m for m in history.model_ids if m not in column]
  if missing:
    logging.info('%s: %d model(s) have no metadata row (NaN metadata): %s',
                 path, len(missing), missing[:5])


@functools.cache
def _transfergraph_text() -> History:
  """TransferGraph sequence classification: full fine-tunes only.

  Rows kept: `peft_method` empty (full fine-tune; LoRA rows, and one row
  spelled 'lor', are a different protocol), a `finetuned_dataset` listed in
  `target_dataset_features.csv` (drops the malformed rows such as '0.1',
  'none', 'lora') and a non-empty `eval_accuracy` (drops failed runs). Each
  drop reason is counted in a log line. Repeated runs of a pair (318 pairs,
  same seed and hyper-parameters) are averaged (`duplicates='mean'`).
  Model metadata: `num_params`, `family`, `source_dataset`,
  `source_accuracy`; task metadata: `num_classes`, `train_size` (verbatim).
  """
  base = ('transfergraph', 'sequence_classification')
  path = third_party_path(*base, 'records.csv')
  tasks_meta = _transfergraph_tasks(base[1])
  known = set(tasks_meta['num_classes'])
  drops = collections.Counter()
  records = []
  for line, row in _read(path, ('model', 'finetuned_dataset', 'eval_accuracy',
                                'peft_method')):
    if row['finetuned_dataset'] not in known or not row['model']:
      drops['malformed finetuned_dataset/model (not a known target)'] += 1
    elif row['peft_method']:
      drops['parameter-efficient fine-tunes (peft_method '
            f'{row["peft_method"]!r})'] += 1
    elif not row['eval_accuracy']:
      drops['empty eval_accuracy (failed run)'] += 1
    else:
      records.append((row['model'], row['finetuned_dataset'],
                      _float(path, line, 'eval_accuracy',
                             row['eval_accuracy'])))
  _log_drops(path, drops)
  history = History.from_records(
      records, duplicates='mean', name='transfergraph_text',
      score_name='finetune_accuracy', source=str(path))
  config = third_party_path(*base, 'model_config_dataset.csv')
  meta = collections.defaultdict(dict)
  for _, row in _read(config, ('model', 'model_type', 'number_of_parameters',
                               'dataset', 'accuracy')):
    m = row['model']
    meta['num_params'][m] = _optional_float(row['number_of_parameters'])
    meta['family'][m] = row['model_type'] or None
    meta['source_dataset'][m] = row['dataset'] or None
    meta['source_accuracy'][m] = _optional_float(row['accuracy'])
  _log_missing_metadata(history, meta['family'], config)
  return _with_metadata(history, meta, tasks_meta)


def _transfergraph_baselines(kind: str, ground_truth: History
                             ) -> dict[str, History]:
  """LogME and Reg-H-Score; malformed rows dropped, repeated runs averaged."""
  path = third_party_path('transfergraph', kind,
                          'transferability_score_records.csv')
  records = collections.defaultdict(list)
  malformed = 0
  for line, row in _read(path, ('model', 'target_dataset', 'metric',
                                'score')):
    method = _TG_METRICS.get(row['metric'] or '')
    if method is None or not row['model'] or not row['score']:
      malformed += 1
      continue
    records[method].append((row['model'], row['target_dataset'],
                            _float(path, line, 'score', row['score']),
                            f'line {line}'))
  _log_drops(path, {'malformed (truncated lines without a metric)': malformed})
  return _estimator_histories(ground_truth, records, str(path), 'mean')


# -- SFDA, Model Spider, PARC -------------------------------------------------


def _torchvision_zoo(history: History) -> History:
  tv = _torchvision_metadata()
  family = {m: _family(m) for m in history.model_ids}
  return _with_metadata(history, {**tv, 'family': family},
                        {'num_classes': _num_classes(history.task_ids)})


@functools.cache
def _sfda_group1() -> History:
  """SFDA group 1: 11 ImageNet CNNs × 11 targets, fine-tuned top-1 (%).

  One record per pair (`duplicates='error'`). Model metadata: `imagenet_acc`
  and `num_params` of the torchvision IMAGENET1K_V1 weights, `family`.
  """
  path = third_party_path('sfda', 'group1_finetune_acc.csv')
  records = [(row['model'], row['dataset'],
              _float(path, line, 'finetune_top1_acc', row['finetune_top1_acc']))
             for line, row in _read(path, ('dataset', 'model',
                                           'finetune_top1_acc'))]
  history = History.from_records(
      records, duplicates='error', name='sfda_group1',
      score_name='finetune_top1_percent', source=str(path))
  return _torchvision_zoo(history)


@functools.cache
def _model_spider_single(include_regression: bool = False) -> History:
  """Model Spider single-source: 10 torchvision CNNs × 8 classification sets.

  Scores: fine-tuned top-1 (%) from the LogME paper. dSprites and UTKFace are
  regression targets scored by negative MSE; they are left out by default
  (their scale is unrelated to accuracy) and the drop is logged;
  `include_regression=True` keeps them. One record per pair.
  """
  path = third_party_path('model_spider', 'single_source_finetune.csv')
  records, dropped = [], 0
  for line, row in _read(path, ('dataset', 'model', 'finetune_score',
                                'metric')):
    if row['metric'] != 'top1_acc_percent' and not include_regression:
      dropped += 1
      continue
    records.append((row['model'], row['dataset'],
                    _float(path, line, 'finetune_score',
                           row['finetune_score'])))
  _log_drops(path, {'regression targets (neg_mse; include_regression=False)':
                    dropped})
  history = History.from_records(
      records, duplicates='error', name='model_spider_single',
      score_name=('finetune_score' if include_regression
                  else 'finetune_top1_percent'), source=str(path))
  return _torchvision_zoo(history)


@functools.cache
def _model_spider_multi(paper_zoo: bool = False) -> History:
  """Model Spider multi-source: backbone × source fine-tunes × 7 targets.

  Models `FTD_<backbone>_<source>`: an ImageNet densenet201, inception_v3 or
  resnet50 first fine-tuned on one of 22 source datasets, then on the target.
  Beware the source == target leak: e.g. `FTD_resnet50_Pet` is evaluated on
  Pet, so "was trained on the target" trivially ranks those models first.
  `paper_zoo=True` keeps the paper's 42 models (sources Aircraft, DTD, SVHN,
  Pet, VLCS, STL10, CUB2011 and ImageNet left out), which removes the leak.
  Model metadata: `family` (backbone), `source_dataset`.
  """
  path = third_party_path('model_spider', 'multi_source_finetune.csv')
  records, meta, dropped = [], collections.defaultdict(dict), 0
  for line, row in _read(path, ('dataset', 'model', 'backbone',
                                'pretrain_dataset', 'finetune_acc')):
    if paper_zoo and row['pretrain_dataset'] in _MODEL_SPIDER_EXCLUDED_SOURCES:
      dropped += 1
      continue
    records.append((row['model'], row['dataset'],
                    _float(path, line, 'finetune_acc', row['finetune_acc'])))
    meta['family'][row['model']] = row['backbone']
    meta['source_dataset'][row['model']] = row['pretrain_dataset']
  _log_drops(path, {'models outside the paper\'s 42-model zoo': dropped})
  history = History.from_records(
      records, duplicates='error', name='model_spider_multi',
      score_name='finetune_top1_percent', source=str(path))
  return _with_metadata(history, meta,
                        {'num_classes': _num_classes(history.task_ids)})


def _model_spider_baselines(ground_truth: History) -> dict[str, History]:
  path = third_party_path('model_spider', 'baseline_scores.csv')
  records = collections.defaultdict(list)
  for line, row in _read(path, ('Dataset', 'Model', *_MODEL_SPIDER_METRICS)):
    for column, method in _MODEL_SPIDER_METRICS.items():
      records[method].append((row['Model'], row['Dataset'],
                              _float(path, line, column, row[column]),
                              f'line {line}'))
  return _estimator_histories(ground_truth, records, str(path), 'error')


def _parc(file: str, name: str) -> History:
  path = third_party_path('parc', file)
  records, meta = [], collections.defaultdict(dict)
  for line, row in _read(path, ('Architecture', 'Source Dataset',
                                'Target Dataset', 'Oracle')):
    model = f'{row["Architecture"]}/{row["Source Dataset"]}'
    records.append((model, row['Target Dataset'],
                    _float(path, line, 'Oracle', row['Oracle'])))
    meta['family'][model] = _family(row['Architecture'])
    meta['architecture'][model] = row['Architecture']
    meta['source_dataset'][model] = row['Source Dataset']
  history = History.from_records(
      records, duplicates='error', name=name, score_name='finetune_percent',
      source=str(path))
  return _with_metadata(history, meta,
                        {'num_classes': _num_classes(history.task_ids)})


@functools.cache
def _parc_all() -> History:
  """PARC, all 71 source models × 7 targets (oracle fine-tune accuracy, %).

  PARC never fine-tunes a model on its own source dataset, so each target
  has 67 observed models (the 4 whose source is the target are missing).
  Model ids are `<architecture>/<source dataset>`; sources include
  classification datasets, detectron2 detection/segmentation checkpoints and
  self-supervised models. Model metadata: `family`, `architecture`,
  `source_dataset`. One record per pair.
  """
  return _parc('oracles_all.csv', 'parc_all')


@functools.cache
def _parc_controlled() -> History:
  """PARC controlled: 4 architectures × 8 sources × 7 targets (28 per target).

  As `parc_all`: source == target pairs are absent from the table.
  """
  return _parc('oracles_controlled.csv', 'parc_controlled')


# -- registry -----------------------------------------------------------------


def _load_offline(**options: Any) -> History:
  return offline_loader.load(**options)


_LOADERS: dict[str, Callable[..., History]] = {
    'transfergraph_image': _transfergraph_image,
    'transfergraph_text': _transfergraph_text,
    'sfda_group1': _sfda_group1,
    'model_spider_single': _model_spider_single,
    'model_spider_multi': _model_spider_multi,
    'parc_all': _parc_all,
    'parc_controlled': _parc_controlled,
    'offline': _load_offline,
}


def list_benchmarks() -> list[str]:
  """Names accepted by `load_benchmark`, sorted."""
  return sorted(_LOADERS)


def _check_name(name: str) -> None:
  if name not in _LOADERS:
    raise ValueError(f'Unknown benchmark {name!r}; valid names: '
                     f'{", ".join(list_benchmarks())}')


def load_benchmark(name: str, **options: Any) -> History:
  """The ground-truth History of a bundled benchmark.

  Args:
    name: one of `list_benchmarks()`.
    **options: loader options: `model_spider_single` takes
      `include_regression`, `model_spider_multi` takes `paper_zoo`, `offline`
      passes them to `fennec_jax.benchmarks.offline.load`.

  Returns:
    The History (cached; Histories are immutable).

  Raises:
    ValueError: unknown name (the message lists the valid names) or bad
      data (naming file, line and column).
  """
  _check_name(name)
  return _LOADERS[name](**options)


def load_baseline_scores(name: str, **options: Any) -> dict[str, History]:
  """Raw estimator scores a benchmark ships, by lower-case method name.

  Each History has the ground truth's model ids (same order; NaN where the
  estimator has no score) and the subset of its tasks that have scores.
  TransferGraph ships `logme` and `reg_h_score` (8 image / 8 text targets;
  truncated lines dropped and repeated runs averaged, both logged); Model
  Spider single-source ships `h_score`, `leep`, `logme`, `nce`, `nleep`,
  `otce`, `pactran_dirichlet`, `gbc`, `lfc` (higher = better for all). Other
  benchmarks ship none (empty dict).

  Args:
    name: one of `list_benchmarks()`.
    **options: as for `load_benchmark`.

  Returns:
    method -> History.
  """
  _check_name(name)
  if name == 'offline':
    return {}  # Its estimators run on its images (the images protocol).
  if name == 'transfergraph_image':
    return _transfergraph_baselines('image_classification',
                                    load_benchmark(name, **options))
  if name == 'transfergraph_text':
    return _transfergraph_baselines('sequence_classification',
                                    load_benchmark(name, **options))
  if name == 'model_spider_single':
    return _model_spider_baselines(load_benchmark(name, **options))
  return {}
