"""The plan resolves a config against the catalogue and names what it
leaves out; the dry run prints tasks, models, images and a time estimate."""

import importlib.util
import os

from absl.testing import absltest

from fennec_jax.benchmarks.full import plan as plan_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def _config(arg=None):
  spec = importlib.util.spec_from_file_location(
      'full_benchmark_config',
      os.path.join(_ROOT, 'experiments', 'configs', 'full_benchmark.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


class PlanTest(absltest.TestCase):

  def test_full_config_covers_three_benchmarks(self):
    plan = plan_lib.make_plan(_config())
    names = [b.name for b in plan.benchmarks]
    self.assertEqual(names, ['sfda_group1', 'model_spider_single',
                             'parc_controlled'])
    by = {b.name: b for b in plan.benchmarks}
    self.assertLen(by['sfda_group1'].models, 11)
    self.assertLen(by['sfda_group1'].tasks, 10)  # aircraft: no tfds.
    self.assertEqual([s[1] for s in by['sfda_group1'].skipped], ['aircraft'])
    # torchvision's resnet50 file serves both torchvision benchmarks.
    self.assertLen([k for k in plan.models if k.startswith('resnet50-')], 1)
    # Shared tasks are embedded once.
    self.assertIn('oxford_iiit_pet', plan.tasks)
    self.assertLen(plan.tasks, len(set(plan.tasks)))

  def test_a_folder_brings_in_a_task_without_tfds(self):
    config = _config()
    config.task_folders = ('aircraft=/data/aircraft',)
    by = {b.name: b for b in plan_lib.make_plan(config).benchmarks}
    self.assertIn('aircraft', by['sfda_group1'].tasks)
    config.task_folders = ('aircraft',)
    with self.assertRaisesRegex(ValueError, "'KEY=DIR'"):
      plan_lib.make_plan(config)

  def test_bad_selection_names_the_valid_ones(self):
    config = _config('tiny')
    config.tasks = ('cifar10', 'imagenet21k')
    with self.assertRaisesRegex(ValueError, "unknown catalogue keys "
                                r"\['imagenet21k'\]"):
      plan_lib.make_plan(config)
    config = _config('tiny')
    config.tasks = ('cifar10', 'dtd', 'cifar100')
    with self.assertRaisesRegex(ValueError, '3 tasks .* >= 4 tasks'):
      plan_lib.make_plan(config)

  def test_dry_run_text(self):
    config = _config('tiny')
    text = plan_lib.describe(plan_lib.make_plan(config), config,
                             measure=False)
    for want in ('tasks (4; probe 48 images, proxy 16', 'cifar10: tfds '
                 'cifar10[train] v3.0.2', 'resnet50: resnet50 (torchvision)',
                 'images read: 192', 'sfda_group1: 4 tasks x 5 models'):
      self.assertIn(want, text)

  def test_flops_and_the_h200_estimate(self):
    # torchvision documents ResNet-50 at 4.09 GFLOPS counted as
    # multiply-adds: 2 x 4.09e9 FLOPs.
    self.assertBetween(plan_lib.flops_per_image('resnet50', 224),
                       0.95 * 8.18e9, 1.05 * 8.18e9)
    # The anchor's own images take 1 s; 64 pairs of LogME take the
    # anchor's 64-model median; one probe shape, its first call.
    clip = plan_lib.flops_per_image('clip_vit_l14', 224)
    fwd, est, first = plan_lib.h200_estimate(
        plan_lib.H200_PROXY_IMG_S * clip, 64, 1, ['logme'])
    self.assertAlmostEqual(fwd, 1.0)
    self.assertAlmostEqual(est, plan_lib.H200_ESTIMATOR_S['logme'][0])
    self.assertAlmostEqual(first, plan_lib.H200_ESTIMATOR_S['logme'][1])
    # An estimator without an anchor counts as the slowest.
    _, est, _ = plan_lib.h200_estimate(0.0, 64, 1, ['otce'])
    self.assertEqual(est, max(plan_lib.H200_ESTIMATOR_S.values())[0])


if __name__ == '__main__':
  absltest.main()
