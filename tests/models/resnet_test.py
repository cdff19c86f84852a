"""Tests of the torchvision-layout ResNet: counts, shapes, BatchNorm, parity."""

import functools
import importlib.util

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import models
from fennec_jax.models import layers
from fennec_jax.models import resnet

# sum(p.numel() for p in torchvision.models.<name>().parameters()),
# torchvision 0.29.1.
TORCHVISION_COUNTS = {
    'resnet18': 11_689_512,
    'resnet34': 21_797_672,
    'resnet50': 25_557_032,
    'resnet101': 44_549_160,
    'resnet152': 60_192_808,
}

_HAS_TORCH = (importlib.util.find_spec('torch') is not None
              and importlib.util.find_spec('torchvision') is not None)


class ResNetTest(parameterized.TestCase):

  @parameterized.named_parameters(*TORCHVISION_COUNTS.items())
  def test_param_count_equals_torchvision(self, expected):
    name = self._testMethodName.split('_')[-1]
    self.assertEqual(models.num_params(name), expected)

  def test_headless_count_drops_exactly_the_fc_layer(self):
    # fc of resnet50 is Linear(2048, 1000): 2048*1000 + 1000 parameters.
    self.assertEqual(models.num_params('resnet50', num_classes=0),
                     25_557_032 - 2048 * 1000 - 1000)

  def test_imagenet_stem_small_input(self):
    model = models.get_model('resnet18', width=8, num_classes=5)
    x = jnp.ones((2, 32, 32, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    out = jax.eval_shape(model.apply, variables, x)
    self.assertEqual(out.shape, (2, 5))
    # Spatial size 32 -> 16 (conv1) -> 8 (max-pool) -> 8, 4, 2, 1 (stages).
    self.assertEqual(variables['params']['layer4_0']['conv1']['kernel'].shape,
                     (3, 3, 32, 64))

  def test_train_mode_uses_and_updates_batch_statistics(self):
    model = models.get_model('resnet_tiny')
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    variables = layers.random_variables(
        models.init_shapes('resnet_tiny'), seed=1)
    variables['batch_stats'] = jax.tree.map(np.ones_like,
                                            variables['batch_stats'])
    variables['batch_stats']['bn1']['mean'] = np.zeros(8, np.float32)
    out_train, updates = jax.jit(functools.partial(
        model.apply, train=True, mutable=['batch_stats']))(variables, x)
    out_eval = jax.jit(model.apply)(variables, x)
    self.assertFalse(np.allclose(out_train, out_eval))
    # bn1 sees conv1(x); its new running stats follow PyTorch's rule.
    conv = variables['params']['conv1']['kernel']
    y = np.asarray(jax.lax.conv_general_dilated(
        x, conv, (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC')), np.float64)
    n = y.shape[0] * y.shape[1] * y.shape[2]
    np.testing.assert_allclose(
        updates['batch_stats']['bn1']['mean'],
        0.1 * y.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        updates['batch_stats']['bn1']['var'],
        0.9 + 0.1 * y.var(axis=(0, 1, 2)) * n / (n - 1), rtol=1e-4)

  @parameterized.named_parameters(
      ('block', dict(block='dense'), 'block'),
      ('stem', dict(stem='tiny'), 'stem'),
      ('stages', dict(stage_sizes=()), 'stage_sizes'),
  )
  def test_bad_config_raises(self, kwargs, word):
    model = resnet.ResNet(**kwargs)
    with self.assertRaisesRegex(ValueError, word):
      jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 32, 32, 3)))

  def test_unknown_name(self):
    with self.assertRaisesRegex(ValueError, 'resnet18'):
      models.get_model('resnet19')

  def test_converter_names_bad_keys(self):
    target = models.init_shapes('resnet_tiny')
    good = {}
    # Build a state dict in torch layout from the flax shapes.
    flat = jax.tree_util.tree_flatten_with_path(target)[0]
    for path, leaf in flat:
      names = [p.key for p in path]
      prefix = resnet._torch_names(tuple(names[1:-1]))  # pylint: disable=protected-access
      tname = {'kernel': 'weight', 'scale': 'weight', 'mean': 'running_mean',
               'var': 'running_var'}.get(names[-1], names[-1])
      shape = leaf.shape
      if len(shape) == 4:
        shape = (shape[3], shape[2], shape[0], shape[1])
      elif len(shape) == 2:
        shape = shape[::-1]
      good[f'{prefix}.{tname}'] = np.zeros(shape, np.float32)
    self.assertIn('layer2.0.downsample.0.weight', good)
    variables = resnet.torchvision_resnet_to_flax(good, target)
    self.assertEqual(jax.tree.structure(variables),
                     jax.tree.structure(target))
    bad = dict(good)
    del bad['layer1.0.conv1.weight']
    bad['fc.weight'] = np.zeros((3, 3), np.float32)
    bad['extra.weight'] = np.zeros(1, np.float32)
    with self.assertRaisesRegex(
        ValueError, r'1 missing \[layer1\.0\.conv1\.weight.*1 unexpected '
        r'\[extra\.weight\].*1 mis-shaped \[fc\.weight'):
      resnet.torchvision_resnet_to_flax(bad, target)


@absltest.skipUnless(_HAS_TORCH, 'torch/torchvision not installed (the '
                     '[interop] extra); the parity test needs them.')
class TorchvisionParityTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # torchvision's own ResNet class with one block per stage: both block
      # types, projection shortcuts and the stem, at a fraction of the cost.
      ('basic_1111', 'BasicBlock', (1, 1, 1, 1), 32),
      ('bottleneck_1111', 'Bottleneck', (1, 1, 1, 1), 32),
  )  # Full-size ResNets: full_parity_test.py (opt-in, slow).
  def test_features_and_logits_match_torchvision(self, block, stages, size):
    import torch  # pylint: disable=g-import-not-at-top
    from torchvision.models import resnet as tv_resnet  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    tm = tv_resnet.ResNet(getattr(tv_resnet, block), list(stages))
    for m in tm.modules():  # Non-trivial BatchNorm statistics.
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.data.uniform_(0.5, 1.5)
        m.bias.data.uniform_(-0.5, 0.5)
    tm.eval()
    x = torch.randn(2, 3, size, size)
    state = {k: v.clone() for k, v in tm.state_dict().items()}
    with torch.no_grad():
      ref_logits = tm(x).numpy()
      tm.fc = torch.nn.Identity()  # timm's num_classes=0 equivalent.
      ref_feats = tm(x).numpy()
    x_nhwc = x.numpy().transpose(0, 2, 3, 1)
    kwargs = dict(stage_sizes=stages, block=block.lower().replace(
        'basicblock', 'basic'))
    flax_model = resnet.ResNet(**kwargs)
    shapes = jax.eval_shape(flax_model.init, jax.random.key(0), x_nhwc)
    variables = resnet.torchvision_resnet_to_flax(state, shapes)
    logits = jax.jit(flax_model.apply)(variables, x_nhwc)
    headless = {'params': {k: v for k, v in variables['params'].items()
                           if k != 'fc'},
                'batch_stats': variables['batch_stats']}
    feats = jax.jit(resnet.ResNet(num_classes=0, **kwargs).apply)(headless,
                                                                   x_nhwc)
    for got, ref in ((feats, ref_feats), (logits, ref_logits)):
      rel = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
      self.assertLessEqual(rel, 1e-4)


if __name__ == '__main__':
  absltest.main()
