"""DenseNet: torchvision counts, feature widths and weight parity."""

import importlib.util

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from fennec_jax import models
from fennec_jax.models import densenet

# sum(p.numel() for p in torchvision.models.<name>().parameters()),
# torchvision 0.29.1; feature width = classifier.in_features.
TORCHVISION = {
    'densenet121': (7_978_856, 1024),
    'densenet169': (14_149_480, 1664),
    'densenet201': (20_013_928, 1920),
}
_HAS_TORCH = (importlib.util.find_spec('torch') is not None
              and importlib.util.find_spec('torchvision') is not None)


class DenseNetTest(parameterized.TestCase):

  @parameterized.named_parameters((n, n, *v) for n, v in TORCHVISION.items())
  def test_counts_and_feature_width(self, name, count, width):
    self.assertEqual(models.num_params(name), count)
    self.assertEqual(models.get_model(name).num_features, width)
    self.assertEqual(
        models.num_params(name, num_classes=0), count - width * 1000 - 1000)

  def test_bad_block_config(self):
    model = densenet.DenseNet(block_config=())
    with self.assertRaisesRegex(ValueError, 'block_config'):
      jax.eval_shape(model.init, jax.random.key(0), np.ones((1, 32, 32, 3)))

  @absltest.skipUnless(_HAS_TORCH, 'needs torch + torchvision ([interop]).')
  def test_parity_with_torchvision(self):
    import torch  # pylint: disable=g-import-not-at-top
    import torchvision  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    tm = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2),
                                     num_init_features=16, bn_size=2,
                                     num_classes=10)
    for m in tm.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.data.uniform_(0.5, 1.5)
        m.bias.data.uniform_(-0.5, 0.5)
    tm.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
      ref = tm(x).numpy()
    variables = densenet.torchvision_densenet_to_flax(
        tm.state_dict(), models.init_shapes('densenet_tiny'))
    out = jax.jit(models.get_model('densenet_tiny').apply)(
        variables, x.numpy().transpose(0, 2, 3, 1))
    self.assertLessEqual(np.max(np.abs(out - ref)) / np.max(np.abs(ref)),
                         1e-4)


if __name__ == '__main__':
  absltest.main()
