"""Every `fennec` subcommand end to end (tiny), with bad input, and --help.

Each command runs in its own process: a command defines its absl flags at
import, and several commands share flag names, so they cannot share one
process. The processes are forked from cli_server.py, which has imported JAX
and fennec_jax once; HelpTest also runs `python -m fennec_jax.cli` itself.
"""

import contextlib
import csv
import io
import json
import math
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import pytest

from fennec_jax import cli

import cli_server  # tests/commands, on sys.path by its conftest.py

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _fennec_many(*calls: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
  """Runs several `fennec ARGS` at once, each in a process of its own."""
  return cli_server.run_many(_ROOT, *[(args, {}) for args in calls])


def _fennec(*args: str) -> subprocess.CompletedProcess:
  """Runs `fennec ARGS` from the repository root on the CPU."""
  return _fennec_many(args)[0]


def tearDownModule():
  cli_server.close()


def _python_m_fennec(*args: str) -> subprocess.CompletedProcess:
  """Runs `python -m fennec_jax.cli ARGS`: the entry point itself."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'fennec_jax.cli', *args],
                        cwd=_ROOT, env=env, capture_output=True, text=True,
                        timeout=600, check=False)


# The tiny build with four procedural targets, read directly (no tfds), and
# two MLP archs (no convolution to compile; build_test.py builds the CNN).
_TINY4_CONFIG = """
from fennec_jax.benchmarks import runner
from fennec_jax.benchmarks.offline import build


def get_config():
  config = runner.default_config('build_benchmark')
  config.update(build.tiny_config())
  config.targets = ['shape_color', 'shape_kind', 'texture_kind', 'count_dots']
  config.data = 'direct'
  config.archs = [['offline_mlp_s', 'mlp', 's'], ['offline_mlp_l', 'mlp', 'l']]
  return config
"""


class CliTestCase(absltest.TestCase):

  def tmp(self) -> str:
    return self.enterContext(tempfile.TemporaryDirectory())

  def assert_ok(self, proc: subprocess.CompletedProcess) -> None:
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])

  def assert_fails_naming(self, proc: subprocess.CompletedProcess,
                          *words: str) -> None:
    """Exit code 2, one error line (no traceback) naming every word."""
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    self.assertNotIn('Traceback', proc.stderr)
    for word in words:
      self.assertIn(word, proc.stderr)


class HelpTest(CliTestCase):

  def test_top_level_help_lists_every_command(self):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as e:
      cli.run(['fennec', '--help'])
    self.assertEqual(e.exception.code, 0)
    lines = out.getvalue().splitlines()
    for command in cli.COMMANDS:
      line = next(l for l in lines if l.strip().startswith(command + ' '))
      self.assertGreater(len(line.split(None, 1)[1]), 10, line)

  def test_unknown_command(self):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as e:
      cli.run(['fennec', 'evaluat'])
    self.assertEqual(e.exception.code, 2)
    self.assertIn("unknown command 'evaluat'", err.getvalue())
    self.assertIn('evaluate', err.getvalue())

  def test_command_help_lists_its_flags_with_defaults(self):
    # `python -m` once: the entry point and a fresh interpreter.
    for proc in (_python_m_fennec('evaluate', '--help'),
                 _fennec('evaluate', '-h')):
      self.assert_ok(proc)
      for name in ('--benchmark', '--history', '--k_shots'):
        self.assertIn(name, proc.stdout)
      self.assertIn("(default: '0,1,3,5,10')", proc.stdout)
      self.assertNotIn('--nas_bench', proc.stdout)  # Only its own flags.


  @pytest.mark.slow
  def test_helpshort_lists_each_commands_own_flags(self):
    # One flag each command defines, and one it must not list (another
    # command's, or absl's own).
    own = {'evaluate': '--k_shots', 'score': '--estimators',
           'features': '--probe', 'nas-bench': '--train_fraction',
           'build-benchmark': '--export_dir', 'recommend': '--allow_outliers',
           'demo': '--task', 'list': '--benchmark'}
    self.assertCountEqual(own, cli.COMMANDS)
    procs = _fennec_many(*[(c, '--helpshort') for c in own])
    for command, proc in zip(own, procs):
      stdout = proc.stdout
      with self.subTest(command):
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        self.assertIn(f'flags of fennec {command}:', stdout)
        self.assertIn(own[command], stdout)
        self.assertNotIn('--helpfull', stdout)
        self.assertNotIn('--only_check_args', stdout)
        other = '--allow_outliers' if command != 'recommend' else '--k_shots'
        self.assertNotIn(other, stdout)


class EvaluateTest(CliTestCase):

  @pytest.mark.slow
  def test_tiny_history_protocol(self):
    out = self.tmp()
    proc = _fennec('evaluate', '--benchmark=model_spider_single',
                   '--targets=CIFAR10,DTD', '--k_shots=0,1', '--seeds=1',
                   '--methods=popularity,fennec_space', f'--out={out}')
    self.assert_ok(proc)
    self.assertIn('fennec_space', proc.stdout)  # The printed table.
    with open(os.path.join(out, 'results.csv')) as f:
      rows = list(csv.DictReader(f))
    # 2 methods x K in {0, 1} x (2 targets + MEAN).
    self.assertLen(rows, 12)
    self.assertEqual({r['target'] for r in rows}, {'CIFAR10', 'DTD', 'MEAN'})
    # K = 1 (the K-shot fold-in) is defined on every row, as K = 0 is.
    self.assertFalse(any(math.isnan(float(r['weighted_tau'])) for r in rows))
    with open(os.path.join(out, 'config.json')) as f:
      config = json.load(f)
    self.assertEqual(config['runner'], 'evaluate')
    self.assertEqual(config['k_shots'], [0, 1])

  def test_bad_k_shots(self):
    proc = _fennec('evaluate', '--benchmark=model_spider_single',
                   '--k_shots=0,five', f'--out={self.tmp()}')
    self.assert_fails_naming(proc, '--k_shots', 'five')


class ScoreTest(CliTestCase):

  def _features(self) -> str:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    good = np.eye(3)[labels] * 3 + 0.1 * rng.normal(size=(30, 3))
    path = os.path.join(self.tmp(), 'f.npz')
    np.savez(path, labels=labels, **{'features/good': good,
                                     'features/noise': rng.normal(
                                         size=(30, 3))})
    return path

  def test_ranks_the_informative_model_first(self):
    out = os.path.join(self.tmp(), 'rank.csv')
    proc = _fennec('score', f'--features={self._features()}',
                   '--estimators=logme', f'--out={out}')
    self.assert_ok(proc)
    with open(out) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual([(r['rank'], r['model']) for r in rows],
                     [('1', 'good'), ('2', 'noise')])

  def test_unknown_estimator(self):
    proc = _fennec('score', f'--features={self._features()}',
                   '--estimators=logmee', f'--out={self.tmp()}/r.csv')
    self.assert_fails_naming(proc, "'logmee'", 'logme')


class FeaturesTest(CliTestCase):

  def _folder(self) -> str:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    root = self.tmp()
    rng = np.random.default_rng(0)
    for cls, n in (('a', 2), ('b', 2)):
      os.makedirs(os.path.join(root, cls))
      for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(
            os.path.join(root, cls, f'{i}.png'))
    return root

  @pytest.mark.slow
  def test_random_weights_tiny_vit(self):
    out = os.path.join(self.tmp(), 'task.npz')
    proc = _fennec('features', '--model=vit_test_tiny', '--random_weights',
                   f'--images={self._folder()}', f'--out={out}',
                   '--batch_size=8')
    self.assert_ok(proc)
    with np.load(out) as npz:
      np.testing.assert_array_equal(npz['labels'], [0, 0, 1, 1])
      self.assertEqual(npz['features'].shape[0], 4)

  def test_unknown_model(self):
    proc = _fennec('features', '--model=vit_nope', '--random_weights',
                   f'--images={self._folder()}',
                   f'--out={self.tmp()}/t.npz')
    self.assert_fails_naming(proc, 'vit_nope')


class NasBenchTest(CliTestCase):

  @pytest.mark.slow
  def test_tiny_gnn(self):
    out = self.tmp()
    proc = _fennec('nas-bench', f'--out={out}', '--limit=200', '--seeds=1',
                   '--train_fraction=0.2', '--steps=20', '--hidden=8',
                   '--layers=1', '--ensemble=1', '--methods=gnn',
                   '--datasets=cifar10',
                   '--flan_sizes=')
    self.assert_ok(proc)
    self.assertIn('Kendall tau', proc.stdout)
    with open(os.path.join(out, 'results.csv')) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual([(r['method'], r['dataset']) for r in rows],
                     [('gnn', 'cifar10')])
    with open(os.path.join(out, 'config.json')) as f:
      config = json.load(f)
    self.assertEqual((config['runner'], config['gnn']['steps']),
                     ('nas_bench', 20))

  def test_unknown_dataset(self):
    proc = _fennec('nas-bench', '--datasets=cifar11', f'--out={self.tmp()}')
    self.assert_fails_naming(proc, "'cifar11'", 'cifar10')


class BuildBenchmarkTest(CliTestCase):

  @pytest.mark.slow
  def test_tiny_build_and_export_then_demo_on_it(self):
    # One tiny build serves both commands: `fennec demo --data_dir` reads
    # the exported artifacts as it reads the committed ones. Four targets,
    # so that leaving one out keeps three for the image -> task map.
    tmp = self.tmp()
    workdir, artifacts = os.path.join(tmp, 'work'), os.path.join(tmp, 'art')
    config_file = os.path.join(tmp, 'tiny4.py')
    with open(config_file, 'w') as f:
      f.write(_TINY4_CONFIG)
    proc = _fennec('build-benchmark', f'--config={config_file}',
                   f'--workdir={workdir}', f'--export_dir={artifacts}')
    self.assert_ok(proc)
    with open(os.path.join(workdir, 'results.csv')) as f:
      rows = list(csv.DictReader(f))
    # 2 archs x 2 models x 4 targets.
    self.assertLen(rows, 16)
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)
    self.assertNotIn('stage', saved)  # Launch options stay out of the
    self.assertNotIn('export_dir', saved)  # build's identity (resume).
    with open(os.path.join(artifacts, 'results.csv')) as f:
      self.assertLen(list(csv.DictReader(f)), 16)

    proc = _fennec('demo', f'--data_dir={artifacts}', '--task=texture_kind',
                   '--top=3')
    self.assert_ok(proc)
    self.assertIn('texture_kind', proc.stdout)
    self.assertIn('demo total', proc.stdout)

  def test_unknown_config_variant(self):
    proc = _fennec('build-benchmark',
                   '--config=experiments/configs/build_benchmark.py:huge',
                   f'--workdir={self.tmp()}')
    self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
    self.assertNotIn('Traceback', proc.stderr)
    self.assertIn("'huge'", proc.stderr)


class RecommendTest(CliTestCase):

  def test_prior_ranking_from_a_benchmark(self):
    proc = _fennec('recommend', '--benchmark=model_spider_single', '--top=3')
    self.assert_ok(proc)
    ranks = [l.split()[0] for l in proc.stdout.splitlines()
             if l.strip()[:1].isdigit()]
    self.assertEqual(ranks, ['1.', '2.', '3.'], proc.stdout)

  def test_unknown_benchmark(self):
    proc = _fennec('recommend', '--benchmark=model_spider_singel')
    self.assert_fails_naming(proc, "'model_spider_singel'",
                             'model_spider_single')


class DemoTest(CliTestCase):
  """The demo's success case runs in BuildBenchmarkTest, on a tiny build."""

  def test_unknown_task(self):
    proc = _fennec('demo', '--task=shape_colour')
    self.assert_fails_naming(proc, 'shape_colour')


if __name__ == '__main__':
  absltest.main()
