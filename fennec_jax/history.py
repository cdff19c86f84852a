"""History: which model reached which score on which task, as a masked matrix.

The transfer space, the estimators' evaluation and every benchmark talk about
the same object: a sparse models × tasks table of fine-tuning results. `History`
holds it densely (`scores` [M, T] with NaN where unobserved, plus a boolean
`mask`) so JAX code can use static shapes, and carries optional per-model and
per-task metadata columns (parameter count, ImageNet accuracy, #classes, ...).

Long-format CSV (`read_csv` / `to_csv`): one row per (model, task) pair with
columns `model,task,score`; any further column named `model:<key>` is model
metadata and `task:<key>` is task metadata (repeated on every row of that
model/task; conflicting values are an error). Other columns are ignored and
counted in a log line. An empty score cell declares the pair (and so the model,
the task and their metadata) without an observation; `to_csv` writes such rows
for models or tasks that have no observation, so a round trip keeps them.

Duplicate (model, task) records: identical scores are kept once; differing
scores are resolved by the `duplicates` policy: `'error'` (default), `'mean'`,
`'max'` or `'first'` (first in input order). Every merge is counted in an
`absl.logging` line; nothing is dropped silently.

CSV dialect: a UTF-8 byte-order mark (Excel's "CSV UTF-8") is skipped, and a
header line with no comma but semicolons or tabs selects that delimiter
(`sniff_delimiter`).

Scores of a new task are checked against a history's own scores
(`check_new_scores`): their unit, fraction (all in [0, 1]) or percent (all in
[0, 100], 95% above 1), must match; each must lie in the plausible range
[min - 3 MAD, max + 3 MAD] of all the history's scores, MAD the median absolute
deviation scaled by 1.4826 (a normal sample's std). A typo such as 7296 for
72.96 falls far outside; a task harder or easier than every historical one by
less than three spreads stays inside.
"""

import collections
import csv
import dataclasses
import io
import math
import os
import types
from typing import Any, Iterable, Mapping, Sequence

from absl import logging
import numpy as np

DUPLICATE_POLICIES = ('error', 'mean', 'max', 'first')
DELIMITERS = {',': 'comma', ';': 'semicolon', '\t': 'tab'}
# Plausible range of a new score: the history's [min, max] widened by this
# many (normal-consistent) median absolute deviations.
OUTLIER_MADS = 3.0
_MAD_TO_STD = 1.4826
MODEL_PREFIX = 'model:'
TASK_PREFIX = 'task:'


def _frozen(array: np.ndarray) -> np.ndarray:
  array.setflags(write=False)
  return array


def metadata_column(values: Sequence[Any]) -> np.ndarray:
  """A float64 array when every value is numeric or missing, else object.

  Missing values (None, '', NaN) become NaN in a numeric column and None in
  an object column.
  """
  def missing(v):
    return v is None or (isinstance(v, str) and not v.strip()) or (
        isinstance(v, float) and math.isnan(v))

  floats = []
  for v in values:
    if missing(v):
      floats.append(math.nan)
      continue
    if isinstance(v, (bool, np.bool_)):
      break
    try:
      floats.append(float(v))
    except (TypeError, ValueError):
      break
  else:
    return np.asarray(floats, dtype=np.float64)
  return np.asarray([None if missing(v) else v for v in values], dtype=object)


def _check_metadata(kind: str, metadata: Mapping[str, Any],
                    size: int) -> Mapping[str, np.ndarray]:
  out = {}
  for key, column in metadata.items():
    if not isinstance(key, str) or not key:
      raise ValueError(f'{kind} metadata keys must be non-empty strings, got '
                       f'{key!r}.')
    array = np.asarray(column)
    if array.ndim != 1 or array.shape[0] != size:
      raise ValueError(
          f'{kind} metadata column {key!r} has shape {array.shape}; expected '
          f'({size},), one value per {kind}.')
    if array.dtype.kind in 'iub':
      array = array.astype(np.float64)
    elif array.dtype.kind in 'USO':
      array = array.astype(object)
    else:
      array = array.copy()
    out[key] = _frozen(array)
  return types.MappingProxyType(out)


def _check_ids(kind: str, ids: Sequence[str]) -> tuple[str, ...]:
  ids = tuple(ids)
  for i in ids:
    if not isinstance(i, str) or not i:
      raise ValueError(f'{kind} ids must be non-empty strings, got {i!r}.')
  counts = collections.Counter(ids)
  repeated = sorted(i for i, c in counts.items() if c > 1)
  if repeated:
    raise ValueError(f'{kind} ids are not unique: {repeated[:10]}')
  return ids


@dataclasses.dataclass(frozen=True, eq=False)
class History:
  """A models × tasks score matrix with an observation mask and metadata.

  Arrays are copied and made read-only on construction, and the metadata
  mappings are read-only views, so a History can be cached and shared.
  Entries of `scores` outside `mask` are set to NaN.

  Attributes:
    model_ids: [M] unique model ids.
    task_ids: [T] unique task ids.
    scores: float64 [M, T]; NaN where unobserved.
    mask: bool [M, T]; True where observed (those scores are finite).
    model_metadata: column -> array [M] (float64 with NaN, or object).
    task_metadata: column -> array [T].
    name: a label, e.g. the benchmark name.
    score_name: what the scores are, e.g. 'finetune_accuracy'.
  """
  model_ids: tuple[str, ...]
  task_ids: tuple[str, ...]
  scores: np.ndarray
  mask: np.ndarray
  model_metadata: Mapping[str, np.ndarray] = dataclasses.field(
      default_factory=dict)
  task_metadata: Mapping[str, np.ndarray] = dataclasses.field(
      default_factory=dict)
  name: str = ''
  score_name: str = 'score'

  def __post_init__(self):
    set_ = lambda k, v: object.__setattr__(self, k, v)
    set_('model_ids', _check_ids('model', self.model_ids))
    set_('task_ids', _check_ids('task', self.task_ids))
    m, t = len(self.model_ids), len(self.task_ids)
    scores = np.array(self.scores, dtype=np.float64)
    mask = np.array(self.mask)
    if mask.dtype != np.bool_:
      raise ValueError(f'mask must be boolean, got dtype {mask.dtype}.')
    if scores.shape != (m, t) or mask.shape != (m, t):
      raise ValueError(
          f'scores {scores.shape} and mask {mask.shape} must both have shape '
          f'(num_models, num_tasks) = {(m, t)}.')
    bad = mask & ~np.isfinite(scores)
    if bad.any():
      i, j = np.argwhere(bad)[0]
      raise ValueError(
          f'{int(bad.sum())} observed scores are not finite, e.g. model '
          f'{self.model_ids[i]!r}, task {self.task_ids[j]!r}: {scores[i, j]}.')
    scores[~mask] = np.nan
    set_('scores', _frozen(scores))
    set_('mask', _frozen(mask))
    set_('model_metadata',
         _check_metadata('model', self.model_metadata or {}, m))
    set_('task_metadata', _check_metadata('task', self.task_metadata or {}, t))
    set_('name', str(self.name))
    set_('score_name', str(self.score_name))

  # -- shape and lookup --------------------------------------------------------

  @property
  def num_models(self) -> int:
    return len(self.model_ids)

  @property
  def num_tasks(self) -> int:
    return len(self.task_ids)

  @property
  def num_observed(self) -> int:
    return int(self.mask.sum())

  @property
  def observed_fraction(self) -> float:
    """Fraction of the M × T pairs that are observed (0 for an empty matrix)."""
    size = self.mask.size
    return float(self.mask.sum() / size) if size else 0.0

  def model_index(self, model_id: str) -> int:
    """Row of `model_id`; raises `ValueError` for an unknown id."""
    return _index('model', self.model_ids, model_id)

  def task_index(self, task_id: str) -> int:
    """Column of `task_id`; raises `ValueError` for an unknown id."""
    return _index('task', self.task_ids, task_id)

  def task_scores(self, task_id: str) -> tuple[tuple[str, ...], np.ndarray]:
    """The models observed on `task_id` and their scores."""
    j = self.task_index(task_id)
    rows = np.flatnonzero(self.mask[:, j])
    return tuple(self.model_ids[i] for i in rows), self.scores[rows, j].copy()

  def __repr__(self) -> str:
    return (f'History(name={self.name!r}, score_name={self.score_name!r}, '
            f'models={self.num_models}, tasks={self.num_tasks}, '
            f'observed={self.num_observed}, '
            f'model_metadata={sorted(self.model_metadata)}, '
            f'task_metadata={sorted(self.task_metadata)})')

  # -- derived Histories -------------------------------------------------------

  def subset(self, models: Sequence[str] | np.ndarray | None = None,
             tasks: Sequence[str] | np.ndarray | None = None) -> 'History':
    """A History restricted (and reordered) to `models` and `tasks`.

    Args:
      models: model ids, integer rows or a boolean mask [M]; None keeps all.
      tasks: task ids, integer columns or a boolean mask [T]; None keeps all.

    Returns:
      A new History; metadata follows the selection.

    Raises:
      ValueError: an unknown id, an out-of-range index or a repeated selection.
    """
    rows = _selection('model', self.model_ids, models)
    cols = _selection('task', self.task_ids, tasks)
    return History(
        model_ids=tuple(self.model_ids[i] for i in rows),
        task_ids=tuple(self.task_ids[j] for j in cols),
        scores=self.scores[np.ix_(rows, cols)],
        mask=self.mask[np.ix_(rows, cols)],
        model_metadata={k: v[rows] for k, v in self.model_metadata.items()},
        task_metadata={k: v[cols] for k, v in self.task_metadata.items()},
        name=self.name, score_name=self.score_name)

  def replace(self, **changes: Any) -> 'History':
    """`dataclasses.replace` (validates again)."""
    return dataclasses.replace(self, **changes)

  def to_records(self) -> list[tuple[str, str, float]]:
    """Observed entries as `(model, task, score)`, model-major order."""
    return [(self.model_ids[i], self.task_ids[j], float(self.scores[i, j]))
            for i, j in np.argwhere(self.mask)]

  # -- construction ------------------------------------------------------------

  @classmethod
  def from_matrix(cls, scores: np.ndarray,
                  model_ids: Sequence[str] | None = None,
                  task_ids: Sequence[str] | None = None,
                  **kwargs: Any) -> 'History':
    """From a dense matrix whose NaN entries are unobserved.

    Args:
      scores: [M, T] scores, NaN where unobserved (±inf is an error).
      model_ids: defaults to 'm0', 'm1', ...
      task_ids: defaults to 't0', 't1', ...
      **kwargs: the remaining History fields (metadata, name, score_name).

    Returns:
      The History.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
      raise ValueError(f'scores must be 2-D [M, T], got shape {scores.shape}.')
    if model_ids is None:
      model_ids = [f'm{i}' for i in range(scores.shape[0])]
    if task_ids is None:
      task_ids = [f't{j}' for j in range(scores.shape[1])]
    return cls(tuple(model_ids), tuple(task_ids), scores, ~np.isnan(scores),
               **kwargs)

  @classmethod
  def from_records(
      cls,
      records: Iterable[tuple[str, str, float]],
      *,
      duplicates: str = 'error',
      model_metadata: Mapping[str, Mapping[str, Any]] | None = None,
      task_metadata: Mapping[str, Mapping[str, Any]] | None = None,
      name: str = '',
      score_name: str = 'score',
      source: str = '<records>',
  ) -> 'History':
    """From `(model, task, score)` records (ids ordered by first appearance).

    A score of None declares the pair without observing it. Any other score
    must be finite.

    Args:
      records: iterable of `(model_id, task_id, score)`.
      duplicates: how to resolve differing scores of the same pair: 'error',
        'mean', 'max' or 'first'. Identical duplicates are always kept once.
      model_metadata: column -> {model_id: value}; missing ids get NaN/None.
        Ids not in the records are an error.
      task_metadata: column -> {task_id: value}, as above.
      name: History name.
      score_name: what the scores are.
      source: how errors name the input (e.g. a file name).

    Returns:
      The History.

    Raises:
      ValueError: a bad policy, id or score, or conflicting duplicates under
        `duplicates='error'`.
    """
    located = []
    for n, record in enumerate(records):
      try:
        model, task, score = record
      except (TypeError, ValueError):
        raise ValueError(f'{source}: record {n} is {record!r}; expected '
                         '(model, task, score).') from None
      where = f'{source}: record {n}'
      if score is not None:
        try:
          score = float(score)
        except (TypeError, ValueError):
          raise ValueError(f'{where}: score {score!r} is not a number.'
                           ) from None
        if not math.isfinite(score):
          raise ValueError(f'{where}: score {score!r} is not finite.')
      located.append((model, task, score, where))
    return _build(located, duplicates=duplicates,
                  model_metadata=model_metadata or {},
                  task_metadata=task_metadata or {}, name=name,
                  score_name=score_name, source=source)

  @classmethod
  def read_csv(
      cls,
      path: str | os.PathLike[str],
      *,
      model_column: str = 'model',
      task_column: str = 'task',
      score_column: str = 'score',
      duplicates: str = 'error',
      name: str | None = None,
      score_name: str | None = None,
  ) -> 'History':
    """Reads a long-format CSV (see the module docstring for the format).

    Args:
      path: the CSV file.
      model_column: column holding model ids.
      task_column: column holding task ids.
      score_column: column holding scores.
      duplicates: policy for differing duplicate scores (see `from_records`).
      name: History name; defaults to the file's stem.
      score_name: defaults to `score_column`.

    Returns:
      The History.

    Raises:
      ValueError: naming the file, line and column of the first problem:
        a missing column, an empty id, a non-numeric or non-finite score,
        conflicting duplicates or metadata, or a table with no rows.
    """
    path = os.fspath(path)
    with open_csv(path) as f:
      reader = csv.reader(f, delimiter=sniff_delimiter(f))
      try:
        header = next(reader)
      except StopIteration:
        raise ValueError(f'{path}: the file is empty; expected a header '
                         f'with columns {model_column},{task_column},'
                         f'{score_column}.') from None
      header = [h.strip() for h in header]
      required = (model_column, task_column, score_column)
      missing = [c for c in required if c not in header]
      if missing:
        raise ValueError(f'{path}: line 1 (header) lacks column(s) {missing}; '
                         f'found {header}.')
      dup_cols = sorted({c for c in header if header.count(c) > 1})
      if dup_cols:
        raise ValueError(f'{path}: line 1 (header) repeats column(s) '
                         f'{dup_cols}.')
      col = {c: header.index(c) for c in header}
      model_keys = [c for c in header if c.startswith(MODEL_PREFIX)]
      task_keys = [c for c in header if c.startswith(TASK_PREFIX)]
      ignored = [c for c in header
                 if c not in required and c not in model_keys + task_keys]
      if ignored:
        logging.info('%s: ignoring %d column(s) that are neither %s nor '
                     '"model:*"/"task:*" metadata: %s', path, len(ignored),
                     required, ignored)
      located = []
      model_meta = {k[len(MODEL_PREFIX):]: {} for k in model_keys}
      task_meta = {k[len(TASK_PREFIX):]: {} for k in task_keys}
      meta_where = {}
      for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
          continue
        if len(row) != len(header):
          raise ValueError(f'{path}: line {line} has {len(row)} fields; the '
                           f'header has {len(header)}.')
        model = row[col[model_column]].strip()
        task = row[col[task_column]].strip()
        for column, value in ((model_column, model), (task_column, task)):
          if not value:
            raise ValueError(f'{path}: line {line}, column {column!r} is '
                             'empty.')
        raw = row[col[score_column]].strip()
        where = f'{path}: line {line}'
        if raw:
          try:
            score = float(raw)
          except ValueError:
            raise ValueError(f'{where}, column {score_column!r}: {raw!r} is '
                             'not a number.') from None
          if not math.isfinite(score):
            raise ValueError(f'{where}, column {score_column!r}: {raw!r} is '
                             'not finite.')
        else:
          score = None
        located.append((model, task, score, where))
        for keys, prefix, meta, owner in (
            (model_keys, MODEL_PREFIX, model_meta, model),
            (task_keys, TASK_PREFIX, task_meta, task)):
          for key in keys:
            value = row[col[key]].strip()
            if not value:
              continue
            column = meta[key[len(prefix):]]
            if owner in column and column[owner] != value:
              raise ValueError(
                  f'{where}, column {key!r}: {value!r} conflicts with '
                  f'{column[owner]!r} given for {owner!r} at '
                  f'{meta_where[key, owner]}.')
            column[owner] = value
            meta_where[key, owner] = f'line {line}'
    if not located:
      raise ValueError(f'{path}: the table has a header but no rows.')
    if name is None:
      name = os.path.splitext(os.path.basename(path))[0]
    return _build(located, duplicates=duplicates, model_metadata=model_meta,
                  task_metadata=task_meta, name=name,
                  score_name=score_column if score_name is None else score_name,
                  source=path)

  def to_csv(self, path: str | os.PathLike[str]) -> None:
    """Writes the long format that `read_csv` reads (metadata included).

    Observed pairs come in model-major order; a model or task without any
    observation gets one row with an empty score so it is kept.
    """
    model_keys = sorted(self.model_metadata)
    task_keys = sorted(self.task_metadata)
    header = (['model', 'task', 'score'] +
              [MODEL_PREFIX + k for k in model_keys] +
              [TASK_PREFIX + k for k in task_keys])

    def cell(value):
      if value is None or (isinstance(value, float) and math.isnan(value)):
        return ''
      if isinstance(value, (float, np.floating)):
        return repr(float(value))
      return str(value)

    rows = [(i, j, self.scores[i, j]) for i, j in np.argwhere(self.mask)]
    if self.num_tasks:
      for i in np.flatnonzero(~self.mask.any(axis=1)):
        rows.append((i, 0, None))
    if self.num_models:
      for j in np.flatnonzero(~self.mask.any(axis=0)):
        rows.append((0, j, None))
    with open(os.fspath(path), 'w', newline='', encoding='utf-8') as f:
      writer = csv.writer(f)
      writer.writerow(header)
      for i, j, score in rows:
        writer.writerow(
            [self.model_ids[i], self.task_ids[j], cell(score)] +
            [cell(self.model_metadata[k][i]) for k in model_keys] +
            [cell(self.task_metadata[k][j]) for k in task_keys])


def open_csv(path: str | os.PathLike[str]) -> io.StringIO:
  """A CSV file's decoded text as a file object (a UTF-8 BOM skipped).

  Raises:
    FileNotFoundError: no such file.
    ValueError: naming the file, if it is not UTF-8 text.
  """
  with open(path, 'rb') as f:
    data = f.read()
  try:
    text = data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    raise ValueError(f'{os.fspath(path)}: not UTF-8 text (byte {e.start}: '
                     f'{e.reason}); save it as "CSV UTF-8".') from None
  return io.StringIO(text, newline='')


def sniff_delimiter(f: Any) -> str:
  """The delimiter of a text file object positioned at its header line.

  A comma if the header has one; else a semicolon or a tab if it has one
  (European spreadsheets, TSV); else a comma (a one-column file). The file is
  rewound to where it was.
  """
  start = f.tell()
  header = f.readline()
  f.seek(start)
  for delimiter in DELIMITERS:
    if delimiter in header:
      return delimiter
  return ','


def score_unit(scores: np.ndarray) -> str | None:
  """'fraction', 'percent' or None (neither) for a history's scores.

  Fraction: every score in [0, 1]. Percent: every score in [0, 100] and at
  least 95% of them above 1 (so a percent table is not taken for fractions
  because of a few scores below 1%).
  """
  scores = np.asarray(scores, float)
  scores = scores[np.isfinite(scores)]
  if not scores.size or scores.min() < 0:
    return None
  if scores.max() <= 1:
    return 'fraction'
  if scores.max() <= 100 and np.mean(scores > 1) >= 0.95:
    return 'percent'
  return None


def plausible_range(scores: np.ndarray) -> tuple[float, float]:
  """[min - k MAD, max + k MAD] of the finite scores, k = `OUTLIER_MADS`."""
  scores = np.asarray(scores, float)
  scores = scores[np.isfinite(scores)]
  mad = _MAD_TO_STD * np.median(np.abs(scores - np.median(scores)))
  return (float(scores.min() - OUTLIER_MADS * mad),
          float(scores.max() + OUTLIER_MADS * mad))


def check_new_scores(scores: Sequence[tuple[float, str]],
                     reference: np.ndarray, *, convert_units: bool = False,
                     allow_outliers: bool = False) -> float:
  """Checks new scores against a history's unit and plausible range.

  Args:
    scores: `(score, where)` pairs, `where` naming the file and line.
    reference: the history's observed scores (any shape; NaN ignored).
    convert_units: convert fraction <-> percent scores to the history's unit
      instead of refusing them.
    allow_outliers: keep scores outside `plausible_range(reference)`.

  Returns:
    The factor to multiply the scores by: 1, or 100 / 0.01 when converted.

  Raises:
    ValueError: the scores are in the other unit (without `convert_units`),
      naming both units and the conversion; or a score outside the
      plausible range (without `allow_outliers`), naming where it is.
  """
  if not scores:
    return 1.0
  values = np.array([s for s, _ in scores], float)
  unit, factor = score_unit(reference), 1.0
  if unit == 'percent' and values.min() >= 0 and values.max() <= 1:
    factor = 100.0
  elif (unit == 'fraction' and values.min() >= 0 and values.max() <= 100
        and values.max() > 1):
    factor = 0.01
  if factor != 1.0 and not convert_units:
    theirs = 'fractions (0-1)' if factor == 100 else 'percentages (0-100)'
    raise ValueError(
        f'{scores[0][1].split(": line")[0]}: the scores look like {theirs} '
        f'but the history uses {unit} scores; multiply them by {factor:g} '
        'or pass --convert_units.')
  low, high = plausible_range(reference)
  for value, where in scores:
    if not allow_outliers and not low <= value * factor <= high:
      raise ValueError(
          f'{where}: score {value:g} is outside the plausible range '
          f'[{low:.4g}, {high:.4g}] of the history ({unit or "its"} scores '
          f'+- {OUTLIER_MADS:g} MAD); fix it or pass --allow_outliers.')
  return factor


def _index(kind: str, ids: tuple[str, ...], key: str) -> int:
  try:
    return ids.index(key)
  except ValueError:
    shown = ', '.join(ids[:20]) + (', ...' if len(ids) > 20 else '')
    raise ValueError(f'Unknown {kind} id {key!r}; {len(ids)} valid ids: '
                     f'{shown}') from None


def _selection(kind: str, ids: tuple[str, ...], sel: Any) -> np.ndarray:
  if sel is None:
    return np.arange(len(ids))
  if isinstance(sel, str):
    raise ValueError(f'{kind} selection must be a sequence of ids, got the '
                     f'string {sel!r}.')
  array = np.asarray(sel)
  if array.dtype == np.bool_:
    if array.shape != (len(ids),):
      raise ValueError(f'boolean {kind} selection has shape {array.shape}; '
                       f'expected ({len(ids)},).')
    return np.flatnonzero(array)
  if array.size and array.dtype.kind in 'iu':
    if array.min() < 0 or array.max() >= len(ids):
      raise ValueError(f'{kind} index out of range [0, {len(ids)}): '
                       f'{array.tolist()}')
    index = array.astype(np.int64)
  else:
    lookup = {k: n for n, k in enumerate(ids)}
    index = []
    for key in sel:
      if key not in lookup:
        _index(kind, ids, key)
      index.append(lookup[key])
    index = np.asarray(index, dtype=np.int64)
  if len(set(index.tolist())) != len(index):
    raise ValueError(f'{kind} selection repeats an entry.')
  return index


def _build(located, *, duplicates, model_metadata, task_metadata, name,
           score_name, source) -> History:
  """Shared by `from_records` and `read_csv`: located = (m, t, score, where)."""
  if duplicates not in DUPLICATE_POLICIES:
    raise ValueError(f'duplicates={duplicates!r}; valid: {DUPLICATE_POLICIES}.')
  if not located:
    raise ValueError(f'{source}: no records; the table is empty.')
  models, tasks = {}, {}
  observed = collections.defaultdict(list)   # (i, j) -> [(score, where)]
  for model, task, score, where in located:
    for kind, value in (('model', model), ('task', task)):
      if not isinstance(value, str) or not value:
        raise ValueError(f'{where}: {kind} id {value!r} must be a non-empty '
                         'string.')
    i = models.setdefault(model, len(models))
    j = tasks.setdefault(task, len(tasks))
    if score is not None:
      observed[i, j].append((score, where))
  scores = np.full((len(models), len(tasks)), np.nan)
  identical = merged = 0
  for (i, j), entries in observed.items():
    values = [s for s, _ in entries]
    if len(values) > 1 and len(set(values)) == 1:
      identical += len(values) - 1
      values = values[:1]
    if len(values) > 1:
      if duplicates == 'error':
        shown = '; '.join(f'{w}: {s!r}' for s, w in entries)
        raise ValueError(
            f'{source}: conflicting scores for model '
            f'{list(models)[i]!r} on task {list(tasks)[j]!r}: {shown}. Pass '
            "duplicates='mean'|'max'|'first' (the commands' --duplicates "
            'flag) to resolve them.')
      merged += len(values) - 1
      values = {'mean': [float(np.mean(values))], 'max': [max(values)],
                'first': values[:1]}[duplicates]
    scores[i, j] = values[0]
  if identical:
    logging.info('%s: dropped %d identical duplicate record(s).', source,
                 identical)
  if merged:
    logging.info("%s: merged %d differing duplicate record(s) with "
                 "duplicates=%r.", source, merged, duplicates)
  declared = sum(s is None for _, _, s, _ in located)
  if declared:
    logging.info('%s: %d pair(s) listed without a score are kept as '
                 'unobserved.', source, declared)

  def meta(kind, columns, ids):
    out = {}
    for key, values in columns.items():
      unknown = sorted(set(values) - set(ids))
      if unknown:
        raise ValueError(f'{source}: {kind} metadata {key!r} names ids not in '
                         f'the records: {unknown[:10]}')
      out[key] = metadata_column([values.get(i) for i in ids])
    return out

  return History(
      model_ids=tuple(models), task_ids=tuple(tasks), scores=scores,
      mask=~np.isnan(scores),
      model_metadata=meta('model', model_metadata, list(models)),
      task_metadata=meta('task', task_metadata, list(tasks)),
      name=name, score_name=score_name)
