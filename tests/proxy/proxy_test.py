"""load_proxy / Proxy against timm and transformers; `fennec features`."""

import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image

from fennec_jax.data import sources
from fennec_jax.proxy import extract
from fennec_jax.proxy import pipeline
from fennec_jax.proxy import proxy as proxy_lib

try:
  import torch  # pylint: disable=g-import-not-at-top
  from timm.models import vision_transformer as timm_vit  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  _SKIP = None
except ImportError as e:  # pragma: no cover - depends on the extra.
  _SKIP = f'interop extra not installed ({e}): pip install fennec_jax[interop]'


def _tempdir(test):
  path = tempfile.mkdtemp()
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def _rel_err(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return np.max(np.abs(got - want)) / np.max(np.abs(want))


def _randomize_(module):
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
  return module.eval()


class ProxyTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    if _SKIP:
      self.skipTest(_SKIP)
    torch.set_num_threads(1)
    self.x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(
        np.float32)
    self.nchw = torch.from_numpy(self.x.transpose(0, 3, 1, 2).copy())

  def test_timm_vit_embed_normalized_equals_timm(self):
    ref = _randomize_(timm_vit.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
        num_classes=10))
    # The proxy drops the 10-class head (num_classes=0), as timm does.
    proxy = proxy_lib.load_proxy('vit_test_tiny', ref.state_dict())
    ref.reset_classifier(0)
    with torch.no_grad():
      want = ref(self.nchw).numpy()
    self.assertEqual(proxy.feature_dim, 32)
    self.assertLessEqual(_rel_err(proxy.embed_normalized(self.x), want), 1e-4)
    # embed(uint8) applies the checkpoint's own mean/std (0.5; crop 0.9 means
    # a 32 -> 36 resize and a center crop, as timm's eval transform).
    self.assertEqual(proxy.preprocessing.mean, (0.5, 0.5, 0.5))
    imgs = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3),
                                             np.uint8)
    x = np.asarray(extract.to_model_input(imgs, proxy.preprocessing))
    np.testing.assert_allclose(proxy.embed(imgs, batch_size=8),
                               proxy.embed_normalized(x), rtol=1e-5,
                               atol=1e-5)

  def test_clip_embed_normalized_equals_image_embeds(self):
    cfg = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16)
    ref = _randomize_(transformers.CLIPVisionModelWithProjection(cfg))
    path = _tempdir(self)
    ref.save_pretrained(path, safe_serialization=True)
    proxy = proxy_lib.load_proxy('clip_test_tiny', path)
    with torch.no_grad():
      want = ref(pixel_values=self.nchw).image_embeds.numpy()
    self.assertLessEqual(_rel_err(proxy.embed_normalized(self.x), want), 1e-4)
    self.assertEqual(proxy.preprocessing.mean, proxy_lib.CLIP_MEAN)

  def test_checkpoint_of_another_architecture(self):
    ref = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32,
                                     depth=2, num_heads=2, num_classes=0)
    with self.assertRaisesRegex(ValueError, 'does not match the model'):
      proxy_lib.load_proxy('dinov2_test_tiny', ref.state_dict())


class FeaturesTest(absltest.TestCase):

  def _folder(self):
    root = _tempdir(self)
    rng = np.random.default_rng(0)
    for cls, n in (('cat', 3), ('dog', 2)):
      os.makedirs(os.path.join(root, cls))
      for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
            os.path.join(root, cls, f'{i}.png'))
    return root

  def test_task_features_match_per_image_embeddings(self):
    root = self._folder()
    proxy = proxy_lib.load_proxy('vit_test_tiny', seed=3)
    src = sources.FolderSource(root)
    out = pipeline.task_features(proxy, src, batch_size=8)
    np.testing.assert_array_equal(out['labels'], [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(out['names'][0], os.path.join('cat',
                                                                '0.png'))
    single = proxy.embed(src[4][None], batch_size=8)
    np.testing.assert_allclose(out['features'][4], single[0], rtol=1e-5,
                               atol=1e-5)
    unit = out['features'] / np.linalg.norm(out['features'], axis=1,
                                            keepdims=True)
    np.testing.assert_allclose(out['task_embedding'], unit.mean(0),
                               rtol=1e-5, atol=1e-6)
    probe = pipeline.task_features(proxy, src, probe=2, batch_size=8)
    np.testing.assert_array_equal(np.bincount(probe['labels']), [1, 1])

  def test_cli_writes_npz(self):
    root = self._folder()
    out = os.path.join(_tempdir(self), 'task.npz')
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    subprocess.run(
        [sys.executable, '-m', 'fennec_jax.cli', 'features',
         '--model=vit_test_tiny', '--random_weights', f'--images={root}',
         f'--out={out}', '--batch_size=8'],
        check=True, env=env, capture_output=True, timeout=300)
    with np.load(out) as npz:
      self.assertEqual(npz['features'].shape, (5, 32))
      np.testing.assert_array_equal(npz['labels'], [0, 0, 0, 1, 1])
      self.assertEqual(npz['task_embedding'].shape, (32,))
      self.assertEqual(str(npz['model']), 'vit_test_tiny')
    bad = subprocess.run(
        [sys.executable, '-m', 'fennec_jax.cli', 'features',
         '--model=vit_test_tiny', f'--images={root}', f'--out={out}'],
        env=env, capture_output=True, text=True, timeout=300)
    self.assertNotEqual(bad.returncode, 0)
    self.assertIn('--checkpoint is required', bad.stderr)

  def test_small_zoo_models_are_proxies(self):
    # These modules have no dtype field: float32 works, another dtype is a
    # clear error, as is an attention option on a model without attention.
    src = sources.FolderSource(self._folder())
    for name, dim in (('cnn_test_tiny', 8), ('mlp_test_tiny', 16),
                      ('mixer_test_tiny', 8)):
      proxy = proxy_lib.load_proxy(name, seed=0)
      out = pipeline.task_features(proxy, src, batch_size=8)
      self.assertEqual(out['features'].shape, (5, dim), name)
      self.assertTrue(np.isfinite(out['features']).all(), name)
      with self.assertRaisesRegex(ValueError, f"'{name}' computes in float32 "
                                  'only; dtype bfloat16'):
        proxy_lib.load_proxy(name, dtype='bfloat16')
    with self.assertRaisesRegex(ValueError, "'resnet_tiny' has no attention"):
      proxy_lib.load_proxy('resnet_tiny', attention_impl='cudnn')

  def test_cli_small_zoo_model(self):
    root = self._folder()
    out = os.path.join(_tempdir(self), 'task.npz')
    proc = subprocess.run(
        [sys.executable, '-m', 'fennec_jax.cli', 'features',
         '--model=cnn_test_tiny', '--random_weights', f'--images={root}',
         f'--out={out}', '--batch_size=8'],
        env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True,
        text=True, timeout=300)
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    with np.load(out) as npz:
      self.assertEqual(npz['features'].shape, (5, 8))
      self.assertEqual(str(npz['model']), 'cnn_test_tiny')


if __name__ == '__main__':
  absltest.main()
