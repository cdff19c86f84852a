"""MobileNetV2 / MNASNet: torchvision counts, width rules, weight parity."""

import importlib.util

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from fennec_jax import models
from fennec_jax.models import mobilenet

_HAS_TORCH = (importlib.util.find_spec('torch') is not None
              and importlib.util.find_spec('torchvision') is not None)


def _randomize_bn(torch, tm):
  for m in tm.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.running_mean.uniform_(-0.5, 0.5)
      m.running_var.uniform_(0.5, 2.0)
      m.weight.data.uniform_(0.5, 1.5)
      m.bias.data.uniform_(-0.5, 0.5)


class MobileNetTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # torchvision 0.29.1: sum(p.numel() for p in model.parameters()).
      ('mobilenet_v2', 'mobilenet_v2', {}, 3_504_872),
      ('mnasnet1_0', 'mnasnet1_0', {}, 4_383_312),
      # torchvision's MNASNet0_5_Weights.meta['num_params'].
      ('mnasnet0_5', 'mnasnet1_0', {'alpha': 0.5}, 2_218_512),
  )
  def test_param_counts(self, name, kwargs, expected):
    self.assertEqual(models.num_params(name, **kwargs), expected)

  def test_width_rules(self):
    # MnasNet paper / torchvision depths at alpha 1.0, rounded at 0.5.
    self.assertEqual(mobilenet.mnasnet_depths(1.0),
                     [32, 16, 24, 40, 80, 96, 192, 320])
    self.assertEqual(mobilenet.mnasnet_depths(0.5),
                     [16, 8, 16, 24, 40, 48, 96, 160])
    # Never more than 10% below the requested width.
    for v in (3.0, 10.0, 27.0, 83.0, 84.0, 1000.0):
      d = mobilenet.make_divisible(v)
      self.assertEqual(d % 8, 0)
      self.assertGreaterEqual(d, 0.9 * v)
    self.assertEqual(models.get_model('mobilenet_v2').num_features, 1280)
    self.assertEqual(
        models.get_model('mobilenet_v2', width_mult=1.4).num_features, 1792)

  def test_bad_width(self):
    for model in (mobilenet.MobileNetV2(width_mult=0.0),
                  mobilenet.MNASNet(alpha=-1.0)):
      with self.assertRaisesRegex(ValueError, 'must be > 0'):
        jax.eval_shape(model.init, jax.random.key(0), np.ones((1, 32, 32, 3)))

  @parameterized.named_parameters(('mobilenet_v2', 'mobilenet_v2_tiny'),
                                  ('mnasnet', 'mnasnet_tiny'))
  @absltest.skipUnless(_HAS_TORCH, 'needs torch + torchvision ([interop]).')
  def test_parity_with_torchvision(self, name):
    import torch  # pylint: disable=g-import-not-at-top
    import torchvision  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    if name == 'mobilenet_v2_tiny':
      tm = torchvision.models.MobileNetV2(
          num_classes=10, width_mult=0.25,
          inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 2, 2]])
    else:
      tm = torchvision.models.MNASNet(0.25, num_classes=10)
    _randomize_bn(torch, tm)
    tm.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
      ref = tm(x).numpy()
    variables = mobilenet.torchvision_mobilenet_to_flax(
        tm.state_dict(), models.init_shapes(name))
    out = jax.jit(models.get_model(name).apply)(
        variables, x.numpy().transpose(0, 2, 3, 1))
    self.assertLessEqual(np.max(np.abs(out - ref)) / np.max(np.abs(ref)),
                         1e-4)


if __name__ == '__main__':
  absltest.main()
