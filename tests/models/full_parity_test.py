"""Opt-in: every full-size registered CNN/hierarchical model vs PyTorch.

The default suite checks parity on reduced configurations (cheap); this file
converts the real torchvision/timm architecture for every registered name and
compares logits. Slow on a CPU (minutes), so it runs only with
`FENNEC_FULL_PARITY=1`:

  FENNEC_FULL_PARITY=1 .venv/bin/python -m pytest -q \
      tests/models/full_parity_test.py
"""

import importlib.util
import os

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from fennec_jax import models
from fennec_jax.models import alexnet
from fennec_jax.models import convnext
from fennec_jax.models import densenet
from fennec_jax.models import inception
from fennec_jax.models import mobilenet
from fennec_jax.models import resnet
from fennec_jax.models import swin

_HAS_TORCH = all(importlib.util.find_spec(m) is not None
                 for m in ('torch', 'torchvision', 'timm'))
_ENABLED = bool(os.environ.get('FENNEC_FULL_PARITY'))

# name -> (library, constructor kwargs, converter, input side).
_CASES = {
    'resnet18': ('tv', {}, resnet.torchvision_resnet_to_flax, 64),
    'resnet34': ('tv', {}, resnet.torchvision_resnet_to_flax, 64),
    'resnet50': ('tv', {}, resnet.torchvision_resnet_to_flax, 64),
    'resnet101': ('tv', {}, resnet.torchvision_resnet_to_flax, 64),
    'resnet152': ('tv', {}, resnet.torchvision_resnet_to_flax, 64),
    'densenet121': ('tv', {}, densenet.torchvision_densenet_to_flax, 64),
    'densenet169': ('tv', {}, densenet.torchvision_densenet_to_flax, 64),
    'densenet201': ('tv', {}, densenet.torchvision_densenet_to_flax, 64),
    'mobilenet_v2': ('tv', {}, mobilenet.torchvision_mobilenet_to_flax, 64),
    'mnasnet1_0': ('tv', {}, mobilenet.torchvision_mobilenet_to_flax, 64),
    'googlenet': ('tv', {'aux_logits': False, 'init_weights': True},
                  inception.torchvision_inception_to_flax, 64),
    'inception_v3': ('tv', {'aux_logits': False, 'init_weights': True},
                     inception.torchvision_inception_to_flax, 128),
    'alexnet': ('tv', {}, alexnet.torchvision_alexnet_to_flax, 128),
    'convnext_tiny': ('timm', {}, convnext.timm_convnext_to_flax, 64),
    # Swin's window geometry depends on the input size: use the real one.
    'swin_tiny_patch4_window7_224': ('timm', {}, swin.timm_swin_to_flax, 224),
    'swin_small_patch4_window7_224': ('timm', {}, swin.timm_swin_to_flax,
                                      224),
}


@absltest.skipUnless(_HAS_TORCH and _ENABLED,
                     'opt-in (FENNEC_FULL_PARITY=1) and needs torch, '
                     'torchvision and timm.')
class FullParityTest(parameterized.TestCase):

  def test_cases_are_registered_names(self):
    self.assertContainsSubset(set(_CASES), set(models.list_models()))

  @parameterized.named_parameters((n, n) for n in _CASES)
  def test_logits_match(self, name):
    import torch  # pylint: disable=g-import-not-at-top
    import timm  # pylint: disable=g-import-not-at-top
    import torchvision  # pylint: disable=g-import-not-at-top
    lib, kwargs, convert, size = _CASES[name]
    torch.manual_seed(0)
    if lib == 'tv':
      tm = getattr(torchvision.models, name)(**kwargs)
    else:
      tm = timm.create_model(name, **kwargs)
    with torch.no_grad():
      for m in tm.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
          m.running_mean.uniform_(-0.5, 0.5)
          m.running_var.uniform_(0.5, 2.0)
      if lib == 'timm':  # layer scale 1e-6 and zero biases hide too much.
        for p in tm.parameters():
          p.add_(0.02 * torch.randn_like(p))
    tm.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
      ref = tm(x).numpy()
    x_nhwc = x.numpy().transpose(0, 2, 3, 1)
    model = models.get_model(name)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x_nhwc)
    variables = convert(tm.state_dict(), shapes)
    out = jax.jit(model.apply)(variables, x_nhwc)
    rel = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
    print(f'{name}: max relative error {rel:.2e}')
    self.assertLessEqual(rel, 1e-4)


if __name__ == '__main__':
  absltest.main()
