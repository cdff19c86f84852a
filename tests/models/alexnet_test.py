"""AlexNet: torchvision count, flatten-order conversion, weight parity."""

import importlib.util

from absl.testing import absltest
import jax
import numpy as np

from fennec_jax import models
from fennec_jax.models import alexnet

_HAS_TORCH = (importlib.util.find_spec('torch') is not None
              and importlib.util.find_spec('torchvision') is not None)


class AlexNetTest(absltest.TestCase):

  def test_param_count_equals_torchvision(self):
    # torchvision 0.29.1 alexnet(): sum(p.numel() for p in parameters()).
    self.assertEqual(models.num_params('alexnet'), 61_100_840)
    # num_classes=0 drops classifier.6 = Linear(4096, 1000).
    self.assertEqual(models.num_params('alexnet', num_classes=0),
                     61_100_840 - 4096 * 1000 - 1000)

  def test_flatten_order_is_converted(self):
    # A first classifier layer that reads only channel 1 at pixel (2, 3) in
    # torch's (C, H, W) flatten order must read the same input in flax's
    # (H, W, C) order.
    shapes = models.init_shapes('alexnet_tiny')
    state = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
      names = [p.key for p in path][1:]
      prefix = '.'.join(names[0].split('_'))
      shape = leaf.shape
      if len(shape) == 4:
        shape = (shape[3], shape[2], shape[0], shape[1])
      elif len(shape) == 2:
        shape = shape[::-1]
      tname = 'weight' if names[1] == 'kernel' else 'bias'
      state[f'{prefix}.{tname}'] = np.zeros(shape, np.float32)
    c = shapes['params']['features_10']['kernel'].shape[-1]
    w = np.zeros((32, c, 6, 6), np.float32)
    w[0, 1, 2, 3] = 1.0
    state['classifier.1.weight'] = w.reshape(32, -1)
    variables = alexnet.torchvision_alexnet_to_flax(state, shapes)
    kernel = variables['params']['classifier_1']['kernel']
    hwc = np.zeros((6, 6, c), np.float32)
    hwc[2, 3, 1] = 1.0
    np.testing.assert_array_equal(kernel[:, 0], hwc.reshape(-1))

  @absltest.skipUnless(_HAS_TORCH, 'needs torch + torchvision ([interop]).')
  def test_parity_with_torchvision(self):
    import torch  # pylint: disable=g-import-not-at-top
    import torchvision  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    tm = torchvision.models.alexnet().eval()
    x = torch.randn(2, 3, 64, 64)  # 64 px: the 1x1 map is upsampled to 6x6.
    with torch.no_grad():
      ref = tm(x).numpy()
    variables = alexnet.torchvision_alexnet_to_flax(
        tm.state_dict(), models.init_shapes('alexnet'))
    out = jax.jit(models.get_model('alexnet').apply)(
        variables, x.numpy().transpose(0, 2, 3, 1))
    self.assertLessEqual(np.max(np.abs(out - ref)) / np.max(np.abs(ref)),
                         1e-4)


if __name__ == '__main__':
  absltest.main()
