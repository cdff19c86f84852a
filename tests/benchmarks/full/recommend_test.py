"""A saved full-benchmark recommender ranks its models for new images with
the proxy it records, as Fennec does on the same features."""

import dataclasses
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image

from fennec_jax import history as history_lib
from fennec_jax import recommender
from fennec_jax import space as space_lib
from fennec_jax.benchmarks.full import checkpoints
from fennec_jax.benchmarks.full import recommend
from fennec_jax.data import sources
from fennec_jax.proxy import embed
from fennec_jax.proxy import proxy as proxy_lib

try:
  import transformers  # pylint: disable=g-import-not-at-top,unused-import
  _HAS_HF = True
except ImportError:
  _HAS_HF = False


@absltest.skipUnless(_HAS_HF, 'needs torch + transformers ([interop]).')
class RecommendImagesTest(absltest.TestCase):

  def test_ranks_as_fennec_on_the_proxy_features_of_the_probe(self):
    root = self.enterContext(tempfile.TemporaryDirectory())
    proxy_path = checkpoints.write_tiny_proxy(os.path.join(root, 'proxy'), 0)
    proxy = proxy_lib.load_proxy('clip_test_tiny', proxy_path)
    rng = np.random.default_rng(0)
    tasks = [f't{j}' for j in range(4)]
    models = [f'm{i}' for i in range(5)]
    scores = rng.uniform(50, 90, (5, 4))
    history = history_lib.History(
        model_ids=tuple(models), task_ids=tuple(tasks), scores=scores,
        mask=np.ones_like(scores, bool))
    emb = {t: proxy.embed(rng.integers(0, 256, (6, 32, 32, 3), np.uint8),
                          batch_size=8) for t in tasks}
    config = recommender.FennecConfig(space=space_lib.SpaceConfig(
        max_steps=20, seed=0))
    fennec = recommender.Fennec(config).fit(history, task_embeddings=emb)
    record = {'name': 'clip_test_tiny', 'checkpoint': proxy_path,
              'dtype': 'float32',
              'preprocessing': dataclasses.asdict(proxy.preprocessing),
              'probe_images': 4, 'seed': 3}
    saved = os.path.join(root, 'recommender', 'bench')
    recommend.save(fennec, record, saved)
    self.assertTrue(recommend.is_full_checkpoint(saved))

    folder = os.path.join(root, 'images')
    for c in ('a', 'b'):
      os.makedirs(os.path.join(folder, c))
      for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
            os.path.join(folder, c, f'{i}.png'))
    src = sources.FolderSource(folder)
    rec, loaded = recommend.recommend_images(saved, src, top=5,
                                             observed={'m1': 70.0},
                                             batch_size=8)
    # Independently: the class-balanced probe of 4 (seed 3), embedded by
    # the same proxy, through the fitted Fennec.
    idx = embed.probe_indices(len(src), src.labels, budget=4, seed=3)
    self.assertLen(idx, 4)
    feats = proxy.embed(np.stack([src[i] for i in idx]), batch_size=8)
    want = fennec.recommend(task_embeddings=[feats], observed=[{'m1': 70.0}],
                            top=5)
    self.assertEqual(loaded.model_ids, fennec.model_ids)
    self.assertEqual(list(rec.model_ids[0]), list(want.model_ids[0]))
    np.testing.assert_allclose(rec.predicted, want.predicted, rtol=1e-4)

    # The command line serves it (`fennec recommend --checkpoint --images`).
    root_dir = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))
    cli = subprocess.run(
        [sys.executable, '-m', 'fennec_jax.cli', 'recommend',
         f'--checkpoint={saved}', f'--images={folder}', '--top=3'],
        env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=root_dir),
        capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(cli.returncode, 0, cli.stderr[-2000:])
    ranked = [line.split()[1] for line in cli.stdout.splitlines()
              if line.strip()[:2] in ('1.', '2.', '3.')]
    self.assertLen(ranked, 3, cli.stdout)
    self.assertContainsSubset(ranked, fennec.model_ids)

  def test_bad_record_is_named(self):
    root = self.enterContext(tempfile.TemporaryDirectory())
    with open(os.path.join(root, recommend.PROXY_RECORD), 'w') as f:
      f.write('{"name": "x"}')
    with self.assertRaisesRegex(ValueError, r'proxy\.json: missing keys'):
      recommend.read_proxy_record(root)


if __name__ == '__main__':
  absltest.main()
