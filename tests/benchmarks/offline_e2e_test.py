"""End to end on a real mini offline build: images protocol, demo, recommend.

The module builds F's tiny configuration once (2 architectures x 2 models,
pretrained and fine-tuned for real) with four procedural targets, so that
leave-one-task-out keeps three training tasks for the embedding map, and
exports its artifacts to a temp dir. Everything below reads only those
artifacts, as a fresh clone reads the committed ones.

References are independent: the zoo's features and source-head outputs are
recomputed with `offline.load_model` (backbone / `Classifier.apply`, not the
evaluator's fused jitted pass), estimators per model with `get_estimator`,
metrics with scipy.stats (`weightedtau`, `pearsonr`) and NumPy.
"""

import csv
import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image
import pytest
from scipy import stats

from fennec_jax.benchmarks import images as images_protocol
from fennec_jax.benchmarks import offline
from fennec_jax.benchmarks.offline import build
from fennec_jax.benchmarks.offline import demo as offline_demo
from fennec_jax.benchmarks.offline import export
from fennec_jax.benchmarks.offline import source as offline_source
from fennec_jax.data import sources
from fennec_jax.estimators import registry

pytestmark = pytest.mark.slow  # A real build, then every command on it.

_TARGETS = ('shape_color', 'shape_kind', 'texture_kind', 'count_dots')
_ESTIMATORS = ('logme', 'leep', 'nce')
_TMP = None
_ART = None


def setUpModule():
  global _TMP, _ART
  _TMP = tempfile.mkdtemp()
  config = build.tiny_config()
  config.targets = list(_TARGETS)
  config.data = 'direct'  # Same arrays as tfds, without preparing them.
  work = os.path.join(_TMP, 'work')
  build.build(config, work)
  _ART = os.path.join(_TMP, 'artifacts')
  export.export_artifacts(config, work, _ART, graphs=True)


def tearDownModule():
  shutil.rmtree(_TMP, ignore_errors=True)


def _reference_outputs(model_id, images):
  """(features, source probabilities) by the plain modules, no fusion."""
  x = offline.preprocess(images)
  module, variables = offline.load_model(model_id, _ART)
  feats = np.asarray(module.apply(variables, x, train=False))
  clf, clf_vars = offline.load_model(model_id, _ART, head=True)
  logits = np.asarray(clf.apply(clf_vars, x, train=False), np.float64)
  meta = {r['model']: r for r in offline.model_table(_ART)}[model_id]
  logits = logits[:, :int(meta['source_classes'])]
  probs = np.exp(logits - logits.max(1, keepdims=True))
  return feats, probs / probs.sum(1, keepdims=True)


class ImagesProtocolTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.out = os.path.join(_TMP, 'eval')
    cls.history = offline.load(_ART)
    cls.results, cls.paths = images_protocol.run_images(
        cls.out, data_dir=_ART, k_shots=(0, 1), num_seeds=1,
        estimators=_ESTIMATORS)

  def test_every_method_and_target(self):
    with open(self.paths['csv']) as f:
      reader = csv.DictReader(f)
      rows = list(reader)
    self.assertEqual(reader.fieldnames, [
        'method', 'k_shot', 'target', 'pearson', 'weighted_tau',
        'top1_regret', 'seconds_per_target'])
    methods = (['popularity', 'fennec', 'fennec_ridge', 'fennec_paper']
               + list(_ESTIMATORS))
    self.assertEqual(self.results.methods, methods)
    for method in methods:
      for k in ('0', '1'):
        got = {r['target'] for r in rows
               if r['method'] == method and r['k_shot'] == k}
        self.assertEqual(got, set(_TARGETS) | {'MEAN'}, (method, k))
    for name in ('md', 'png', 'time_png', 'pred_png'):
      self.assertGreater(os.path.getsize(self.paths[name]), 0, name)

  def test_estimator_metrics_match_scipy_recomputation(self):
    target = 'shape_kind'
    j = self.history.task_index(target)
    true = self.history.scores[:, j]
    images, labels = offline.load_probe(target, _ART)
    outs = [_reference_outputs(m, images) for m in self.history.model_ids]
    logme = np.array([registry.get_estimator('logme')(f, labels)
                      for f, _ in outs])
    leep = np.array([registry.get_estimator('leep')(
        labels=labels, source_probs=p) for _, p in outs])
    for name, scores in (('logme', logme), ('leep', leep)):
      np.testing.assert_allclose(self.results.predictions[name][target],
                                 scores, rtol=2e-3, atol=2e-4)
      # K = 0: every model is scored; estimators ignore the draws.
      row = [r for r in self.results.rows if r.method == name
             and r.k_shot == 0 and r.target == target][0]
      if np.ptp(true) > 0 and np.ptp(scores) > 0:
        self.assertAlmostEqual(row.weighted_tau,
                               stats.weightedtau(scores, true)[0], places=4)
        # float16 weights: the fused pass and this one differ in ~1e-4.
        self.assertAlmostEqual(row.pearson, stats.pearsonr(scores, true)[0],
                               delta=2e-3)
      self.assertAlmostEqual(row.top1_regret,
                             true.max() - true[np.argmax(scores)], places=5)

  def test_fennec_prediction_gives_its_metrics(self):
    for method in ('fennec', 'fennec_ridge', 'fennec_paper', 'popularity'):
      for target in _TARGETS:
        true = self.history.scores[:, self.history.task_index(target)]
        pred = self.results.predictions[method][target]
        self.assertTrue(np.all(np.isfinite(pred)), (method, target))
        row = [r for r in self.results.rows if r.method == method
               and r.k_shot == 0 and r.target == target][0]
        if np.sum(pred == pred.max()) == 1:  # Ties: the order is arbitrary.
          self.assertAlmostEqual(row.top1_regret,
                                 true.max() - true[np.argmax(pred)],
                                 places=5)
        if np.ptp(true) > 0 and np.ptp(pred) > 0:
          self.assertAlmostEqual(row.weighted_tau,
                                 stats.weightedtau(pred, true)[0], places=4)


class DemoAndRecommendTest(absltest.TestCase):

  def test_demo_shows_actual_accuracies(self):
    history = offline.load(_ART)
    out = offline_demo.demo(task='texture_kind', top=5, data_dir=_ART)
    j = history.task_index('texture_kind')
    self.assertLen(out.rows, history.num_models)  # top clipped to the zoo.
    preds = [p for _, p, _, _ in out.rows]
    self.assertEqual(preds, sorted(preds, reverse=True))
    for model_id, pred, std, actual in out.rows:
      self.assertEqual(actual, history.scores[history.model_index(model_id),
                                              j])
      self.assertTrue(np.isfinite(pred) and std > 0)
    self.assertIn('texture_kind', offline_demo.format_demo(out))

  def test_recommend_from_image_folder_equals_array_path(self):
    images, labels = offline.load_probe('shape_kind', _ART)
    folder = self.enterContext(tempfile.TemporaryDirectory())
    for i in range(0, len(images), 2):  # Lossless PNG, native size.
      d = os.path.join(folder, f'class_{labels[i]:02d}')
      os.makedirs(d, exist_ok=True)
      Image.fromarray(images[i]).save(os.path.join(d, f'{i:04d}.png'))
    src = sources.FolderSource(folder)
    rec, fennec = offline_demo.recommend_offline(src, top=3,
                                                labels=src.labels,
                                                data_dir=_ART)
    # The folder is read in sorted-path order; file names give the index.
    keep = np.array([int(os.path.basename(n)[:4]) for n in src.names])
    self.assertEqual(sorted(keep), list(range(0, len(images), 2)))
    # Class sub-folders are named by label, so folder labels are the same.
    np.testing.assert_array_equal(src.labels, labels[keep])
    emb = offline_demo.images_to_embedding(
        images[keep], offline_source.OfflineSource(_ART), images.shape[1:],
        labels=labels[keep])
    ref = fennec.recommend(task_embeddings=emb[None], top=3)
    self.assertEqual(rec.model_ids, ref.model_ids)
    np.testing.assert_allclose(rec.all_predicted, ref.all_predicted,
                               rtol=1e-5, atol=1e-6)
    self.assertTrue(np.all(np.diff(rec.predicted[0]) <= 0))

  def test_images_of_another_size_and_bad_input(self):
    images, _ = offline.load_probe('shape_kind', _ART)
    big = [np.asarray(Image.fromarray(im).resize((40, 40))) for im in
           images[:20]]
    rec, _ = offline_demo.recommend_offline(big, top=2, data_dir=_ART)
    self.assertTrue(np.all(np.isfinite(rec.all_predicted)))
    with self.assertRaisesRegex(ValueError, r'shape \(28, 28, 2\)'):
      offline_demo.recommend_offline([np.zeros((28, 28, 2), np.uint8)],
                                    data_dir=_ART)
    with self.assertRaisesRegex(ValueError, 'dtype float32'):
      offline_demo.recommend_offline([np.zeros((28, 28, 3), np.float32)],
                                    data_dir=_ART)
    with self.assertRaisesRegex(ValueError, 'no images'):
      offline_demo.recommend_offline([], data_dir=_ART)
    with self.assertRaisesRegex(ValueError, 'not in the repository'):
      offline_demo.recommend_offline(big, observed={'no_such_model': 0.5},
                                    data_dir=_ART)


if __name__ == '__main__':
  absltest.main()
