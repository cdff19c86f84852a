r"""Speed: forward throughput of the Flax CNN / hierarchical models vs PyTorch.

Images/s of `model.apply` (inference, jitted, random weights) for the
registered CNN/hierarchical architectures over a batch-size sweep, beside the
same architecture in PyTorch (torchvision, or timm when torchvision is absent)
eager and, with `--torch_compile`, `torch.compile`d, on the same device. The
batch lives on the device as uint8 NHWC; the timed step casts and normalizes it
inside the jitted function (PyTorch: inside the timed loop), so both sides pay
the same preprocessing. Weights are host-side random arrays
(`layers.random_variables`), so no init is compiled.

On this CPU (small, contended; numbers are indicative only):

  PYTHONPATH=. .venv/bin/python experiments/benchmarks/cnn_throughput.py \
      --models=resnet50 --batch_sizes=8 --steps=3 --dtype=float32 \
      --out=runs/cnn_throughput_cpu

On a GPU machine (needs jax, flax, numpy, absl; torch + timm for the
baseline; not jraph or tensorflow-datasets):

  PYTHONPATH=. python experiments/benchmarks/cnn_throughput.py \
      --models=resnet50,convnext_tiny,swin_tiny_patch4_window7_224 \
      --batch_sizes=64,256 --dtype=bfloat16 --torch_compile --out=$OUT/cnn

Writes OUT/results.json (one record per model x batch x implementation) and
OUT/results.md (a table).
"""

import json
import os
import platform
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import models
from fennec_jax.models import layers

_OUT = flags.DEFINE_string('out', 'runs/cnn_throughput', 'Output directory.')
_MODELS = flags.DEFINE_list(
    'models', ['resnet50', 'convnext_tiny', 'swin_tiny_patch4_window7_224'],
    'Registered model names.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['64', '256'], 'Batch sizes.')
_DTYPE = flags.DEFINE_enum('dtype', 'bfloat16', ['bfloat16', 'float32'],
                           'Compute dtype (both sides).')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps per measurement.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps after compiling.')
_TORCH = flags.DEFINE_bool('torch', True, 'Also time the PyTorch model.')
_COMPILE = flags.DEFINE_bool('torch_compile', False,
                             'Also time torch.compile (slow to compile).')
_PEAK = flags.DEFINE_float(
    'peak_tflops', None, 'Device peak TFLOP/s at --dtype; with it the table '
    'reports model FLOP utilization from XLA\'s cost analysis.')

_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255

# PyTorch equivalents: torchvision name (None: timm only), timm name.
_TORCH_NAMES = {
    'resnet18': ('resnet18', 'resnet18'),
    'resnet34': ('resnet34', 'resnet34'),
    'resnet50': ('resnet50', 'resnet50'),
    'resnet101': ('resnet101', 'resnet101'),
    'resnet152': ('resnet152', 'resnet152'),
    'densenet121': ('densenet121', 'densenet121'),
    'densenet169': ('densenet169', 'densenet169'),
    'densenet201': ('densenet201', 'densenet201'),
    'mobilenet_v2': ('mobilenet_v2', 'mobilenetv2_100'),
    'mnasnet1_0': ('mnasnet1_0', 'mnasnet_100'),
    'googlenet': ('googlenet', None),
    'inception_v3': ('inception_v3', 'inception_v3'),
    'alexnet': ('alexnet', None),
    'convnext_tiny': (None, 'convnext_tiny'),
    'swin_tiny_patch4_window7_224': (None, 'swin_tiny_patch4_window7_224'),
    'swin_small_patch4_window7_224': (None, 'swin_small_patch4_window7_224'),
}


def time_flax(name: str, batch: int, dtype: Any) -> dict[str, Any]:
  """Images/s of the jitted Flax forward on the default device."""
  spec = models.get_spec(name)
  model = models.get_model(name, dtype=dtype)
  variables = jax.device_put(
      layers.random_variables(models.init_shapes(name), seed=0))
  images = jax.device_put(np.random.default_rng(0).integers(
      0, 256, (batch, *spec.input_shape), dtype=np.uint8))
  mean, std = jnp.asarray(_MEAN), jnp.asarray(_STD)

  @jax.jit
  def step(variables, images):
    x = (images.astype(jnp.float32) - mean) / std
    return model.apply(variables, x.astype(dtype))

  t0 = time.perf_counter()
  compiled = step.lower(variables, images).compile()
  compile_s = time.perf_counter() - t0
  flops = None
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    flops = float(cost.get('flops', 0.0)) or None
  except Exception:  # pylint: disable=broad-except
    logging.info('No cost analysis on this backend.')
  for _ in range(_WARMUP.value):
    compiled(variables, images).block_until_ready()
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    out = compiled(variables, images)
  out.block_until_ready()
  elapsed = time.perf_counter() - t0
  rec = {'impl': 'flax', 'compile_s': compile_s,
         'images_per_s': batch * _STEPS.value / elapsed}
  if flops:
    rec['flops_per_image'] = flops / batch
    if _PEAK.value:
      rec['mfu'] = flops * _STEPS.value / elapsed / (_PEAK.value * 1e12)
  return rec


def _torch_model(name: str):
  """The PyTorch model (torchvision first, timm otherwise) and its source."""
  tv_name, timm_name = _TORCH_NAMES[name]
  if tv_name is not None:
    try:
      import torchvision  # pylint: disable=g-import-not-at-top
      kwargs = {}
      if name in ('googlenet', 'inception_v3'):
        kwargs = {'aux_logits': False, 'init_weights': True}
      return getattr(torchvision.models, tv_name)(**kwargs), 'torchvision'
    except ImportError:
      pass
  if timm_name is None:
    raise ValueError(f'{name}: needs torchvision for the PyTorch baseline.')
  import timm  # pylint: disable=g-import-not-at-top
  return timm.create_model(timm_name), 'timm'


def time_torch(name: str, batch: int, dtype_name: str,
               compile_model: bool) -> dict[str, Any]:
  """Images/s of the PyTorch model (eager or torch.compile) on cuda or CPU."""
  import torch  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  tdtype = getattr(torch, dtype_name)
  module, source = _torch_model(name)
  module = module.eval().to(device=device, dtype=tdtype,
                            memory_format=torch.channels_last)
  h, w, c = models.get_spec(name).input_shape
  images = torch.randint(0, 256, (batch, c, h, w), dtype=torch.uint8,
                         device=device)
  mean = torch.tensor(_MEAN, device=device).view(1, 3, 1, 1)
  std = torch.tensor(_STD, device=device).view(1, 3, 1, 1)

  def step(images):
    x = ((images.float() - mean) / std).to(tdtype).contiguous(
        memory_format=torch.channels_last)
    return module(x)

  fn = torch.compile(step) if compile_model else step
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  with torch.inference_mode():
    t0 = time.perf_counter()
    fn(images)
    sync()
    compile_s = time.perf_counter() - t0
    for _ in range(_WARMUP.value):
      fn(images)
    sync()
    t0 = time.perf_counter()
    for _ in range(_STEPS.value):
      fn(images)
    sync()
    elapsed = time.perf_counter() - t0
  return {'impl': f'{source}{"+compile" if compile_model else ""}',
          'compile_s': compile_s,
          'images_per_s': batch * _STEPS.value / elapsed}


def main(argv):
  del argv
  dtype = jnp.bfloat16 if _DTYPE.value == 'bfloat16' else jnp.float32
  device = jax.devices()[0]
  records = []
  for name in _MODELS.value:
    for batch in (int(b) for b in _BATCHES.value):
      base = {'model': name, 'batch': batch, 'dtype': _DTYPE.value,
              'jax_device': device.device_kind}
      rec = {**base, **time_flax(name, batch, dtype)}
      logging.info('%s', rec)
      records.append(rec)
      if not _TORCH.value:
        continue
      for comp in ([False, True] if _COMPILE.value else [False]):
        try:
          rec = {**base, **time_torch(name, batch, _DTYPE.value, comp)}
        except (ImportError, ValueError, RuntimeError) as e:
          logging.warning('PyTorch baseline for %s skipped: %s', name, e)
          break
        logging.info('%s', rec)
        records.append(rec)
  os.makedirs(_OUT.value, exist_ok=True)
  meta = {'jax': jax.__version__, 'platform': platform.platform(),
          'device': str(device), 'device_kind': device.device_kind,
          'steps': _STEPS.value, 'warmup': _WARMUP.value}
  with open(os.path.join(_OUT.value, 'results.json'), 'w') as f:
    json.dump({'meta': meta, 'records': records}, f, indent=1)
  lines = [f'Device: {device.device_kind}; jax {jax.__version__}; '
           f'dtype {_DTYPE.value}; {_STEPS.value} timed steps.', '',
           '| model | batch | impl | images/s | compile s | MFU |',
           '|---|---|---|---|---|---|']
  for r in records:
    mfu = f'{r["mfu"]:.1%}' if 'mfu' in r else '-'
    lines.append(f'| {r["model"]} | {r["batch"]} | {r["impl"]} | '
                 f'{r["images_per_s"]:.1f} | {r["compile_s"]:.1f} | {mfu} |')
  with open(os.path.join(_OUT.value, 'results.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))  # The table is the script's output.


if __name__ == '__main__':
  app.run(main)
