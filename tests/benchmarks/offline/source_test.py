"""Tests of `OfflineSource`: one compile per model, reference outputs, cache.

References are the loader's plain modules (`load_model(...).apply`, the
source head's logits and a NumPy softmax), not the source's fused pass; the
compile count is read from the source's per-model trace counter.
"""

from absl.testing import absltest
import jax
import numpy as np

from fennec_jax.benchmarks.offline import loader
from fennec_jax.benchmarks.offline import source as source_lib

# Targets with 3, 10 and 4 classes, and probes of their full size or cut.
_PROBES = (('shape_kind', None), ('glyph_digits', 100), ('count_dots', 37),
           ('shape_kind', 500))


def _models():
  table = loader.model_table()
  return [table[0]['model'], table[-1]['model'], loader.PROXY_ID]


def _reference(model_id, images):
  """(features, source probabilities) from the loader's plain modules."""
  x = loader.preprocess(images)
  module, variables = loader.load_model(model_id)
  feats = np.asarray(module.apply(variables, x, train=False))
  clf, clf_vars = loader.load_model(model_id, head=True)
  logits = np.asarray(clf.apply(clf_vars, x, train=False), np.float64)
  meta = {r['model']: r for r in loader.model_table(
      include_proxy=True)}[model_id]
  logits = logits[:, :int(meta['source_classes'])]
  probs = np.exp(logits - logits.max(1, keepdims=True))
  return feats, probs / probs.sum(1, keepdims=True)


class OfflineSourceTest(absltest.TestCase):

  def test_each_model_compiles_once_over_targets_and_probe_sizes(self):
    source = source_lib.OfflineSource()
    sizes = set()
    for task, n in _PROBES:
      images, labels = source.probe(task)
      images = images[:n]
      sizes.add((len(images), len(np.unique(labels))))
      for model_id in _models():
        source.warm(model_id, images)
        feats = source.model_features(model_id, images)
        probs = source.source_probs(model_id, images)
        self.assertLen(feats, len(images))
        self.assertLen(probs, len(images))
    self.assertGreaterEqual(len(sizes), 3)  # Sizes and class counts vary.
    self.assertEqual(source.trace_counts, {m: 1 for m in _models()})

  def test_a_recompile_is_caught(self):
    # The counter is live: once the compiled pass is dropped, the next call
    # traces again and is counted.
    source = source_lib.OfflineSource()
    images = source.probe('count_dots')[0][:10]
    source.warm(loader.PROXY_ID, images)
    source.proxy_features(images)
    self.assertEqual(source.trace_counts, {loader.PROXY_ID: 1})
    jax.clear_caches()
    source.warm(loader.PROXY_ID, images)
    self.assertEqual(source.trace_counts, {loader.PROXY_ID: 2})

  def test_features_and_probs_match_the_plain_modules(self):
    source = source_lib.OfflineSource(chunk=16)
    images = source.probe('glyph_digits')[0][:37]  # 3 chunks, 11 padded rows.
    for model_id in _models():
      feats, probs = _reference(model_id, images)
      np.testing.assert_allclose(source.model_features(model_id, images),
                                 feats, rtol=1e-4, atol=1e-4)
      np.testing.assert_allclose(source.source_probs(model_id, images),
                                 probs, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(source.proxy_features(images),
                                  source.model_features(loader.PROXY_ID,
                                                        images))

  def test_outputs_are_cached_per_model_and_images(self):
    source = source_lib.OfflineSource()
    images = source.probe('count_dots')[0][:20]
    model_id = _models()[0]
    feats = source.model_features(model_id, images)
    self.assertIs(source.model_features(model_id, images), feats)
    copy = images.copy()
    again = source.model_features(model_id, copy)
    self.assertIsNot(again, feats)  # Another array: a new pass.
    np.testing.assert_array_equal(again, feats)


if __name__ == '__main__':
  absltest.main()
