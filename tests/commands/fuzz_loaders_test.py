"""Property-based fuzzing (hypothesis) of the loaders of user files.

The CSV readers (`recommender.read_scores_csv`, `History.read_csv`) and the
.npz reader of `fennec score` (`estimators.ranking.load_feature_files`)
either parse a file correctly or raise a ValueError that names the file;
any other exception (a TypeError, an IndexError, a zip error) is a bug.
Well-formed files, written here from generated tables in any dialect the
readers accept (BOM, ',', ';' or tab, CRLF, extra columns in any order), must
parse to exactly the generated values; damaged or arbitrary bytes must give
a valid parse or that error.
"""

import io
import os
import tempfile

from absl.testing import absltest
import hypothesis
from hypothesis import strategies as st
import numpy as np

from fennec_jax import history as history_lib
from fennec_jax import recommender
from fennec_jax.estimators import ranking

# Small and fast: a few seconds per property; no example database on disk.
_SETTINGS = hypothesis.settings(max_examples=50, deadline=None,
                                database=None, derandomize=True)

_IDS = st.text(alphabet='abcxyz019_-.', min_size=1, max_size=6)
_SCORES = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False,
                    allow_infinity=False)
# Characters and tokens that matter to a CSV reader.
_RISKY = st.sampled_from(list(',;\t\n\r"\' ab1.5e-x') + [
    'nan', 'inf', '-inf', '1e400', '\ufeff', '\xff', 'model', 'task',
    'score', 'model,task,score\n', ',,', '""'])


class _TempFiles(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.enterContext(tempfile.TemporaryDirectory())
    self.count = 0

  def write(self, data: bytes, suffix: str) -> str:
    self.count += 1
    path = os.path.join(self.dir, f'f{self.count}{suffix}')
    with open(path, 'wb') as f:
      f.write(data)
    return path


class CsvFuzzTest(_TempFiles):

  @_SETTINGS
  @hypothesis.given(
      table=st.dictionaries(st.tuples(_IDS, _IDS), _SCORES, min_size=1,
                            max_size=8),
      delimiter=st.sampled_from([',', ';', '\t']),
      bom=st.booleans(), crlf=st.booleans(),
      order=st.permutations(['model', 'task', 'score', 'note']))
  def test_well_formed_tables_parse_exactly(self, table, delimiter, bom,
                                            crlf, order):
    lines = [delimiter.join(order)]
    for (model, task), score in table.items():
      row = {'model': model, 'task': task, 'score': repr(score),
             'note': 'x'}
      lines.append(delimiter.join(row[c] for c in order))
    newline = '\r\n' if crlf else '\n'
    text = ('\ufeff' if bom else '') + newline.join(lines) + newline
    path = self.write(text.encode(), '.csv')
    expected: dict[str, dict[str, float]] = {}
    for (model, task), score in table.items():
      expected.setdefault(task, {})[model] = score
    self.assertEqual(recommender.read_scores_csv(path), expected)
    history = history_lib.History.read_csv(path)
    got = {(m, t): history.scores[history.model_index(m),
                                  history.task_index(t)]
           for m, t in zip(*[np.asarray(ids)[idx] for ids, idx in (
               (history.model_ids, np.nonzero(history.mask)[0]),
               (history.task_ids, np.nonzero(history.mask)[1]))])}
    self.assertEqual(got, table)

  @_SETTINGS
  @hypothesis.given(
      pieces=st.lists(_RISKY | st.text(max_size=3), max_size=40),
      raw=st.binary(max_size=64), use_raw=st.booleans())
  def test_any_bytes_give_a_table_or_an_error_naming_the_file(
      self, pieces, raw, use_raw):
    body = raw if use_raw else ''.join(pieces).encode(
        'utf-8', 'surrogatepass').replace(b'\xc3\xbf', b'\xff')
    path = self.write(b'model,task,score\n' + body, '.csv')
    for read in (recommender.read_scores_csv, history_lib.History.read_csv):
      try:
        out = read(path)
      except ValueError as e:
        self.assertIn(path, str(e), read)
        continue
      if isinstance(out, history_lib.History):
        scores = out.scores[out.mask]
        self.assertTrue(all(out.model_ids) and all(out.task_ids))
      else:
        scores = [v for t in out.values() for v in t.values()]
        self.assertTrue(all(m for t in out.values() for m in t))
      self.assertTrue(np.isfinite(scores).all())


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


@st.composite
def _feature_archives(draw):
  """{key: array} of a valid `fennec score` input, and its labels."""
  n = draw(st.integers(2, 6))
  labels = np.asarray(draw(st.lists(st.integers(0, 3), min_size=n,
                                    max_size=n)))
  # Other arrays (`fennec features` writes image names) are left alone.
  arrays = {'labels': labels, 'names': np.asarray(['a.png'] * n)}
  for model in draw(st.sets(_IDS.filter(lambda s: '/' not in s), min_size=1,
                            max_size=3)):
    width = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int32]))
    values = draw(st.lists(st.floats(-1e3, 1e3, width=32), min_size=n * width,
                           max_size=n * width))
    arrays[f'features/{model}'] = np.asarray(values).reshape(
        n, width).astype(dtype)
  return arrays


class NpzFuzzTest(_TempFiles):

  @_SETTINGS
  @hypothesis.given(arrays=_feature_archives())
  def test_well_formed_archives_load_exactly(self, arrays):
    path = self.write(_npz_bytes(arrays), '.npz')
    inputs, labels = ranking.load_feature_files([path])
    np.testing.assert_array_equal(labels, arrays['labels'])
    features = {k.split('/', 1)[1]: v for k, v in arrays.items()
                if k.startswith('features/')}
    self.assertEqual(sorted(inputs['features']), sorted(features))
    for model, value in features.items():
      self.assertEqual(inputs['features'][model].dtype, value.dtype)
      np.testing.assert_array_equal(inputs['features'][model], value)

  @_SETTINGS
  @hypothesis.given(
      arrays=_feature_archives(),
      damage=st.sampled_from(['truncate', 'flip', 'insert', 'random']),
      where=st.floats(0, 1), junk=st.binary(min_size=1, max_size=16))
  def test_damaged_archives_load_or_name_the_file(self, arrays, damage,
                                                  where, junk):
    data = bytearray(_npz_bytes(arrays))
    at = int(where * (len(data) - 1))
    if damage == 'truncate':
      data = data[:at]
    elif damage == 'flip':
      for i, byte in enumerate(junk):
        data[(at + i) % len(data)] ^= byte or 0xff
    elif damage == 'insert':
      data[at:at] = junk
    else:
      data = bytearray(junk)
    path = self.write(bytes(data), '.npz')
    try:
      inputs, labels = ranking.load_feature_files([path])
    except ValueError as e:
      self.assertIn(path, str(e))
      return
    # A parse: numeric arrays, samples first, as many as the labels.
    self.assertEqual(labels.ndim, 1)
    for kind, per_model in inputs.items():
      for array in per_model.values():
        self.assertTrue(np.issubdtype(array.dtype, np.number)
                        or array.dtype == np.bool_, kind)
        self.assertEqual(array.shape[0], labels.shape[0])


if __name__ == '__main__':
  absltest.main()
