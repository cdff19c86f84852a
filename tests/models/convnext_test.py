"""ConvNeXt: timm count, layer-scale init, stochastic depth, timm parity."""

import importlib.util

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import models
from fennec_jax.models import convnext
from fennec_jax.models import layers

_HAS_TIMM = (importlib.util.find_spec('torch') is not None
             and importlib.util.find_spec('timm') is not None)


class ConvNeXtTest(absltest.TestCase):

  def test_param_count_equals_timm(self):
    # timm 1.0.31 convnext_tiny: sum(p.numel() for p in parameters()).
    self.assertEqual(models.num_params('convnext_tiny'), 28_589_128)
    # num_classes=0 keeps head.norm (timm) and drops head.fc.
    self.assertEqual(models.num_params('convnext_tiny', num_classes=0),
                     28_589_128 - 768 * 1000 - 1000)

  def test_drop_path_schedule_matches_timm_linspace(self):
    # torch.linspace(0, 0.3, 6).split((1, 2, 3)).
    rates = layers.drop_path_rates(0.3, (1, 2, 3))
    np.testing.assert_allclose(sum(rates, []), [0, .06, .12, .18, .24, .3],
                               atol=1e-12)
    self.assertEqual([len(r) for r in rates], [1, 2, 3])

  def test_layer_scale_init(self):
    shapes = models.init_shapes('convnext_test')
    self.assertEqual(shapes['params']['stages_0']['blocks_0']['gamma'].shape,
                     (8,))
    gamma = jax.jit(convnext.ConvNeXtBlock(4).init)(
        jax.random.key(0), jnp.ones((1, 4, 4, 4)))['params']['gamma']
    np.testing.assert_array_equal(gamma, np.full(4, 1e-6, np.float32))

  @absltest.skipUnless(_HAS_TIMM, 'needs torch + timm ([interop]).')
  def test_parity_with_timm(self):
    import torch  # pylint: disable=g-import-not-at-top
    from timm.models import convnext as timm_convnext  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    tm = timm_convnext.ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
                                num_classes=10)
    with torch.no_grad():  # layer scale 1e-6 would hide the blocks.
      for p in tm.parameters():
        p.add_(0.1 * torch.randn_like(p))
    tm.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
      ref = tm(x).numpy()
    variables = convnext.timm_convnext_to_flax(
        tm.state_dict(), models.init_shapes('convnext_test'))
    out = jax.jit(models.get_model('convnext_test').apply)(
        variables, x.numpy().transpose(0, 2, 3, 1))
    self.assertLessEqual(np.max(np.abs(out - ref)) / np.max(np.abs(ref)),
                         1e-4)


if __name__ == '__main__':
  absltest.main()
