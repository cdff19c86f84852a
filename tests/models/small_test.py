"""Tests of the small zoo architectures against NumPy forward passes."""

from absl.testing import absltest
import jax
import numpy as np

from fennec_jax import models
from fennec_jax.models import small


def _gelu(x):  # flax's default: the tanh approximation.
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _ln(x, p, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']


def _conv_same(x, k, b):
  """3x3 stride-1 SAME convolution, NHWC, HWIO."""
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, w = x.shape[1:3]
  out = np.zeros((x.shape[0], h, w, k.shape[-1]))
  for i in range(3):
    for j in range(3):
      out += np.einsum('nhwc,co->nhwo', xp[:, i:i + h, j:j + w], k[i, j])
  return out + b


class SmallModelsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.x = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(
        np.float32)

  def _init(self, module):
    v = module.init(jax.random.key(0), self.x)
    return v, jax.tree.map(np.asarray, v['params'])

  def test_mlp_matches_numpy(self):
    module = small.MLP(hidden=(16, 8), num_classes=5)
    v, p = self._init(module)
    h = self.x.reshape(3, -1)
    for i in range(2):
      h = _gelu(h @ p[f'dense_{i}']['kernel'] + p[f'dense_{i}']['bias'])
    ref = h @ p['head']['kernel'] + p['head']['bias']
    np.testing.assert_allclose(module.apply(v, self.x), ref, rtol=1e-4,
                               atol=1e-5)

  def test_cnn_matches_numpy(self):
    module = small.PlainCNN(widths=(4, 6), num_classes=0)
    v, p = self._init(module)
    h = np.maximum(_conv_same(self.x, p['conv_0_0']['kernel'],
                              p['conv_0_0']['bias']), 0)
    h = h.reshape(3, 4, 2, 4, 2, 4).mean(axis=(2, 4))  # 2x2 average pool.
    h = np.maximum(_conv_same(h, p['conv_1_0']['kernel'],
                              p['conv_1_0']['bias']), 0)
    np.testing.assert_allclose(module.apply(v, self.x), h.mean(axis=(1, 2)),
                               rtol=1e-4, atol=1e-5)

  def test_mixer_matches_numpy(self):
    module = small.MlpMixer(patch_size=4, width=6, depth=1, tokens_mlp_dim=5,
                            channels_mlp_dim=7, num_classes=0)
    v, p = self._init(module)
    patches = self.x.reshape(3, 2, 4, 2, 4, 3).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(3, 4, 48)
    h = patches @ p['stem']['kernel'].reshape(48, 6) + p['stem']['bias']
    b = p['block_0']
    y = _ln(h, b['norm1']).transpose(0, 2, 1)
    y = _gelu(y @ b['token_fc1']['kernel'] + b['token_fc1']['bias'])
    y = y @ b['token_fc2']['kernel'] + b['token_fc2']['bias']
    h = h + y.transpose(0, 2, 1)
    y = _gelu(_ln(h, b['norm2']) @ b['channel_fc1']['kernel']
              + b['channel_fc1']['bias'])
    h = h + y @ b['channel_fc2']['kernel'] + b['channel_fc2']['bias']
    ref = _ln(h, p['norm']).mean(1)
    np.testing.assert_allclose(module.apply(v, self.x), ref, rtol=1e-4,
                               atol=1e-5)

  def test_offline_zoo_counts_by_formula(self):
    d = 28 * 28 * 3
    self.assertEqual(models.num_params('offline_mlp_s'),
                     d * 64 + 64 + 64 * 64 + 64)
    self.assertEqual(models.num_params('offline_cnn_s'),
                     (27 * 16 + 16) + (144 * 32 + 32) + (288 * 48 + 48))
    for name in ('offline_mlp_s', 'offline_cnn_l', 'offline_mixer_s',
                 'offline_vit_s', 'offline_resnet_s'):
      self.assertBetween(models.num_params(name), 10_000, 350_000, name)
    with self.assertRaisesRegex(ValueError, 'multiple of the patch'):
      small.MlpMixer(patch_size=3).init(jax.random.key(0), self.x)


if __name__ == '__main__':
  absltest.main()
