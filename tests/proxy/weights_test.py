"""Weight-import parity: reference PyTorch models with random weights.

Each test builds the reference model (timm, transformers, torchvision) with a
small config and random weights, writes its checkpoint in the library's own
format, imports it into the Flax definition, and compares the features in
float32 (relative error <= 1e-4). Skipped when the `interop` extra (torch, timm,
transformers, safetensors) is absent.
"""

import os
import shutil
import tempfile

from absl.testing import absltest
import flax
import jax
import numpy as np

from fennec_jax import models
from fennec_jax.models import vit
from fennec_jax.proxy import weights

try:
  import torch  # pylint: disable=g-import-not-at-top
  import timm  # pylint: disable=g-import-not-at-top
  from timm.models import vision_transformer as timm_vit  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from safetensors import torch as st_torch  # pylint: disable=g-import-not-at-top
  _SKIP = None
except ImportError as e:  # pragma: no cover - depends on the extra.
  _SKIP = f'interop extra not installed ({e}): pip install fennec_jax[interop]'

TINY = dict(patch_size=8, width=32, depth=2, num_heads=2)


def _rel_err(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return np.max(np.abs(got - want)) / np.max(np.abs(want))


def _randomize_(module):
  """Random values for every parameter (LayerNorm, LayerScale included)."""
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def _images(n=3, size=32, seed=0):
  return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(
      np.float32)


def _tempdir(test):
  # absltest's create_tempdir needs parsed absl flags, which pytest skips.
  path = tempfile.mkdtemp()
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def _torch_nchw(x):
  return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


class WeightsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    if _SKIP:
      self.skipTest(_SKIP)
    torch.set_num_threads(1)
    self.dir = _tempdir(self)

  def _flax(self, model, path, layout=None, size=32):
    variables = weights.load_variables(model, (size, size, 3), path,
                                       layout=layout)
    return jax.jit(model.apply)(variables, _images(size=size))

  def test_timm_vit_safetensors_features(self):
    ref = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32,
                                     depth=2, num_heads=2, num_classes=0)
    _randomize_(ref.eval())
    path = os.path.join(self.dir, 'vit.safetensors')
    st_torch.save_file(ref.state_dict(), path)
    got = self._flax(vit.vit(num_classes=0, **TINY), path)
    with torch.no_grad():
      want = ref(_torch_nchw(_images())).numpy()
    self.assertEqual(got.shape, (3, 32))
    self.assertLessEqual(_rel_err(got, want), 1e-4)

  def test_timm_vit_avg_pool_with_head_pth(self):
    ref = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32,
                                     depth=2, num_heads=2, num_classes=7,
                                     global_pool='avg')
    _randomize_(ref.eval())
    path = os.path.join(self.dir, 'vit.pth')
    torch.save({'state_dict': ref.state_dict()}, path)
    got = self._flax(vit.vit(num_classes=7, pool='avg', **TINY), path)
    with torch.no_grad():
      want = ref(_torch_nchw(_images())).numpy()
    self.assertLessEqual(_rel_err(got, want), 1e-4)

  def test_timm_dinov2_layer_scale(self):
    ref = timm_vit.VisionTransformer(img_size=28, patch_size=7, embed_dim=32,
                                     depth=2, num_heads=2, num_classes=0,
                                     init_values=1e-5)
    _randomize_(ref.eval())
    got = self._flax(models.get_model('dinov2_test_tiny'), ref.state_dict(),
                     size=28)
    with torch.no_grad():
      want = ref(_torch_nchw(_images(size=28))).numpy()
    self.assertLessEqual(_rel_err(got, want), 1e-4)

  def test_transformers_clip_vision_with_projection(self):
    cfg = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16)
    ref = transformers.CLIPVisionModelWithProjection(cfg).eval()
    _randomize_(ref)
    ref.save_pretrained(self.dir, safe_serialization=True)
    got = self._flax(models.get_model('clip_test_tiny'), self.dir)
    with torch.no_grad():
      want = ref(pixel_values=_torch_nchw(_images())).image_embeds.numpy()
    self.assertEqual(got.shape, (3, 16))
    self.assertLessEqual(_rel_err(got, want), 1e-4)

  def test_transformers_vit_model_bin(self):
    cfg = transformers.ViTConfig(
        hidden_size=32, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, image_size=32, patch_size=8,
        layer_norm_eps=1e-6)
    ref = transformers.ViTModel(cfg).eval()
    _randomize_(ref)
    path = os.path.join(self.dir, 'pytorch_model.bin')
    torch.save(ref.state_dict(), path)
    got = self._flax(vit.vit(num_classes=0, **TINY), path)
    with torch.no_grad():
      out = ref(pixel_values=_torch_nchw(_images()))
      want = out.last_hidden_state[:, 0].numpy()
    self.assertLessEqual(_rel_err(got, want), 1e-4)

  def test_transformers_dinov2_model(self):
    cfg = transformers.Dinov2Config(
        hidden_size=32, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, image_size=28, patch_size=7)
    ref = transformers.Dinov2Model(cfg).eval()
    _randomize_(ref)
    got = self._flax(models.get_model('dinov2_test_tiny'), ref.state_dict(),
                     size=28)
    with torch.no_grad():
      want = ref(pixel_values=_torch_nchw(_images(size=28))).pooler_output
    self.assertLessEqual(_rel_err(got, want.numpy()), 1e-4)

  def _timm_clip(self, proj_dim):
    return timm_vit.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
        num_classes=proj_dim, pre_norm=True, act_layer='quick_gelu',
        norm_layer=torch.nn.LayerNorm).eval()

  def test_open_clip_layout_matches_timm_converter(self):
    # Random OpenAI/open_clip-layout tensors; timm's own converter is the
    # reference for what the names mean (strict load checks the shapes).
    rng = np.random.default_rng(1)
    d, n, p = 32, 17, 8
    shapes = {'visual.conv1.weight': (d, 3, p, p),
              'visual.class_embedding': (d,),
              'visual.positional_embedding': (n, d),
              'visual.ln_pre.weight': (d,), 'visual.ln_pre.bias': (d,),
              'visual.ln_post.weight': (d,), 'visual.ln_post.bias': (d,),
              'visual.proj': (d, 16)}
    for i in range(2):
      b = f'visual.transformer.resblocks.{i}.'
      shapes.update({
          b + 'ln_1.weight': (d,), b + 'ln_1.bias': (d,),
          b + 'ln_2.weight': (d,), b + 'ln_2.bias': (d,),
          b + 'attn.in_proj_weight': (3 * d, d), b + 'attn.in_proj_bias': (
              3 * d,),
          b + 'attn.out_proj.weight': (d, d), b + 'attn.out_proj.bias': (d,),
          b + 'mlp.c_fc.weight': (4 * d, d), b + 'mlp.c_fc.bias': (4 * d,),
          b + 'mlp.c_proj.weight': (d, 4 * d), b + 'mlp.c_proj.bias': (d,)})
    state = {k: torch.from_numpy(rng.normal(size=s).astype(np.float32) * 0.2)
             for k, s in shapes.items()}
    state['text_projection'] = torch.zeros(8, 8)  # Ignored by the importer.
    ref = self._timm_clip(16)
    converted = timm_vit._convert_openai_clip(state, ref)  # pylint: disable=protected-access
    ref.load_state_dict(converted, strict=True)
    path = os.path.join(self.dir, 'openai.pt')
    torch.save(state, path)
    got = self._flax(models.get_model('clip_test_tiny'), path)
    with torch.no_grad():
      want = ref(_torch_nchw(_images())).numpy()
    self.assertLessEqual(_rel_err(got, want), 1e-4)

  def test_big_vision_npz_matches_timm_loader(self):
    rng = np.random.default_rng(2)
    d, heads, p = 32, 2, 8
    arrays = {'params/embedding/kernel': (p, p, 3, d),
              'params/embedding/bias': (d,),
              'params/pos_embedding': (1, 16, d),
              'params/Transformer/encoder_norm/scale': (d,),
              'params/Transformer/encoder_norm/bias': (d,),
              'params/head/kernel': (d, 5), 'params/head/bias': (5,)}
    blk = 'params/Transformer/encoderblock/'  # Scanned: leading depth axis.
    for ln in ('LayerNorm_0', 'LayerNorm_1'):
      arrays.update({f'{blk}{ln}/scale': (2, d), f'{blk}{ln}/bias': (2, d)})
    mha = blk + 'MultiHeadDotProductAttention_0/'
    for n in ('query', 'key', 'value'):
      arrays.update({f'{mha}{n}/kernel': (2, d, heads, d // heads),
                     f'{mha}{n}/bias': (2, heads, d // heads)})
    arrays.update({f'{mha}out/kernel': (2, heads, d // heads, d),
                   f'{mha}out/bias': (2, d),
                   f'{blk}MlpBlock_0/Dense_0/kernel': (2, d, 4 * d),
                   f'{blk}MlpBlock_0/Dense_0/bias': (2, 4 * d),
                   f'{blk}MlpBlock_0/Dense_1/kernel': (2, 4 * d, d),
                   f'{blk}MlpBlock_0/Dense_1/bias': (2, d)})
    path = os.path.join(self.dir, 'bv.npz')
    np.savez(path, **{k: rng.normal(size=s).astype(np.float32) * 0.2
                      for k, s in arrays.items()})
    ref = timm_vit.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
        num_classes=5, class_token=False, global_pool='avg', fc_norm=False,
        act_layer='gelu_tanh').eval()
    timm_vit._load_weights(ref, path)  # pylint: disable=protected-access
    model = vit.vit(num_classes=5, pool='avg', class_token=False,
                    fc_norm=False, activation='gelu_tanh', **TINY)
    got = self._flax(model, path)
    with torch.no_grad():
      want = ref(_torch_nchw(_images())).numpy()
    self.assertLessEqual(_rel_err(got, want), 1e-4)

  def test_torchvision_resnet50(self):
    import torchvision  # pylint: disable=g-import-not-at-top
    ref = torchvision.models.resnet50(num_classes=0 or 1000).eval()
    ref.fc = torch.nn.Identity()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
      for name, buf in ref.named_buffers():
        if name.endswith('running_var'):
          buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
        elif name.endswith('running_mean'):
          buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
    path = os.path.join(self.dir, 'resnet50.pth')
    torch.save(ref.state_dict(), path)
    model = models.get_model('resnet50', num_classes=0)
    x = _images(n=2, size=64)
    variables = weights.load_variables(model, (64, 64, 3), path)
    got = jax.jit(model.apply)(variables, x)
    with torch.no_grad():
      want = ref(_torch_nchw(x)).numpy()
    self.assertEqual(got.shape, (2, 2048))
    self.assertLessEqual(_rel_err(got, want), 1e-4)

  def test_mismatched_checkpoint_lists_keys(self):
    ref = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32,
                                     depth=2, num_heads=2, num_classes=0)
    with self.assertRaisesRegex(ValueError, r'missing \[.*norm_pre.*'
                                r'unexpected \[.*mis-shaped'):
      weights.load_variables(models.get_model('clip_test_tiny'), (32, 32, 3),
                             ref.state_dict())
    # Same architecture, another width: every tensor is mis-shaped.
    wide = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=48,
                                      depth=2, num_heads=2, num_classes=0)
    with self.assertRaisesRegex(ValueError, r'mis-shaped \[.*\(48'):
      weights.load_variables(vit.vit(num_classes=0, **TINY), (32, 32, 3),
                             wide.state_dict())


class ReadCheckpointTest(absltest.TestCase):

  def test_errors_name_the_file(self):
    with self.assertRaisesRegex(ValueError, 'does not exist'):
      weights.read_checkpoint('/nonexistent/model.safetensors')
    path = os.path.join(_tempdir(self), 'model.txt')
    with open(path, 'w') as f:
      f.write('x')
    with self.assertRaisesRegex(ValueError, r"model.txt: unknown checkpoint "
                                r"type '.txt'"):
      weights.read_checkpoint(path)
    with self.assertRaisesRegex(ValueError, 'Cannot tell which library'):
      weights.detect_layout({'foo.weight': np.zeros(3)})

  def test_flax_npz_round_trip(self):
    model = models.get_model('vit_test_tiny')
    variables = jax.jit(model.init)(jax.random.key(0),
                                    np.zeros((1, 32, 32, 3), np.float32))
    flat = flax.traverse_util.flatten_dict(variables['params'], sep='/')
    flat = {k: np.asarray(v) for k, v in flat.items()}
    path = os.path.join(_tempdir(self), 'p.npz')
    np.savez(path, **flat)
    loaded = weights.load_variables(model, (32, 32, 3), path)
    x = _images()
    apply = jax.jit(model.apply)
    np.testing.assert_array_equal(apply(loaded, x), apply(variables, x))


if __name__ == '__main__':
  absltest.main()
