"""History: validation, duplicates, CSV I/O and dialects, new-score checks."""

import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from fennec_jax import history as history_lib

History = history_lib.History


def _write(tmp, text, name='h.csv'):
  path = os.path.join(tmp, name)
  with open(path, 'w') as f:
    f.write(text)
  return path


class ConstructionTest(absltest.TestCase):

  def test_validates_and_freezes(self):
    scores = np.array([[0.5, 7.0], [np.nan, 0.25]])
    mask = np.array([[True, False], [False, True]])
    h = History(('a', 'b'), ('x', 'y'), scores, mask,
                model_metadata={'params': [1, 2]})
    self.assertEqual((h.num_models, h.num_tasks, h.num_observed), (2, 2, 2))
    self.assertEqual(h.observed_fraction, 0.5)
    # Values outside the mask become NaN; the caller's array is untouched.
    self.assertTrue(np.isnan(h.scores[0, 1]))
    self.assertEqual(scores[0, 1], 7.0)
    self.assertEqual(h.model_metadata['params'].dtype, np.float64)
    with self.assertRaises(ValueError):
      h.scores[0, 0] = 1.0   # read-only
    with self.assertRaises(TypeError):
      h.model_metadata['new'] = np.zeros(2)   # read-only mapping

  def test_errors(self):
    ok = dict(model_ids=('a', 'b'), task_ids=('x',),
              scores=np.ones((2, 1)), mask=np.ones((2, 1), bool))
    cases = {
        'not unique': dict(model_ids=('a', 'a')),
        'shape': dict(scores=np.ones((1, 2))),
        'not finite': dict(scores=np.array([[1.0], [np.inf]])),
        'boolean': dict(mask=np.ones((2, 1))),
        'non-empty': dict(task_ids=('',)),
        r"expected \(2,\)": dict(model_metadata={'p': [1, 2, 3]}),
    }
    for message, change in cases.items():
      with self.subTest(message), self.assertRaisesRegex(ValueError, message):
        History(**{**ok, **change})

  def test_subset_reorders_and_carries_metadata(self):
    h = History.from_matrix(np.arange(12.).reshape(3, 4),
                            model_metadata={'family': ['r', 'v', 'c']},
                            task_metadata={'n': [1, 2, 3, 4]})
    s = h.subset(models=['m2', 'm0'], tasks=np.array([0, 1, 0, 1], bool))
    self.assertEqual(s.model_ids, ('m2', 'm0'))
    self.assertEqual(s.task_ids, ('t1', 't3'))
    np.testing.assert_array_equal(s.scores, [[9., 11.], [1., 3.]])
    self.assertEqual(list(s.model_metadata['family']), ['c', 'r'])
    np.testing.assert_array_equal(s.task_metadata['n'], [2, 4])
    with self.assertRaisesRegex(ValueError, "Unknown model id 'zz'"):
      h.subset(models=['zz'])
    with self.assertRaisesRegex(ValueError, 'repeats'):
      h.subset(tasks=['t1', 't1'])
    with self.assertRaisesRegex(ValueError, "Unknown task id 'q'"):
      h.task_index('q')


class RecordsTest(parameterized.TestCase):

  def test_identical_duplicates_kept_once_and_logged(self):
    with self.assertLogs('absl', 'INFO') as logs:
      h = History.from_records([('a', 'x', 1.0), ('a', 'x', 1.0),
                                ('b', 'x', 2.0)])
    self.assertEqual(h.num_observed, 2)
    self.assertIn('dropped 1 identical duplicate', '\n'.join(logs.output))

  def test_conflicting_duplicates_error_names_both(self):
    with self.assertRaisesRegex(ValueError,
                                r"'a' on task 'x'.*record 0.*record 2"):
      History.from_records([('a', 'x', 1.0), ('b', 'x', 2.0),
                            ('a', 'x', 3.0)], source='src')

  @parameterized.parameters(('mean', 2.0), ('max', 3.0), ('first', 3.0))
  def test_policies(self, policy, expected):
    records = [('a', 'x', 3.0), ('b', 'x', 5.0), ('a', 'x', 1.0),
               ('a', 'x', 2.0)]
    with self.assertLogs('absl', 'INFO') as logs:
      h = History.from_records(records, duplicates=policy)
    self.assertEqual(h.scores[h.model_index('a'), 0], expected)
    self.assertEqual(h.scores[h.model_index('b'), 0], 5.0)
    self.assertIn('merged 2 differing', '\n'.join(logs.output))

  def test_bad_policy_and_scores(self):
    with self.assertRaisesRegex(ValueError, 'valid'):
      History.from_records([('a', 'x', 1.0)], duplicates='last')
    with self.assertRaisesRegex(ValueError, 'record 1: score nan'):
      History.from_records([('a', 'x', 1.0), ('b', 'x', float('nan'))])
    with self.assertRaisesRegex(ValueError, 'empty'):
      History.from_records([])

  def test_records_match_dense_matrix(self):
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(5, 4))
    dense[rng.random((5, 4)) < 0.4] = np.nan
    dense[:, 0] = 1.0   # every model observed at least once
    h = History.from_matrix(dense)
    back = History.from_records(h.to_records())
    rebuilt = np.full_like(dense, np.nan)
    for i, m in enumerate(back.model_ids):
      for j, t in enumerate(back.task_ids):
        rebuilt[h.model_index(m), h.task_index(t)] = back.scores[i, j]
    np.testing.assert_array_equal(rebuilt, dense)


class CsvTest(absltest.TestCase):

  def test_round_trip_with_metadata_and_unobserved_ids(self):
    scores = np.array([[0.9, np.nan, 0.1], [np.nan, np.nan, np.nan],
                       [0.4, np.nan, 0.6]])
    h = History.from_matrix(
        scores, ['org/m-1', 'm,2', 'm3'], ['cifar', 'empty task', 'dtd'],
        model_metadata={'params': [1e6, np.nan, 3.5],
                        'family': np.array(['vit', None, 'resnet'], object)},
        task_metadata={'classes': [10, 20, 47]}, score_name='acc')
    tmp = self.enterContext(tempfile.TemporaryDirectory())
    path = os.path.join(tmp, 'h.csv')
    h.to_csv(path)
    back = History.read_csv(path, score_name='acc')
    back = back.subset(models=h.model_ids, tasks=h.task_ids)
    np.testing.assert_array_equal(back.mask, h.mask)
    np.testing.assert_array_equal(back.scores[h.mask], h.scores[h.mask])
    np.testing.assert_array_equal(back.model_metadata['params'],
                                  h.model_metadata['params'])
    self.assertEqual(list(back.model_metadata['family']),
                     ['vit', None, 'resnet'])
    np.testing.assert_array_equal(back.task_metadata['classes'], [10, 20, 47])
    self.assertEqual(back.name, 'h')

  def test_reads_extra_columns_and_logs_them(self):
    tmp = self.enterContext(tempfile.TemporaryDirectory())
    path = _write(tmp, 'model,task,score,notes,model:kind\n'
                       'a,x,0.5,hi,cnn\nb,x,0.25,,vit\na,y,1e-1,,cnn\n')
    with self.assertLogs('absl', 'INFO') as logs:
      h = History.read_csv(path)
    self.assertIn("['notes']", '\n'.join(logs.output))
    self.assertEqual(h.model_ids, ('a', 'b'))
    self.assertEqual(h.task_ids, ('x', 'y'))
    np.testing.assert_array_equal(h.scores, [[0.5, 0.1], [0.25, np.nan]])
    self.assertEqual(list(h.model_metadata['kind']), ['cnn', 'vit'])

  def test_logs_pairs_listed_without_a_score(self):
    tmp = self.enterContext(tempfile.TemporaryDirectory())
    path = _write(tmp, 'model,task,score\na,x,0.5\nb,x,\na,y,\n')
    with self.assertLogs('absl', 'INFO') as logs:
      h = History.read_csv(path)
    self.assertIn('2 pair(s) listed without a score are kept as unobserved.',
                  '\n'.join(logs.output))
    np.testing.assert_array_equal(h.mask, [[True, False], [False, False]])

  def test_errors_name_file_line_and_column(self):
    tmp = self.enterContext(tempfile.TemporaryDirectory())
    cases = {
        'model,task\na,x\n': r"h.csv: line 1 \(header\) lacks column\(s\) "
                             r"\['score'\]",
        'model,task,score\na,x,0.5\nb,x,abc\n': r"h.csv: line 3, column "
                                                 r"'score': 'abc' is not a "
                                                 'number',
        'model,task,score\na,x,inf\n': "line 2, column 'score': 'inf' is not "
                                       'finite',
        'model,task,score\na,x,NaN\n': "line 2, column 'score': 'NaN' is not "
                                       'finite',
        'model,task,score\na,x,0.5\nb,x,1\na,x,0.7\n':
            r"'a' on task 'x'.*line 2: 0.5.*line 4: 0.7",
        'model,task,score\n': 'header but no rows',
        '': 'the file is empty',
        'model,task,score\n,x,1\n': "line 2, column 'model' is empty",
        'model,task,score,model:p\na,x,1,3\na,y,1,4\n':
            "line 3, column 'model:p': '4' conflicts with '3'.*line 2",
        'model,task,score\na,x,1,2\n': 'line 2 has 4 fields',
    }
    for text, message in cases.items():
      with self.subTest(message):
        path = _write(tmp, text)
        with self.assertRaisesRegex(ValueError, message):
          History.read_csv(path)

  def test_duplicates_policy_from_csv(self):
    path = _write(self.enterContext(tempfile.TemporaryDirectory()),
                  'm,t,acc\na,x,0.5\na,x,0.7\nb,x,1\n')
    h = History.read_csv(path, model_column='m', task_column='t',
                         score_column='acc', duplicates='mean')
    self.assertAlmostEqual(h.scores[0, 0], 0.6)
    self.assertEqual(h.score_name, 'acc')

  def test_bom_semicolon_and_tab_files(self):
    tmp = self.enterContext(tempfile.TemporaryDirectory())
    expected = History.read_csv(_write(tmp, 'model,task,score\na,x,0.5\n'
                                       'b,x,1\n'))
    for text in ('\ufeffmodel,task,score\na,x,0.5\nb,x,1\n',
                 '\ufeffmodel;task;score\na;x;0.5\nb;x;1\n',
                 'model\ttask\tscore\na\tx\t0.5\nb\tx\t1\n'):
      with self.subTest(repr(text[:8])):
        h = History.read_csv(_write(tmp, text))
        self.assertEqual((h.model_ids, h.task_ids),
                         (expected.model_ids, expected.task_ids))
        np.testing.assert_array_equal(h.scores, expected.scores)

  def test_one_column_file_names_what_it_found(self):
    path = _write(self.enterContext(tempfile.TemporaryDirectory()),
                  'model|task|score\na|x|1\n')
    with self.assertRaisesRegex(ValueError, r"lacks column.*found "
                                r"\['model\|task\|score'\]"):
      History.read_csv(path)

  def test_duplicate_error_names_the_flag(self):
    path = _write(self.enterContext(tempfile.TemporaryDirectory()),
                  'model,task,score\na,x,0.5\na,x,0.7\n')
    with self.assertRaisesRegex(ValueError, '--duplicates'):
      History.read_csv(path)


class NewScoresTest(absltest.TestCase):
  """`score_unit`, `plausible_range` and `check_new_scores`."""

  def test_units(self):
    self.assertEqual(history_lib.score_unit(np.array([0.2, 1.0, np.nan])),
                     'fraction')
    percent = np.concatenate([np.linspace(20, 99, 40), [0.5]])
    self.assertEqual(history_lib.score_unit(percent), 'percent')
    self.assertIsNone(history_lib.score_unit(np.array([0.5, 2, 3])))
    self.assertIsNone(history_lib.score_unit(np.array([-1.0, 0.5])))
    self.assertIsNone(history_lib.score_unit(np.array([50.0, 150.0])))

  def test_plausible_range_is_min_max_widened_by_3_mad(self):
    scores = np.array([1.0, 2, 3, 4, 100])
    mad = 1.4826 * 1.0  # median 3, |deviations| 2,1,0,1,97 -> median 1.
    low, high = history_lib.plausible_range(scores)
    self.assertAlmostEqual(low, 1 - 3 * mad)
    self.assertAlmostEqual(high, 100 + 3 * mad)

  def test_check_new_scores(self):
    reference = np.linspace(0.3, 0.9, 20)
    where = 'f.csv: line 2'
    self.assertEqual(history_lib.check_new_scores([(0.5, where)], reference),
                     1.0)
    with self.assertRaisesRegex(ValueError, 'f.csv: the scores look like '
                                'percentages.*fraction.*by 0.01'):
      history_lib.check_new_scores([(55.0, where)], reference)
    self.assertEqual(history_lib.check_new_scores(
        [(55.0, where)], reference, convert_units=True), 0.01)
    with self.assertRaisesRegex(ValueError, 'f.csv: line 2: score -7 is '
                                'outside'):
      history_lib.check_new_scores([(-7.0, where)], reference)
    self.assertEqual(history_lib.check_new_scores(
        [(-7.0, where)], reference, allow_outliers=True), 1.0)


if __name__ == '__main__':
  absltest.main()
