"""Tests of the ViT family: reference parameter counts and a NumPy forward."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from fennec_jax import models
from fennec_jax.models import vit

# Counted with timm 1.0.31 (1000-class heads; DINOv2 without head) and
# transformers' CLIPVisionModelWithProjection (OpenAI configs), random weights.
REFERENCE_PARAMS = {
    'vit_tiny_patch16_224': 5_717_416,
    'vit_small_patch16_224': 22_050_664,
    'vit_base_patch16_224': 86_567_656,
    'vit_base_patch32_224': 88_224_232,
    'vit_large_patch16_224': 304_326_632,
    'deit_base_patch16_224': 86_567_656,
    'dinov2_vit_s14': 22_056_192,  # timm vit_small_patch14_dinov2
    'clip_vit_b32': 87_849_216,
    'clip_vit_b16': 86_192_640,
    'clip_vit_l14': 303_966_208,
}


def _layer_norm(x, p, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']


def _numpy_vit(params, x, cfg):
  """Independent float64 NumPy forward pass written from the ViT equations."""
  params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  b, h, w, c = x.shape
  p, d = cfg['patch_size'], cfg['width']
  # Patchify [b, h/p, p, w/p, p, c] -> [b, n, p*p*c]; kernel HWIO -> [ppc, d].
  patches = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  patches = patches.reshape(b, -1, p * p * c)
  pe = params['patch_embed']
  t = patches @ pe['kernel'].reshape(-1, d)
  if 'bias' in pe:
    t = t + pe['bias']
  t = np.concatenate([np.broadcast_to(params['cls_token'], (b, 1, d)), t], 1)
  t = t + params['pos_embed']
  eps = cfg['eps']
  if 'norm_pre' in params:
    t = _layer_norm(t, params['norm_pre'], eps)
  act = cfg['act']
  heads = cfg['num_heads']
  for i in range(cfg['depth']):
    blk = params[f'blocks_{i}']
    y = _layer_norm(t, blk['norm1'], eps)
    qkv = y @ blk['attn']['qkv']['kernel'] + blk['attn']['qkv']['bias']
    qkv = qkv.reshape(b, -1, 3, heads, d // heads)
    q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))
    att = special.softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads), -1)
    y = (att @ v).transpose(0, 2, 1, 3).reshape(b, -1, d)
    y = y @ blk['attn']['proj']['kernel'] + blk['attn']['proj']['bias']
    if 'ls1' in blk:
      y = y * blk['ls1']['gamma']
    t = t + y
    y = _layer_norm(t, blk['norm2'], eps)
    y = act(y @ blk['mlp']['fc1']['kernel'] + blk['mlp']['fc1']['bias'])
    y = y @ blk['mlp']['fc2']['kernel'] + blk['mlp']['fc2']['bias']
    if 'ls2' in blk:
      y = y * blk['ls2']['gamma']
    t = t + y
  if 'norm' in params:
    t = _layer_norm(t, params['norm'], eps)
  f = t[:, 0] if cfg['pool'] == 'token' else t[:, 1:].mean(1)
  if 'fc_norm' in params:
    f = _layer_norm(f, params['fc_norm'], eps)
  if 'proj' in params:
    f = f @ params['proj']['kernel']
  if 'head' in params:
    f = f @ params['head']['kernel'] + params['head']['bias']
  return f


def _gelu(x):
  return 0.5 * x * (1 + special.erf(x / np.sqrt(2)))


def _quick_gelu(x):
  return x * special.expit(1.702 * x)


class VitTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(n, n) for n in REFERENCE_PARAMS])
  def test_param_count_equals_reference(self, name):
    self.assertEqual(models.num_params(name), REFERENCE_PARAMS[name])

  @parameterized.named_parameters(
      ('vit_token', 'vit_test_tiny', 'token', 1e-6, _gelu),
      ('vit_avg', 'vit_test_tiny_avg', 'avg', 1e-6, _gelu),
      ('clip', 'clip_test_tiny', 'token', 1e-5, _quick_gelu),
      ('dinov2', 'dinov2_test_tiny', 'token', 1e-6, _gelu),
  )
  def test_forward_matches_numpy(self, name, pool, eps, act):
    spec = models.get_spec(name)
    model = models.get_model(name)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, *spec.input_shape)).astype(np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    # Random LayerScale / LayerNorm values so every parameter matters.
    variables = jax.tree.map(
        lambda l: l + 0.1 * rng.normal(size=l.shape).astype(np.float32),
        variables)
    got = jax.jit(model.apply)(variables, x)
    cfg = dict(patch_size=model.patch_size, width=model.width,
               depth=model.depth, num_heads=model.num_heads, eps=eps,
               act=act, pool=pool)
    want = _numpy_vit(variables['params'], np.asarray(x, np.float64), cfg)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

  def test_bfloat16_close_to_float32(self):
    model = models.get_model('vit_test_tiny', num_classes=0)
    x = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype(np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    f32 = jax.jit(model.apply)(variables, x)
    bf16 = jax.jit(models.get_model('vit_test_tiny', num_classes=0,
                                    dtype=jnp.bfloat16).apply)(variables, x)
    self.assertEqual(bf16.dtype, jnp.float32)
    chex.assert_trees_all_close(bf16, f32, atol=0.1, rtol=0.05)
    self.assertFalse(np.allclose(bf16, f32, atol=1e-7, rtol=0))

  def test_decode_variant_and_errors(self):
    self.assertEqual(vit.decode_variant('L/14'),
                     dict(width=1024, depth=24, num_heads=16, patch_size=14))
    with self.assertRaisesRegex(ValueError, 'Bad ViT variant'):
      vit.decode_variant('X/16')
    model = vit.vit('Ti/16', class_token=False)
    with self.assertRaisesRegex(ValueError, 'class_token'):
      model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    with self.assertRaisesRegex(ValueError, 'multiple of the patch'):
      vit.vit('Ti/16').init(jax.random.key(0), jnp.zeros((1, 30, 30, 3)))


if __name__ == '__main__':
  absltest.main()
