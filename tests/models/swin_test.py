"""Swin: timm counts, window geometry against loops, timm parity."""

import importlib.util
import itertools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import models
from fennec_jax.models import swin

_HAS_TIMM = (importlib.util.find_spec('torch') is not None
             and importlib.util.find_spec('timm') is not None)


class SwinTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # timm 1.0.31: sum(p.numel() for p in create_model(name).parameters()).
      ('tiny', 'swin_tiny_patch4_window7_224', 28_288_354),
      ('small', 'swin_small_patch4_window7_224', 49_606_258),
  )
  def test_param_count_equals_timm(self, name, expected):
    self.assertEqual(models.num_params(name), expected)
    self.assertEqual(models.num_params(name, num_classes=0),
                     expected - 768 * 1000 - 1000)

  def test_relative_position_index_by_loops(self):
    wh, ww = 3, 4
    index = swin.relative_position_index(wh, ww)
    pos = list(itertools.product(range(wh), range(ww)))
    seen = set()
    for a, (i1, j1) in enumerate(pos):
      for b, (i2, j2) in enumerate(pos):
        expected = (i1 - i2 + wh - 1) * (2 * ww - 1) + (j1 - j2 + ww - 1)
        self.assertEqual(index[a, b], expected)
        seen.add(expected)
    self.assertEqual(seen, set(range((2 * wh - 1) * (2 * ww - 1))))

  def test_shift_mask_separates_wrapped_regions(self):
    h = w = 8
    window, shift = (4, 4), (2, 2)
    mask = swin.shifted_window_mask(h, w, window, shift)
    self.assertEqual(mask.shape, (4, 16, 16))
    # Label each pixel of the rolled image with the region it came from:
    # pixels that wrapped around in a direction belong to another region.
    rows = np.roll(np.arange(h), -shift[0]) < shift[0]
    cols = np.roll(np.arange(w), -shift[1]) < shift[1]
    region = rows[:, None] * 2 + cols[None, :]
    regions = swin.window_partition(
        jnp.asarray(region, jnp.float32)[None, :, :, None], window)[..., 0]
    for k in range(4):
      r = np.asarray(regions[k])
      same = r[:, None] == r[None, :]
      np.testing.assert_array_equal(mask[k], np.where(same, 0.0, -100.0))
    # The top-left window has no wrapped pixels: no masking at all.
    self.assertTrue(np.all(mask[0] == 0))

  def test_window_partition_roundtrip(self):
    x = jnp.arange(2 * 8 * 12 * 3, dtype=jnp.float32).reshape(2, 8, 12, 3)
    windows = swin.window_partition(x, (4, 3))
    self.assertEqual(windows.shape, (2 * 2 * 4, 12, 3))
    np.testing.assert_array_equal(windows[1].reshape(4, 3, 3),
                                  x[0, 0:4, 3:6])
    np.testing.assert_array_equal(swin.window_reverse(windows, (4, 3), 8, 12),
                                  x)

  def test_bad_input_size(self):
    model = models.get_model('swin_test')
    with self.assertRaisesRegex(ValueError, 'divisible by patch_size'):
      jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 33, 32, 3)))

  @absltest.skipUnless(_HAS_TIMM, 'needs torch + timm ([interop]).')
  def test_parity_with_timm(self):
    import torch  # pylint: disable=g-import-not-at-top
    from timm.models import swin_transformer  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    tm = swin_transformer.SwinTransformer(
        img_size=32, patch_size=2, embed_dim=8, depths=(2, 2),
        num_heads=(1, 2), window_size=4, num_classes=10)
    with torch.no_grad():  # non-trivial biases and position tables.
      for p in tm.parameters():
        p.add_(0.1 * torch.randn_like(p))
    tm.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
      ref = tm(x).numpy()
    variables = swin.timm_swin_to_flax(tm.state_dict(),
                                       models.init_shapes('swin_test'))
    out = jax.jit(models.get_model('swin_test').apply)(
        variables, x.numpy().transpose(0, 2, 3, 1))
    self.assertLessEqual(np.max(np.abs(out - ref)) / np.max(np.abs(ref)),
                         1e-4)


if __name__ == '__main__':
  absltest.main()
