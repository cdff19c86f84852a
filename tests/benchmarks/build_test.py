"""Tests of the offline benchmark builder: tiny build, kill-and-resume, errors.

The kill test runs the tiny build in a subprocess, SIGKILLs it once the
first results are on disk, restarts it and checks that no finished pair was
lost or redone. The vmapped training step is checked against training each
model alone, and the masked evaluation against a NumPy reference.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fennec_jax import models
from fennec_jax import sharding
from fennec_jax.benchmarks import offline
from fennec_jax.benchmarks.offline import build
from fennec_jax.benchmarks.offline import export
from fennec_jax.benchmarks.offline import zoo
from fennec_jax.data import tasks

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _rows(path):
  """(header, data rows) of a results file; ('', []) while it is still empty."""
  with open(path) as f:
    lines = f.read().splitlines()
  return (lines[0], lines[1:]) if lines else ('', [])


class ZooPlanTest(absltest.TestCase):

  def test_full_zoo_families_sizes_and_distinct_sources(self):
    config = build.default_config()
    plan = zoo.zoo_plan(config)
    self.assertGreaterEqual(len(plan), 30)
    self.assertGreaterEqual(len({m.family for m in plan}), 5)
    self.assertEqual({m.size for m in plan}, {'s', 'l'})
    self.assertLen({m.source for m in plan}, len(plan))
    self.assertLen({m.model_id for m in plan}, len(plan))
    # Every architecture sees at least two source domains.
    for arch in {m.arch for m in plan}:
      doms = {tasks.get_task(m.source).domain for m in plan if m.arch == arch}
      self.assertGreaterEqual(len(doms), 2, arch)
    self.assertEmpty(set(config.proxy.sources) & set(config.targets))

  def test_wrong_number_of_sources(self):
    config = build.tiny_config()
    config.sources = config.sources[:3]
    with self.assertRaisesRegex(ValueError, 'need exactly 4'):
      zoo.zoo_plan(config)


class StepTest(absltest.TestCase):

  def test_vmapped_training_equals_one_by_one(self):
    module = zoo.make_classifier('cnn_test_tiny', 8)
    mesh = sharding.make_mesh(1)
    make = build._make_trainer  # pylint: disable=protected-access
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (2, 10, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 5, (2, 10)).astype(np.int32)
    n = np.array([10, 7], np.int32)
    mask = np.arange(8) < 5
    inits = [module.init(jax.random.key(i), jnp.zeros((1, 8, 8, 3)))
             for i in range(2)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *inits)
    key = jax.random.key(3)
    vm, vloss = make(module, 3, 4, 1e-2, 1e-4, 1, mesh, True, False)(
        stacked, x, y, n, np.stack([mask, mask]), key)
    single = make(module, 3, 4, 1e-2, 1e-4, 1, mesh, False, False)
    for i in range(2):
      one, loss = single(inits[i], x[i], y[i], n[i], mask, key)
      np.testing.assert_allclose(vloss[i], loss, rtol=1e-4, atol=1e-5)
      jax.tree.map(lambda a, b, i=i: np.testing.assert_allclose(
          a[i], b, rtol=1e-4, atol=1e-5), vm, one)
    # Training moved every model's parameters.
    for i in range(2):
      moved = jax.tree.map(lambda a, b, i=i: not np.allclose(a[i], b), vm,
                           inits[i])
      self.assertTrue(any(jax.tree.leaves(moved['params'])), i)

  def test_masked_eval_matches_numpy(self):
    module = zoo.make_classifier('mlp_test_tiny', 6)
    variables = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 4, 12).astype(np.int32)
    mask = np.arange(6) < 4
    evaluate = build._make_evaluator(module, 4, False, True)  # pylint: disable=protected-access
    acc = evaluate(variables, x, y, np.int32(10), mask)
    # NumPy reference: logits from the weights (flax's gelu is the tanh
    # approximation), argmax over the 4 real classes, 10 valid rows.
    p = jax.tree.map(np.asarray, variables['params'])
    z = x.reshape(12, -1).astype(np.float32) / 127.5 - 1.0
    z = z @ p['backbone']['dense_0']['kernel'] + p['backbone']['dense_0'][
        'bias']
    h_tanh = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (
        z + 0.044715 * z ** 3)))
    logits = h_tanh @ p['head']['kernel'] + p['head']['bias']
    pred = np.argmax(logits[:, :4], axis=1)
    self.assertAlmostEqual(float(acc), float(np.mean(pred[:10] == y[:10])),
                           places=5)


class ResultsFileTest(absltest.TestCase):

  def test_torn_last_line_is_repaired_and_logged(self):
    d = self.enterContext(tempfile.TemporaryDirectory())
    path = os.path.join(d, build.RESULTS_FILE)
    with open(path, 'w') as f:
      f.write(build.RESULTS_HEADER + '\na,t1,0.5,1.0\nb,t1,0.2')
    with self.assertLogs(level='WARNING') as logs:
      results = build.read_results(path)
    self.assertEqual(results, {('a', 't1'): 0.5})
    self.assertIn('incomplete', '\n'.join(logs.output))
    with open(path) as f:
      self.assertEqual(f.read(), build.RESULTS_HEADER + '\na,t1,0.5,1.0\n')

  def test_corrupted_row_names_file_and_row(self):
    d = self.enterContext(tempfile.TemporaryDirectory())
    path = os.path.join(d, build.RESULTS_FILE)
    with open(path, 'w') as f:
      f.write(build.RESULTS_HEADER + '\na,t1,0.5,1.0\nb,t1,zz,1\nc,t1,0.1,1\n')
    with self.assertRaisesRegex(ValueError, r'results.csv, row 3.*malformed'):
      build.read_results(path)
    with open(path, 'w') as f:
      f.write(build.RESULTS_HEADER + '\na,t1,0.5,1.0\na,t1,0.5,1.0\n')
    with self.assertRaisesRegex(ValueError, 'row 3.*twice'):
      build.read_results(path)
    with open(path, 'w') as f:
      f.write('x,y\n')
    with self.assertRaisesRegex(ValueError, 'header'):
      build.read_results(path)


class BuildTest(absltest.TestCase):

  def test_errors_before_any_work(self):
    d = self.enterContext(tempfile.TemporaryDirectory())
    config = build.tiny_config()
    config.targets = ['shape_color', 'no_such_task']
    with self.assertRaisesRegex(ValueError, "Unknown task 'no_such_task'"):
      build.build(config, d)
    self.assertEmpty(os.listdir(d))
    config = build.tiny_config()
    config.targets = ['src_count_big']
    with self.assertRaisesRegex(ValueError, 'is a source task'):
      build.build(config, d)

  def test_workdir_of_another_config_is_refused(self):
    d = self.enterContext(tempfile.TemporaryDirectory())
    build.check_workdir(build.tiny_config(), d)
    other = build.tiny_config()
    other.finetune.steps = 7
    with self.assertRaisesRegex(ValueError,
                                'different configuration.*finetune'):
      build.check_workdir(other, d)
    build.check_workdir(build.tiny_config(), d)  # Same config: fine.

  @pytest.mark.slow
  def test_kill_and_resume_loses_and_duplicates_nothing(self):
    d = self.enterContext(tempfile.TemporaryDirectory())
    path = os.path.join(d, build.RESULTS_FILE)
    code = ('import sys; from fennec_jax.benchmarks.offline import build; '
            'build.build(build.tiny_config(), sys.argv[1])')
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    proc = subprocess.Popen([sys.executable, '-c', code, d], env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # Whatever happens below, never leave the builder running (it would keep
    # writing into the temporary directory and outlive the test).
    self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
    deadline = time.time() + 240
    before = []
    while time.time() < deadline and proc.poll() is None:
      if os.path.exists(path):
        _, before = _rows(path)
        if before:
          break
      time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    self.assertEqual(proc.returncode, -signal.SIGKILL,
                     'the build finished before it could be killed')
    self.assertNotEmpty(before)
    header, killed_rows = _rows(path)
    results = build.build(build.tiny_config(), d)
    header, rows = _rows(path)
    self.assertEqual(header, build.RESULTS_HEADER)
    pairs = [tuple(r.split(',')[:2]) for r in rows]
    self.assertLen(pairs, len(set(pairs)))  # No duplicates.
    self.assertLen(pairs, 8)  # 4 models x 2 targets: nothing lost.
    self.assertEqual(rows[:len(killed_rows)], killed_rows)  # Kept verbatim.
    self.assertLen(results, 8)
    # A second restart is a no-op.
    build.build(build.tiny_config(), d)
    self.assertEqual(_rows(path)[1], rows)
    with open(os.path.join(d, 'zoo', 'proxy.json')) as f:
      meta = json.load(f)
    self.assertEqual(meta['arch'], 'offline_mlp_s')
    self._check_export(d, results)

  def _check_export(self, d, results):
    out = os.path.join(d, 'artifacts')
    export.export_artifacts(build.tiny_config(), d, out, graphs=False)
    h = offline.load(out)
    self.assertEqual(h.num_observed, len(results))
    for (m, t), s in results.items():
      self.assertAlmostEqual(h.scores[h.model_index(m), h.task_index(t)], s,
                             places=5)
    # float16 weights give the features of the float32 checkpoint.
    model_id = zoo.zoo_plan(build.tiny_config())[2].model_id
    ref_vars, meta = build.load_pretrained(d, model_id)
    module, variables = offline.load_model(model_id, out)
    x = offline.preprocess(offline.load_probe('shape_color', out)[0][:8])
    ref = models.get_model(meta['arch'], num_classes=0).apply(
        {k: c['backbone'] for k, c in ref_vars.items()}, x)
    np.testing.assert_allclose(module.apply(variables, x), ref, rtol=2e-2,
                               atol=2e-2)
    with open(os.path.join(out, 'README.md')) as f:
      self.assertIn('shape_color', f.read())


if __name__ == '__main__':
  absltest.main()
