"""Where the full benchmark's tasks and candidate checkpoints come from.

Two bundled tables (`third_party/full_benchmark/`, provenance in its README)
map every row of the public benchmarks to something a run can read:

* `tasks.csv`: each (benchmark, task) to a catalogue task `key` with its tfds
  name, version, split, image and label features (`status='tfds'`), or to an
  image folder the user supplies (`status='image_folder'`, the note says
  why), or `excluded` (e.g. regression targets the loader leaves out).
* `checkpoints.csv`: each (benchmark, model) to a registry architecture, the
  converter that reads its file (`format`), the file name under the run's
  checkpoint directory and where to download it; or `unmapped` with the
  reason.

Several benchmarks share tasks (sfda `pets` and Model Spider `Pet` are both
`oxford_iiit_pet`) and checkpoints (torchvision's ResNet-50), so features are
stored under the catalogue key and the checkpoint file, once.
"""

import csv
import dataclasses
import os

from fennec_jax.benchmarks import public

TASKS_CSV = ('full_benchmark', 'tasks.csv')
CHECKPOINTS_CSV = ('full_benchmark', 'checkpoints.csv')
TASK_STATUSES = ('tfds', 'image_folder', 'excluded')
CHECKPOINT_STATUSES = ('torchvision', 'timm', 'hf', 'unmapped')
# Converter names (`checkpoints.CONVERTERS`) a mapped row may use.
FORMATS = ('torchvision', 'timm', 'hf_vit')
# Benchmarks the catalogue covers, and why the other bundled ones are not.
BENCHMARKS = ('sfda_group1', 'model_spider_single', 'model_spider_multi',
              'parc_controlled', 'parc_all', 'transfergraph_image')
NOT_COVERED = {
    'transfergraph_text': 'text classification: no images to embed',
    'offline': 'ships its own probes and zoo (the images protocol)',
}


@dataclasses.dataclass(frozen=True)
class Task:
  """One benchmark task and where its images come from.

  Attributes:
    benchmark: the bundled benchmark's name.
    task: its task id in that benchmark.
    key: the catalogue key shared by benchmarks ('' if excluded).
    status: one of `TASK_STATUSES`.
    tfds_name: tfds name (with config, e.g. 'voc/2007'), or ''.
    tfds_version: the version the catalogue was written for.
    split: the split the probe is drawn from.
    image_key: the image feature.
    label_key: the label feature (a sequence feature takes its first label).
    note: why it is not in tfds, or a caveat.
  """
  benchmark: str
  task: str
  key: str
  status: str
  tfds_name: str
  tfds_version: str
  split: str
  image_key: str
  label_key: str
  note: str


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """One candidate model of a benchmark and the file that holds it.

  Attributes:
    benchmark: the bundled benchmark's name.
    model: its model id there.
    status: one of `CHECKPOINT_STATUSES` ('unmapped': see note).
    arch: the registry architecture (`fennec_jax.models`).
    format: the converter (`FORMATS`), '' if unmapped.
    file: the path under the run's checkpoint directory.
    url: where a user downloads it once.
    note: provenance or the reason it is unmapped.
  """
  benchmark: str
  model: str
  status: str
  arch: str
  format: str
  file: str
  url: str
  note: str

  @property
  def mapped(self) -> bool:
    return self.status != 'unmapped'


def _read(parts: tuple[str, ...], fields: tuple[str, ...]) -> list[dict]:
  path = public.third_party_path(*parts)
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    if tuple(reader.fieldnames or ()) != fields:
      raise ValueError(f'{path}: columns {reader.fieldnames}; expected '
                       f'{list(fields)}.')
    return [dict(r, _line=i + 2) for i, r in enumerate(reader)]


def _fields(cls) -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(cls))


def load_tasks() -> list[Task]:
  """Every row of `tasks.csv`, validated.

  Raises:
    ValueError: a bad status, a tfds row without name/split/label, or a
      duplicated (benchmark, task); the message names the file and line.
  """
  out, seen = [], set()
  path = os.path.join(*TASKS_CSV)
  for row in _read(TASKS_CSV, _fields(Task)):
    line = row.pop('_line')
    task = Task(**row)
    where = f'third_party/{path} line {line} ({task.benchmark}/{task.task})'
    if task.status not in TASK_STATUSES:
      raise ValueError(f'{where}: status {task.status!r}; valid: '
                       f'{TASK_STATUSES}.')
    if task.status == 'tfds' and not (task.tfds_name and task.split
                                      and task.image_key and task.label_key):
      raise ValueError(f'{where}: a tfds task needs tfds_name, split, '
                       'image_key and label_key.')
    if task.status != 'excluded' and not task.key:
      raise ValueError(f'{where}: needs a catalogue key.')
    if task.status != 'tfds' and not task.note:
      raise ValueError(f'{where}: status {task.status!r} needs a note '
                       'saying why and how to supply it.')
    if (task.benchmark, task.task) in seen:
      raise ValueError(f'{where}: duplicated row.')
    seen.add((task.benchmark, task.task))
    out.append(task)
  return out


def load_checkpoints() -> list[Checkpoint]:
  """Every row of `checkpoints.csv`, validated.

  Raises:
    ValueError: a bad status or format, a mapped row without architecture or
      file, or a duplicated (benchmark, model), naming the file and line.
  """
  out, seen = [], set()
  path = os.path.join(*CHECKPOINTS_CSV)
  for row in _read(CHECKPOINTS_CSV, _fields(Checkpoint)):
    line = row.pop('_line')
    ckpt = Checkpoint(**row)
    where = f'third_party/{path} line {line} ({ckpt.benchmark}/{ckpt.model})'
    if ckpt.status not in CHECKPOINT_STATUSES:
      raise ValueError(f'{where}: status {ckpt.status!r}; valid: '
                       f'{CHECKPOINT_STATUSES}.')
    if ckpt.mapped and (ckpt.format not in FORMATS or not ckpt.arch
                        or not ckpt.file):
      raise ValueError(f'{where}: a mapped checkpoint needs arch, file and '
                       f'a format in {FORMATS}, got format {ckpt.format!r}.')
    if not ckpt.mapped and not ckpt.note:
      raise ValueError(f'{where}: an unmapped checkpoint needs a reason.')
    if (ckpt.benchmark, ckpt.model) in seen:
      raise ValueError(f'{where}: duplicated row.')
    seen.add((ckpt.benchmark, ckpt.model))
    out.append(ckpt)
  return out


def _check_benchmark(benchmark: str) -> None:
  if benchmark not in BENCHMARKS:
    why = NOT_COVERED.get(benchmark)
    raise ValueError(
        f'benchmark {benchmark!r} is not in the full-benchmark catalogue'
        + (f' ({why})' if why else '') + f'; valid: {BENCHMARKS}.')


def tasks_of(benchmark: str) -> dict[str, Task]:
  """`{task id: Task}` of one benchmark (every row, mapped or not)."""
  _check_benchmark(benchmark)
  return {t.task: t for t in load_tasks() if t.benchmark == benchmark}


def checkpoints_of(benchmark: str) -> dict[str, Checkpoint]:
  """`{model id: Checkpoint}` of one benchmark (every row)."""
  _check_benchmark(benchmark)
  return {c.model: c for c in load_checkpoints() if c.benchmark == benchmark}


def coverage(benchmark: str) -> dict[str, list[tuple[str, str]]]:
  """How the catalogue covers a bundled table, row by row.

  Every task and model of `load_benchmark(benchmark)` must have a catalogue
  row (the missing ones are listed, never dropped silently).

  Returns:
    `{'tasks_mapped', 'tasks_unmapped', 'models_mapped', 'models_unmapped',
    'tasks_missing', 'models_missing'}`, each a list of `(id, note)`.
  """
  history = public.load_benchmark(benchmark)
  tasks, ckpts = tasks_of(benchmark), checkpoints_of(benchmark)
  out = {k: [] for k in ('tasks_mapped', 'tasks_unmapped', 'models_mapped',
                         'models_unmapped', 'tasks_missing',
                         'models_missing')}
  for t in history.task_ids:
    row = tasks.get(t)
    if row is None:
      out['tasks_missing'].append((t, 'no catalogue row'))
    elif row.status == 'tfds':
      out['tasks_mapped'].append((t, row.tfds_name))
    else:
      out['tasks_unmapped'].append((t, row.note))
  for m in history.model_ids:
    row = ckpts.get(m)
    if row is None:
      out['models_missing'].append((m, 'no catalogue row'))
    elif row.mapped:
      out['models_mapped'].append((m, row.file))
    else:
      out['models_unmapped'].append((m, row.note))
  return out
