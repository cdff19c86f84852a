"""The runner registry: config validation, every experiment config, tiny runs.

The end-to-end runs call `runner.run` in-process on the tiny configs of the
runners whose library functions no other test runs: evaluate runs in
tests/experiments, build_benchmark in tests/benchmarks/build_test.py,
nas_bench in tests/archi2vec/nas_bench_test.py, images (minutes: every zoo
model is compiled) in tests/benchmarks/offline_e2e_test.py, demo in
tests/commands.
"""

import csv
import dataclasses
import glob
import importlib.util
import json
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections
import pytest

from fennec_jax import space
from fennec_jax.archi2vec import nas_bench
from fennec_jax.benchmarks import runner
from fennec_jax.benchmarks.offline import build

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'experiments', 'configs')
_CONFIG_NAMES = sorted(os.path.basename(p)[:-3]
                       for p in glob.glob(os.path.join(_CONFIGS, '*.py')))


def _get_config(name: str, arg: str | None = None):
  """`get_config(arg)` of experiments/configs/NAME.py."""
  spec = importlib.util.spec_from_file_location(
      f'config_{name}', os.path.join(_CONFIGS, f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


class ValidationTest(absltest.TestCase):

  def tmp(self) -> str:
    return self.enterContext(tempfile.TemporaryDirectory())

  def test_unknown_runner_lists_the_valid_ones(self):
    with self.assertRaisesRegex(ValueError, r"unknown runner 'evaluat'.*"
                                r"'evaluate'.*'joint_eval'"):
      runner.default_config('evaluat')
    config = runner.default_config('evaluate')
    config.runner = 'evaluat'
    with self.assertRaisesRegex(ValueError, "unknown runner 'evaluat'"):
      runner.run(config, self.tmp())

  def test_unknown_key_named_with_the_valid_keys(self):
    config = runner.default_config('evaluate')
    config.num_seed = 3
    with self.assertRaisesRegex(ValueError,
                                r"'num_seed'.*valid keys.*'num_seeds'"):
      runner.validate(config)

  def test_unknown_nested_key(self):
    config = runner.default_config('images')
    config.space.max_step = 3
    with self.assertRaisesRegex(ValueError, r"'space\.max_step'; valid keys "
                                r"of space: .*'max_steps'"):
      runner.validate(config)

  def test_missing_key_and_missing_runner(self):
    config = runner.default_config('task_maps')
    del config['k_shot']
    with self.assertRaisesRegex(ValueError, r"lacks keys \['k_shot'\]"):
      runner.validate(config)
    del config['runner']
    with self.assertRaisesRegex(ValueError, 'no `runner` key'):
      runner.validate(config)

  def test_section_given_a_value(self):
    config = ml_collections.ConfigDict(
        dict(runner.default_config('joint_eval').to_dict(), joint=3))
    with self.assertRaisesRegex(ValueError, r"'joint' must be a section"):
      runner.validate(config)

  def test_nothing_written_before_validation(self):
    workdir = os.path.join(self.tmp(), 'out')
    config = runner.default_config('evaluate')
    config.bogus = 1
    with self.assertRaises(ValueError):
      runner.run(config, workdir)
    self.assertFalse(os.path.exists(workdir))

  def test_defaults_are_the_library_defaults(self):
    space_defaults = dataclasses.asdict(space.SpaceConfig())
    del space_defaults['seed']  # The runner's `seed` seeds the space.
    for name in ('evaluate', 'images', 'models_out'):
      self.assertEqual(runner.default_config(name).space.to_dict(),
                       space_defaults, name)
    self.assertEqual(runner.default_config('nas_bench').gnn.to_dict(),
                     dataclasses.asdict(nas_bench.GNNConfig()))

  def test_build_config_keeps_the_build_identity(self):
    # A work directory made by `build.tiny_config()` resumes under the
    # experiments config and vice versa: the launch keys stay out of it.
    def identity(config):
      d = json.loads(json.dumps(config.to_dict(), sort_keys=True))
      d.pop('runner', None)
      return d

    for arg, want in (('tiny', build.tiny_config()),
                      (None, build.default_config())):
      config = runner.build_config(_get_config('build_benchmark', arg))
      self.assertEqual(identity(config), identity(want), arg)

  def test_bad_values_fail_before_any_work(self):
    config = runner.default_config('build_benchmark')
    config.stage = 'exprt'
    with self.assertRaisesRegex(ValueError, r"'exprt'.*'export'"):
      runner.validate(config)
    config.stage = 'export'
    with self.assertRaisesRegex(ValueError, 'needs config.export_dir'):
      runner.validate(config)
    config = runner.default_config('joint_eval')
    config.protocol = 'model'
    workdir = os.path.join(self.tmp(), 'out')
    with self.assertRaisesRegex(ValueError, r"'model'.*'models', 'tasks'"):
      runner.run(config, workdir)
    self.assertFalse(os.path.exists(workdir))


class ExperimentConfigsTest(parameterized.TestCase):

  def test_every_experiment_has_a_config(self):
    self.assertContainsSubset(
        {'evaluate', 'images', 'models_out', 'build_benchmark', 'nas_bench',
         'task_maps', 'joint_eval'}, set(_CONFIG_NAMES))

  @parameterized.parameters(*_CONFIG_NAMES)
  def test_config_validates_against_its_runner(self, name):
    for arg in (None, 'tiny'):
      config = _get_config(name, arg)
      runner.validate(config)
      self.assertIn(config.runner, runner.RUNNERS)
    with self.assertRaisesRegex(ValueError, "'huge'"):
      _get_config(name, 'huge')

  @parameterized.parameters(*_CONFIG_NAMES)
  def test_docstring_gives_command_and_runtime(self, name):
    spec = importlib.util.spec_from_file_location(
        f'doc_{name}', os.path.join(_CONFIGS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    self.assertIn(f'experiments/configs/{name}.py', module.__doc__)
    self.assertIn('Runtime', module.__doc__)
    self.assertIn(f'{name}.py:tiny`, measured', module.__doc__)


@pytest.mark.slow
class TinyRunsTest(absltest.TestCase):
  """The tiny configs of the runners no other test runs, end to end."""

  def setUp(self):
    super().setUp()
    self.workdir = self.enterContext(tempfile.TemporaryDirectory())

  def _saved_config(self):
    with open(os.path.join(self.workdir, runner.CONFIG_FILE)) as f:
      return json.load(f)

  def test_models_out(self):
    rows, path = runner.run(_get_config('models_out', 'tiny'), self.workdir)
    self.assertEqual(os.path.basename(path), 'models_out.csv')
    means = {r['method']: r for r in rows if r['model'] == 'MEAN'}
    self.assertEqual(sorted(means),
                     ['fennec_cold', 'mean_model', 'nearest_model'])
    # model_spider_single: its 10 models are all observed on >= 3 tasks.
    self.assertLen(rows, 3 * 10 + 3)

  def test_task_maps(self):
    result = runner.run(_get_config('task_maps', 'tiny'), self.workdir)
    with open(os.path.join(self.workdir, 'task_maps_offline.json')) as f:
      self.assertEqual(json.load(f)['targets'], result['targets'])
    self.assertEqual(result['targets'], ['shape_color', 'count_parity'])
    self.assertEqual(
        sorted(result['mean_weighted_tau']),
        ['fennec', 'fennec_0_same_models', 'fennec_5', 'fennec_ridge',
         'popularity', 'space_5'])
    for per_seed in result['per_target'].values():
      self.assertLen(per_seed[0], 2)

  def test_joint_eval(self):
    summary = runner.run(_get_config('joint_eval', 'tiny'), self.workdir)
    self.assertEqual(summary['num_heldout'], 2)
    self.assertEqual(sorted(summary['means']),
                     ['fennec_cold', 'joint', 'mean_model', 'nearest_model'])
    with open(os.path.join(self.workdir,
                           'joint_eval_parc_controlled_models.csv')) as f:
      rows = list(csv.DictReader(f))
    self.assertLen(rows, 4 * 2)


if __name__ == '__main__':
  absltest.main()
