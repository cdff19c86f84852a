"""Tests of the committed offline benchmark artifacts and their loader.

The ground truth is re-read with the csv module and compared with the
`History`; parameter counts are checked against the model registry; the
"worth ranking on" properties (spread, no single winner) are recomputed with
NumPy from the raw CSV; probes regenerate bit-exactly (SHA-256). Reading
the artifacts needs no optimizer: the loader's imports are checked in a fresh
interpreter.
"""

import csv
import json
import os
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import absltest
import networkx as nx
import numpy as np
import pytest

from fennec_jax import models
from fennec_jax.benchmarks import offline


_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _modules_after_import(module: str, bare_root: bool) -> set[str]:
  """`sys.modules` of a fresh interpreter after `import module`.

  With `bare_root`, the `fennec_jax` package is registered without running
  its `__init__` (whose re-exports pull in the recommender and optax), so
  only `module`'s own imports count.
  """
  code = textwrap.dedent(f'''
      import importlib.util, json, sys, types
      if {bare_root!r}:
        spec = importlib.util.find_spec('fennec_jax')
        root = types.ModuleType('fennec_jax')
        root.__path__ = list(spec.submodule_search_locations)
        sys.modules['fennec_jax'] = root
      import {module}
      print(json.dumps(sorted(sys.modules)))
      ''')
  out = subprocess.run([sys.executable, '-c', code], cwd=_ROOT, check=True,
                       capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'))
  return set(json.loads(out.stdout.splitlines()[-1]))


def _csv(name):
  with open(os.path.join(offline.DATA_DIR, name), newline='') as f:
    return list(csv.DictReader(f))


class GroundTruthTest(absltest.TestCase):

  def test_history_matches_raw_csv(self):
    h = offline.load()
    rows = _csv('results.csv')
    self.assertGreaterEqual(h.num_models, 30)
    self.assertGreaterEqual(h.num_tasks, 24)
    self.assertLen(rows, h.num_observed)
    # The builder finishes a target for every model before the next one, so
    # each observed column is complete (a partial build has whole columns).
    observed = h.mask.any(axis=0)
    self.assertTrue(np.all(h.mask[:, observed]))
    self.assertGreaterEqual(observed.sum(), 1)
    for r in rows:
      i, j = h.model_index(r['model']), h.task_index(r['task'])
      self.assertAlmostEqual(h.scores[i, j], float(r['score']), places=6)
    self.assertTrue(np.all((h.scores >= 0) & (h.scores <= 1)))
    self.assertEqual(h.score_name, 'test_accuracy')

  def test_model_metadata(self):
    h = offline.load()
    fam = h.model_metadata['family']
    self.assertGreaterEqual(len(set(fam.tolist())), 5)
    self.assertEqual(set(h.model_metadata['size'].tolist()), {'s', 'l'})
    self.assertLen(set(h.model_metadata['source'].tolist()), h.num_models)
    for row in offline.model_table(include_proxy=True):
      self.assertEqual(int(row['num_params']), models.num_params(row['arch']),
                       row['model'])
      self.assertGreater(row['source_accuracy'],
                         1.0 / row['source_classes'], row['model'])

  def test_worth_ranking_on(self):
    rows = _csv('results.csv')
    tasks = sorted({r['task'] for r in rows})
    ids = sorted({r['model'] for r in rows})
    acc = np.full((len(ids), len(tasks)), np.nan)
    for r in rows:
      acc[ids.index(r['model']), tasks.index(r['task'])] = float(r['score'])
    spread = acc.max(0) - acc.min(0)
    self.assertGreaterEqual(np.mean(spread >= 0.10), 0.6)
    winners = np.bincount(acc.argmax(0), minlength=len(ids))
    self.assertLessEqual(winners.max(), len(tasks) // 2)

  def test_missing_artifacts_error_says_what_to_do(self):
    d = self.enterContext(tempfile.TemporaryDirectory())
    with self.assertRaisesRegex(FileNotFoundError, 'build-benchmark'):
      offline.load(d)


class WeightsProbesGraphsTest(absltest.TestCase):

  def test_models_and_proxy_produce_features(self):
    images, _ = offline.load_probe('shape_kind')
    x = offline.preprocess(images[:4])
    table = offline.model_table()
    picks = [table[0]['model'], table[len(table) // 2]['model'],
             table[-1]['model']]
    if any(r['model'] == offline.PROXY_ID
           for r in offline.model_table(include_proxy=True)):
      picks.append(offline.PROXY_ID)
    for model_id in picks:
      module, variables = offline.load_model(model_id)
      feats = np.asarray(module.apply(variables, x))
      self.assertEqual(feats.shape[0], 4)
      self.assertTrue(np.all(np.isfinite(feats)), model_id)
      self.assertGreater(float(np.std(feats)), 0.0, model_id)
    with self.assertRaisesRegex(ValueError, 'Unknown offline model'):
      offline.load_model('nope')

  def test_source_head_reproduces_recorded_source_accuracy(self):
    row = next(r for r in offline.model_table()
               if r['source'] == 'src_shape_kind4')
    module, variables = offline.load_model(row['model'], head=True)
    from fennec_jax.data import tasks  # pylint: disable=g-import-not-at-top
    size = next(int(t['test_size']) for t in offline.task_table()
                if t['task'] == 'src_shape_kind4')
    x, y = tasks.generate('src_shape_kind4', 'test', size)
    logits = np.asarray(module.apply(variables, offline.preprocess(x)))
    acc = np.mean(np.argmax(logits[:, :4], axis=1) == y)
    # float16 weights vs the float32 checkpoint the build evaluated.
    self.assertAlmostEqual(acc, row['source_accuracy'], delta=0.02)
    self.assertGreater(acc, 0.25 + 0.1)  # Chance: 0.25.

  def test_probes(self):
    targets = [r for r in offline.task_table() if r['role'] == 'target']
    self.assertGreaterEqual(len(targets), 24)
    x, y = offline.load_probe('glyph_digits')
    self.assertLessEqual(len(y), 500)
    self.assertEqual(x.shape[1:], (28, 28, 3))
    counts = np.bincount(y)
    self.assertLessEqual(counts.max() - counts.min(), 1)  # Class-balanced.
    with self.assertNoLogs(level='WARNING'):  # Bit-exact regeneration.
      offline.load_probe('count_dots')
    xf, _ = offline.load_probe('fashion_all')  # Shipped pixels.
    self.assertEqual(xf.dtype, np.uint8)

  def test_graphs(self):
    for model_id in (offline.model_table()[0]['model'],
                     offline.model_table()[-1]['model']):
      g = offline.load_graph(model_id)
      self.assertTrue(nx.is_directed_acyclic_graph(g))
      self.assertGreater(g.number_of_nodes(), 5)
    vit = next(r['model'] for r in offline.model_table()
               if r['family'] == 'vit')
    ops = {a['op'] for _, a in offline.load_graph(vit).nodes(data=True)}
    self.assertIn('dot_general', ops)

  def test_data_card_lists_every_target(self):
    with open(os.path.join(offline.DATA_DIR, 'README.md')) as f:
      card = f.read()
    for r in offline.task_table():
      if r['role'] == 'target':
        self.assertIn(r['task'], card)


class ImportTest(absltest.TestCase):

  @pytest.mark.slow
  def test_loader_imports_neither_the_builder_nor_an_optimizer(self):
    loader = 'fennec_jax.benchmarks.offline.loader'
    build = 'fennec_jax.benchmarks.offline.build'
    own = _modules_after_import(loader, bare_root=True)
    self.assertIn(loader, own)
    self.assertNotIn(build, own)
    self.assertNotIn('optax', own)
    self.assertNotIn('tensorflow_datasets', own)
    # Through the real package root too, the builder stays out.
    self.assertNotIn(build, _modules_after_import(loader, bare_root=False))


if __name__ == '__main__':
  absltest.main()
