"""Bad input to `fennec`: a clear message and exit code 2, or a correct result.

One case per kind of wrong input (readable errors, fail-fast flags and output
paths, what a recommendation says it knows, images the task map cannot
place, score units and outliers (with --benchmark and --checkpoint), `fennec
list`, CSV dialects and duplicates; the loaders' property-based fuzzing is in
fuzz_loaders_test.py). Each command case asserts the exit code,
the message and that no output file was left behind. Commands run in a
process of their own (each defines its absl flags at import), forked from
cli_server.py; the helpers they call are also tested in process, where it is
cheaper.
"""

import csv
import os
import shutil
import subprocess
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np
from PIL import Image
import pytest

from fennec_jax import files
from fennec_jax import history as history_lib
from fennec_jax import recommender
from fennec_jax import task_maps
from fennec_jax.benchmarks import public
from fennec_jax.benchmarks.offline import loader as offline_loader
from fennec_jax.commands import checks
from fennec_jax.commands import ranking

import cli_server  # tests/commands, on sys.path by its conftest.py

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def tearDownModule():
  cli_server.close()


def _run(*calls: tuple[tuple[str, ...], bool]
         ) -> list[subprocess.CompletedProcess]:
  """Runs `(args, verbose_env)` calls at once, each in a process of its own
  forked from cli_server.py; `verbose_env` sets FENNEC_VERBOSE=1."""
  return cli_server.run_many(
      _ROOT, *[(args, {'FENNEC_VERBOSE': '1' if verbose else None})
        for args, verbose in calls])


def _fennec(*args: str) -> subprocess.CompletedProcess:
  """Runs `fennec ARGS` from the repository root on the CPU."""
  return _run((args, False))[0]


def _fennec_many(*calls: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
  """Runs several `fennec` commands at once."""
  return _run(*[(args, False) for args in calls])


def _error_lines(stderr: str) -> list[str]:
  """stderr without absl's log lines (I/W + date) and blank lines."""
  return [l for l in stderr.splitlines()
          if l.strip() and not (l[:1] in 'IW' and l[1:5].isdigit())]


class BadInputTestCase(absltest.TestCase):

  def tmp(self) -> str:
    return self.enterContext(tempfile.TemporaryDirectory())

  def write(self, name: str, text: str | bytes) -> str:
    path = os.path.join(self.tmp(), name)
    with open(path, 'wb') as f:
      f.write(text.encode() if isinstance(text, str) else text)
    return path

  def assert_user_error(self, proc: subprocess.CompletedProcess,
                        *words: str) -> None:
    """Exit 2, one or two error lines naming every word, no traceback."""
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    self.assertNotIn('Traceback', proc.stderr)
    lines = _error_lines(proc.stderr)
    self.assertBetween(len(lines), 1, 2, proc.stderr)
    self.assertStartsWith(lines[0], 'fennec ')
    for word in words:
      self.assertIn(word, proc.stderr)

  def assert_dir_empty(self, directory: str) -> None:
    self.assertEqual(os.listdir(directory), [])


class ReadableErrorsTest(BadInputTestCase):
  """Item 1: user errors in one or two lines, exit 2; traceback on demand."""

  @pytest.mark.slow
  def test_missing_file_bad_flag_and_verbose(self):
    out_dir = self.tmp()
    out = os.path.join(out_dir, 'rank.csv')
    args = ('score', '--features=no_such.npz', '--estimators=logme',
            f'--out={out}')
    plain, bad_flag, *verbose = _run(
        (args, False), (('score', '--top=3'), False),
        (args + ('--verbose',), False), (args, True))
    self.assert_user_error(plain, 'no_such.npz', 'does not exist')
    self.assert_user_error(bad_flag, "'top'", 'fennec score --help')
    for proc in verbose:
      self.assertEqual(proc.returncode, 2)
      self.assertIn('Traceback', proc.stderr)
      self.assertIn('fennec score: error: ', proc.stderr)
    self.assert_dir_empty(out_dir)

  def test_missing_checkpoint_is_named(self):
    missing = os.path.join(self.tmp(), 'ckpt')
    self.assert_user_error(_fennec('recommend', f'--checkpoint={missing}'),
                           missing, 'no such checkpoint')


class FailFastTest(BadInputTestCase):
  """Item 2: flags and output paths refused before any work is done."""

  @pytest.mark.slow
  def test_outputs_and_values_checked_before_reading_inputs(self):
    # The inputs do not exist: each error below comes before they are read.
    tmp = self.tmp()
    a_file = os.path.join(tmp, 'a_file')
    with open(a_file, 'w') as f:
      f.write('keep me')
    cases = [
        (('score', '--features=none.npz', f'--out={tmp}'), ('--out', tmp,
                                                            'directory')),
        (('score', '--features=none.npz', '--estimators=logme,logmee',
          f'--out={tmp}/r.csv'), ("'logmee'", 'hscore')),
        (('evaluate', '--history=none.csv', f'--out={a_file}'),
         ('--out', a_file, 'not a directory')),
        (('features', '--images=none', '--random_weights',
          f'--out={a_file}/t.npz'), (a_file, 'not a directory')),
        (('recommend', '--history=none.csv', f'--save={a_file}'),
         ('--save', 'already exists')),
    ]
    procs = _fennec_many(*[args for args, _ in cases])
    for (args, words), proc in zip(cases, procs):
      with self.subTest(args[0] + ' ' + ' '.join(words)):
        self.assert_user_error(proc, *words)
    self.assertEqual(sorted(os.listdir(tmp)), ['a_file'])
    with open(a_file) as f:
      self.assertEqual(f.read(), 'keep me')

  def test_checks_in_process(self):
    tmp = self.tmp()
    checks.output_dir('--out', os.path.join(tmp, 'new', 'deeper'))
    checks.output_file('--out', os.path.join(tmp, 'new', 'f.npz'),
                       suffix='.npz')
    with self.assertRaisesRegex(ValueError, r'--out=.*f\.csv: must name a '
                                r'\.npz file'):
      checks.output_file('--out', os.path.join(tmp, 'f.csv'), suffix='.npz')
    # Root may write anywhere, so a read-only directory is simulated.
    with mock.patch.object(os, 'access', return_value=False):
      with self.assertRaisesRegex(ValueError, f'directory {tmp} is not '
                                  'writable'):
        checks.output_dir('--out', os.path.join(tmp, 'out'))
    self.assertEqual(checks.integers('--k_shots', ['0', '3'], 0), (0, 3))
    for values, shown in ((['1', 'x'], "'x'"), (['0', '-1'], '-1')):
      with self.assertRaisesRegex(ValueError, '--k_shots must be integers >= '
                                  f'0, got {shown}'):
        checks.integers('--k_shots', values, 0)
    with self.assertRaisesRegex(ValueError, '--seeds=0: must be >= 1'):
      checks.at_least('--seeds', 0, 1)
    checks.at_least('--top', 1, 1)
    self.assert_dir_empty(tmp)

  def test_write_atomically_leaves_old_file_or_nothing(self):
    tmp = self.tmp()
    path = os.path.join(tmp, 'out.npz')

    def fail(temp):
      np.savez(temp, a=np.ones(3))
      raise KeyboardInterrupt  # A run killed mid-write.

    with self.assertRaises(KeyboardInterrupt):
      files.write_atomically(path, fail)
    self.assert_dir_empty(tmp)
    files.write_atomically(path, lambda temp: np.savez(temp, a=np.ones(3)))
    self.assertEqual(os.listdir(tmp), ['out.npz'])
    with self.assertRaises(KeyboardInterrupt):
      files.write_atomically(path, fail)
    self.assertEqual(os.listdir(tmp), ['out.npz'])
    with np.load(path) as npz:
      np.testing.assert_array_equal(npz['a'], np.ones(3))


def _recommendation(models, predicted, std):
  predicted, std = np.array([predicted], float), np.array([std], float)
  return recommender.Recommendation(
      model_ids=[list(models)], indices=np.arange(len(models))[None],
      predicted=predicted, std=std, all_predicted=predicted, all_std=std,
      vectors=np.zeros((1, 2)))


class RecommendationSaysWhatIsKnownTest(BadInputTestCase):
  """Item 3: observed models apart, one precision, no nan ranking."""

  def test_observed_apart_and_one_precision(self):
    rec = _recommendation(['seen', 'b', 'c', 'd'], [92.0, 85.5, 80.123, 70],
                          [0.001, 10.0, 0.8543, 2.0])
    text = ranking.format_recommendation(rec, ['t'], {'t': {'seen': 92}},
                                         top=2)
    lines = text.splitlines()
    self.assertEqual([l.split()[:2] for l in lines[1:]],
                     [['obs:', 'seen'], ['1.', 'b'], ['2.', 'c']])
    self.assertIn('92.00 observed', lines[1])
    self.assertEqual(lines[2].split()[-3:], ['85.50', '+-', '10.00'])
    self.assertEqual(lines[3].split()[-3:], ['80.12', '+-', '0.85'])

  def test_non_finite_prediction_is_an_error(self):
    rec = _recommendation(['a', 'b'], [np.nan, 1.0], [1.0, 1.0])
    with self.assertRaisesRegex(ValueError, r"task t: non-finite.*\['a'\]"):
      ranking.format_recommendation(rec, ['t'])

  @pytest.mark.slow
  def test_recommend_lists_observed_apart(self):
    scores = self.write('new.csv', 'model,score\nresnet152,97\n')
    proc = _fennec('recommend', '--benchmark=sfda_group1', '--top=3',
                   f'--scores={scores}')
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    lines = proc.stdout.splitlines()
    self.assertEqual(lines[1].split()[:3], ['obs:', 'resnet152', '97.00'])
    ranked = [l.split()[1] for l in lines[2:]]
    self.assertLen(ranked, 3)
    self.assertNotIn('resnet152', ranked)


def _offline_subset(directory: str, tasks: tuple[str, ...]) -> str:
  """A copy of the committed offline artifacts holding only `tasks` (the
  proxy embeds 4 probes, not 26: the command runs in seconds)."""
  src = offline_loader.DATA_DIR
  os.makedirs(os.path.join(directory, 'probes'))
  for name in ('weights', 'graphs'):
    os.symlink(os.path.join(src, name), os.path.join(directory, name))
  shutil.copy(os.path.join(src, 'models.csv'), directory)
  for name in ('results.csv', 'tasks.csv'):
    with open(os.path.join(src, name)) as f:
      rows = list(csv.DictReader(f))
    with open(os.path.join(directory, name), 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]))
      writer.writeheader()  # Source tasks (role) stay: models name them.
      writer.writerows(r for r in rows if r['task'] in tasks
                       or r.get('role', 'target') != 'target')
  for task in tasks:
    shutil.copy(os.path.join(src, 'probes', f'{task}.npz'),
                os.path.join(directory, 'probes'))
  return directory


class TaskConfidenceTest(BadInputTestCase):
  """Item 3 of Deliver: images the map cannot place give a warning and the
  prior's ranking (the logic: tests/task_confidence_test.py)."""

  def test_warning_line_names_the_reason_and_the_prior(self):
    rec = _recommendation(['a', 'b'], [0.5, 0.4], [0.1, 0.1])
    far = task_maps.TaskConfidence(
        False, 'its images are farther from the history', 12, 5, 0.09, 0.04)
    text = ranking.format_recommendation(rec._replace(confidence=[far]),
                                         ['images'])
    self.assertStartsWith(text, 'WARNING: the images do not place this task')
    self.assertIn('farther from the history', text.splitlines()[0])
    self.assertIn('Ranked by the population prior', text.splitlines()[0])
    with_scores = ranking.format_recommendation(
        rec._replace(confidence=[far]), ['images'], {'images': {'a': 0.5}})
    self.assertIn('prior updated by the observed scores', with_scores)
    placed = task_maps.TaskConfidence(True, '', 100, 5, 0.01, 0.04)
    text = ranking.format_recommendation(rec._replace(confidence=[placed]),
                                         ['images'])
    self.assertStartsWith(text, 'images: 100, distance to the history 0.0100')
    self.assertNotIn('WARNING', text)

  @pytest.mark.slow
  def test_recommend_on_noise_images_prints_the_warning(self):
    tmp = self.tmp()
    data = _offline_subset(os.path.join(tmp, 'art'), (
        'fashion_all', 'glyph_hebrew', 'shape_kind', 'texture_frequency'))
    rng = np.random.default_rng(0)
    folder = os.path.join(tmp, 'noise', 'a')
    os.makedirs(folder)
    for i in range(12):
      Image.fromarray(rng.integers(0, 256, (28, 28, 3), np.uint8)).save(
          os.path.join(folder, f'{i}.png'))
    # That the ranking is then the prior's is tested in process
    # (tests/task_confidence_test.py).
    noise = _fennec('recommend', '--benchmark=offline', f'--data_dir={data}',
                    f'--images={os.path.dirname(folder)}', '--top=3')
    self.assertEqual(noise.returncode, 0, noise.stderr[-2000:])
    lines = noise.stdout.splitlines()
    self.assertStartsWith(lines[0], 'WARNING: the images do not place')
    self.assertIn('Ranked by the population prior', lines[0])
    self.assertEqual([l.split()[0] for l in lines[2:]], ['1.', '2.', '3.'])


class ScoreUnitsTest(BadInputTestCase):
  """Item 4: --scores checked against the history's unit and range."""

  def setUp(self):
    super().setUp()
    history = public.load_benchmark('sfda_group1')  # Percent scores.
    self.reference = history.scores[history.mask]

  def test_units_and_outliers_in_process(self):
    self.assertEqual(history_lib.score_unit(self.reference), 'percent')
    self.assertEqual(history_lib.score_unit(self.reference / 100), 'fraction')
    self.assertIsNone(history_lib.score_unit(np.array([-3.0, 2.0])))
    fractions = self.write('f.csv', 'model,score\nresnet50,0.91\n')
    with self.assertRaisesRegex(ValueError, r'f\.csv: the scores look like '
                                r'fractions.*percent.*multiply them by 100 '
                                'or pass --convert_units'):
      recommender.read_scores_csv(fractions, self.reference)
    self.assertEqual(
        recommender.read_scores_csv(fractions, self.reference,
                                    convert_units=True),
        {'f': {'resnet50': 91.0}})
    typo = self.write('typo.csv', 'model,score\nresnet34,72\nresnet50,7296\n')
    with self.assertRaisesRegex(ValueError, r'typo\.csv: line 3: score 7296 '
                                'is outside the plausible range'):
      recommender.read_scores_csv(typo, self.reference)
    self.assertEqual(
        recommender.read_scores_csv(typo, self.reference, allow_outliers=True),
        {'typo': {'resnet34': 72.0, 'resnet50': 7296.0}})
    low, high = history_lib.plausible_range(self.reference)
    self.assertLess(low, self.reference.min())
    self.assertGreater(high, self.reference.max())

  def test_recommend_refuses_fractions_and_outliers(self):
    fractions = self.write('obs.csv', 'model,score\nresnet50,0.91\n'
                           'resnet34,0.85\n')
    outlier = self.write('obs.csv', 'model,score\nresnet34,85\n'
                         'resnet50,1e30\n')
    procs = _fennec_many(*[('recommend', '--benchmark=sfda_group1',
                            f'--scores={path}') for path in (fractions,
                                                            outlier)])
    self.assert_user_error(procs[0], fractions, 'fractions', 'percent',
                           '--convert_units')
    self.assert_user_error(procs[1], f'{outlier}: line 3', '1e+30',
                           '--allow_outliers')


  @pytest.mark.slow
  def test_checkpoint_keeps_the_scores_for_the_same_checks(self):
    history = public.load_benchmark('sfda_group1')
    path = os.path.join(self.tmp(), 'ckpt')
    recommender.Fennec().fit(history).save(path)
    loaded = recommender.Fennec.load(path)
    np.testing.assert_array_equal(loaded.reference_scores, self.reference)
    fractions = self.write('obs.csv', 'model,score\nresnet50,0.91\n')
    outlier = self.write('obs.csv', 'model,score\nresnet34,85\n'
                         'resnet50,7296\n')
    fine = self.write('obs.csv', 'model,score\nresnet50,91\n')
    procs = _fennec_many(*[('recommend', f'--checkpoint={path}',
                            f'--scores={p}', '--top=2')
                           for p in (fractions, outlier, fine)])
    self.assert_user_error(procs[0], fractions, 'fractions', 'percent',
                           '--convert_units')
    self.assert_user_error(procs[1], f'{outlier}: line 3', '7296',
                           '--allow_outliers')
    self.assertEqual(procs[2].returncode, 0, procs[2].stderr[-2000:])
    self.assertIn('obs: resnet50', procs[2].stdout)
    self.assertNotIn('cannot be checked', procs[2].stderr)


class ListTest(BadInputTestCase):
  """Item 5: `fennec list`."""

  def test_list_a_benchmarks_models_and_a_bad_subject(self):
    proc, bad = _fennec_many(('list', 'models', '--benchmark=sfda_group1'),
                             ('list', 'model'))
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertEqual(proc.stdout.split(),
                     list(public.load_benchmark('sfda_group1').model_ids))
    self.assert_user_error(bad, "'model'", 'benchmarks', 'estimators')


class CsvDialectsAndDuplicatesTest(BadInputTestCase):
  """Item 6: BOM, ';' / tab delimiters, --duplicates."""

  def test_bom_semicolon_and_tab(self):
    bom = self.write('s.csv', b'\xef\xbb\xbfmodel;score\na;0.5\nb;1\n')
    self.assertEqual(recommender.read_scores_csv(bom),
                     {'s': {'a': 0.5, 'b': 1.0}})
    tab = self.write('t.csv', 'model\ttask\tscore\na\tx\t0.5\n')
    self.assertEqual(recommender.read_scores_csv(tab), {'x': {'a': 0.5}})

  @pytest.mark.slow
  def test_duplicates_flag(self):
    rows = [f'm{i},t{j},{50 + 3 * i + j}' for i in range(4) for j in range(3)]
    path = self.write('h.csv', '\n'.join(['model,task,score'] + rows
                                         + ['m0,t0,60']) + '\n')
    bad, proc = _fennec_many(
        ('recommend', f'--history={path}'),
        ('recommend', f'--history={path}', '--duplicates=mean', '--top=2'))
    self.assert_user_error(bad, "'m0'", "'t0'", '--duplicates')
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertIn('  1. m3', proc.stdout)


if __name__ == '__main__':
  absltest.main()
