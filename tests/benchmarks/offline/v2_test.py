"""Tests of the v2 preset, the recipe validation and the proxy probe.

Recipe agreement is checked against `scipy.stats.weightedtau`; the logistic
probe against separable and label-shuffled data; the recipe validation runs
end to end on a tiny procedural zoo (no packaged data needed), including a
resume that redoes nothing.
"""

import json
import os
import tempfile

from absl.testing import absltest
import jax
import numpy as np
import pytest
from scipy import stats

from fennec_jax import models
from fennec_jax.benchmarks.offline import build
from fennec_jax.benchmarks.offline import export
from fennec_jax.benchmarks.offline import presets
from fennec_jax.benchmarks.offline import proxy_probe
from fennec_jax.benchmarks.offline import recipe
from fennec_jax.benchmarks.offline import zoo
from fennec_jax.data import packaged
from fennec_jax.data import tasks


class V2PresetTest(absltest.TestCase):

  def test_zoo_families_sizes_sources(self):
    config = presets.v2_config()
    plan = zoo.zoo_plan(config)
    self.assertGreaterEqual(len(plan), 40)
    self.assertGreaterEqual(len({m.family for m in plan}), 6)
    for fam in {m.family for m in plan}:
      self.assertEqual({m.size for m in plan if m.family == fam}, {'s', 'l'})
    self.assertLen({m.source for m in plan}, len(plan))
    self.assertGreaterEqual(len(config.targets), 50)
    self.assertEmpty(set(config.proxy.sources) & set(config.targets))
    self.assertTrue(all(tasks.get_task(s).domain != 'mixture'
                        for s in config.proxy.sources))
    # Every v2 domain has a source, so relatedness can matter.
    src_domains = {d for s in config.sources
                   for d in tasks.get_task(s).domains}
    self.assertEqual(src_domains, {tasks.get_task(t).domain
                                   for t in config.targets})
    build.work_config(config)  # JSON-serializable fingerprint.

  def test_new_families_give_features(self):
    # Shapes only, so traced abstractly (`jax.eval_shape`, the same module
    # code): run op by op the four nets took ~70 s on the 2-core CPU.
    # V2TinyBuildTest trains and evaluates the small ones for real.
    x = np.zeros((2, 28, 28, 3), np.float32)
    for arch in ('offline_convnext_s', 'offline_convnext_l',
                 'offline_densenet_s', 'offline_densenet_l'):
      module = zoo.make_classifier(arch, 5)
      v = jax.eval_shape(module.init, jax.random.key(0), x)
      self.assertEqual(jax.eval_shape(module.apply, v, x).shape, (2, 5),
                       arch)
      feats = jax.eval_shape(models.get_model(arch, num_classes=0).apply,
                             {k: c['backbone'] for k, c in v.items()}, x)
      self.assertEqual(feats.ndim, 2)
      self.assertEqual(feats.shape[0], 2, arch)


class RecipeTest(absltest.TestCase):

  def test_agreement_matches_scipy(self):
    rng = np.random.default_rng(0)
    models_ = [f'm{i}' for i in range(9)]
    done = {}
    for s in (5, 10, 50):
      done[s] = {(m, t): float(rng.random())
                 for m in models_ for t in ('shape_kind', 'count_dots')}
    report = recipe.agreement(done)
    self.assertEqual(report['reference'], 50)
    for row in report['per_target']:
      t = row['task']
      true = [done[50][(m, t)] for m in models_]
      for s in (5, 10):
        pred = [done[s][(m, t)] for m in models_]
        self.assertAlmostEqual(row['wtau'][s],
                               stats.weightedtau(pred, true)[0], places=5)
    self.assertIn('| 5 |', recipe.format_markdown(report))

  def test_chance_bar(self):
    self.assertAlmostEqual(recipe.chance_bar(10), 0.3)
    self.assertAlmostEqual(recipe.chance_bar(2), 0.65)
    self.assertAlmostEqual(recipe.chance_bar(4), 0.25 + 0.3 * 0.75)

  def test_recipe_config_scales_warmup(self):
    config = build.default_config()
    c = recipe.recipe_config(config, 300)
    self.assertEqual(c.finetune.steps, 300)
    self.assertEqual(c.finetune.warmup, 30)
    self.assertEqual(config.finetune.steps, 30)

  def test_validate_end_to_end_and_resume(self):
    config = build.tiny_config()
    config.data = 'direct'
    config.archs = [['offline_mlp_s', 'mlp', 's']]
    config.sources = config.sources[:2]
    with tempfile.TemporaryDirectory() as d:
      build.check_workdir(config, d)
      build.pretrain_zoo(config, d, which='zoo')
      out = os.path.join(d, 'recipe')
      done = recipe.validate(config, d, ['count_parity'], [2, 4], out)
      self.assertLen(done[2], 2)
      self.assertLen(done[4], 2)
      again = recipe.validate(config, d, ['count_parity'], [2, 4], out)
      self.assertEqual(again, done)
      self.assertEqual(recipe.read(out), done)
      # Same recipe as the build => same number as the build's pair.
      results = build.finetune_all(config, d)
      for (m, t), acc in done[4].items():
        self.assertAlmostEqual(results[(m, t)], acc, places=6)
      with self.assertRaisesRegex(ValueError, 'not a target'):
        recipe.validate(config, d, ['shape_kind'], [2], out)


class ProbeTest(absltest.TestCase):

  def test_separable_vs_shuffled(self):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (4, 16))
    y = np.arange(400) % 4
    x = centers[y] + rng.normal(0, 1, (400, 16))
    acc = proxy_probe.logistic_probe(x[:200], y[:200], x[200:], y[200:], 4)
    self.assertGreater(acc, 0.95)
    shuffled = proxy_probe.logistic_probe(
        x[:200], rng.permutation(y[:200]), x[200:], y[200:], 4)
    self.assertLess(shuffled, 0.45)


if __name__ == '__main__':
  absltest.main()


def _packages_installed() -> bool:
  try:
    packaged.package_file('sklearn', 'datasets', 'data', 'digits.csv.gz')
    packaged.package_file('skimage', 'data', 'astronaut.png')
    return True
  except tasks.MissingSystemDataError:
    return False


@pytest.mark.slow
@absltest.skipUnless(_packages_installed(), 'needs the offline2 extra')
class V2TinyBuildTest(absltest.TestCase):

  def test_build_validate_export(self):
    config = presets.v2_tiny_config()
    with tempfile.TemporaryDirectory() as d:
      results = build.build(config, d)
      self.assertLen(results, 2 * 2)
      out = os.path.join(d, 'recipe')
      recipe.validate(config, d, list(config.targets), [2, 4], out)
      report = recipe.agreement(recipe.read(out), min_models=2)
      with open(os.path.join(out, 'recipe.md'), 'w') as f:
        f.write(recipe.format_markdown(report))
      export_dir = os.path.join(d, 'export')
      export.export_artifacts(config, d, export_dir, probe_size=20,
                              graphs=False)
      with open(os.path.join(export_dir, 'README.md')) as f:
        card = f.read()
      for section in ('## Recipe validation', '## Proxy', 'UCI handwritten',
                      'build_benchmark.py:v2'):
        self.assertIn(section, card)
      with open(os.path.join(export_dir, 'proxy_probe.json')) as f:
        probe_ = json.load(f)
      self.assertEqual(set(probe_['targets']), set(config.targets))
      # Packaged-data probes ship their pixels.
      with np.load(os.path.join(export_dir, 'probes', 'digits_all.npz')) as z:
        self.assertIn('images', z)
