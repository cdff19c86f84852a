r"""Proxy throughput: Flax ViT (fennec_jax) vs timm + torch.compile.

Measures images/s and model FLOP utilization (MFU) of ViT-B/16 and ViT-L/14
(the OpenAI CLIP tower without its projection, i.e. timm's
`vit_large_patch14_clip_quickgelu_224` with `num_classes=0`) at 224 px over a
batch-size sweep, in two modes per framework:

* `e2e`: end to end from uint8 host images: host batch -> device transfer
  (uint8) -> resize/normalize -> model -> features back on the host. JAX uses
  `fennec_jax.proxy.extract.FeatureExtractor` (prefetch thread, preprocessing
  fused into the jitted step, mesh over all devices). PyTorch copies pinned
  uint8 batches on a side CUDA stream (double-buffered) into a compiled
  preprocess + model function.
* `model`: the model alone on device-resident normalized inputs.

Compile / warm-up iterations are excluded; each configuration runs for at least
`--min_time_s`. MFU = analytic forward FLOPs (2 x multiply-adds of the patch
embedding, QKV/out projections, attention and MLP) x images/s / device peak
(`--peak_tflops`, or a table by device kind); `roofline` is the same against a
large matmul measured on this device in the same dtype.

GPU run (NVIDIA H200; --quick = ViT-B/16, batch 256, both modes, both
frameworks: 4 compiles, estimated 2-3 min; not yet run on a GPU):

  python experiments/benchmarks/proxy_throughput.py --quick --out=$OUT/b16

The same for ViT-L/14, and the full sweep (batches 128, 256, 512; one model
per command, each roughly 8-10 min, mostly torch.compile):

  python experiments/benchmarks/proxy_throughput.py --quick --models=vit_l14 \
      --out=$OUT/l14
  python experiments/benchmarks/proxy_throughput.py --models=vit_b16 \
      --out=$OUT/b16_sweep

CPU (this machine; small and float32, reports the ratio):

  python experiments/benchmarks/proxy_throughput.py --cpu_small --out=/tmp/pb

Needs jax, flax, numpy, pillow, absl; torch + timm for the PyTorch side (skipped
gracefully without them). Does not need jraph or tensorflow-datasets. Writes
`results.json` and `results.md` to `--out`.

Speed choices on the JAX side: fused QKV projection;
`jax.nn.dot_product_attention` with `implementation='cudnn'` (fused flash
attention; ~35% on an H200) on [batch, tokens, heads, head_dim] arrays, so no
transposes; bf16 parameters and activations with float32 LayerNorm statistics
and softmax; uint8 host->device transfer and resize/normalize fused into the
same jitted step; no recompiles.
Input buffers are not donated: a uint8 image batch cannot hold the float
features, so donation would only produce XLA warnings. XLA flags can be passed
with `--xla_flags` (applied before JAX initializes); candidates worth a try on
GPU: `--xla_gpu_enable_triton_gemm=false` (cuBLAS for all GEMMs),
`--xla_gpu_enable_cudnn_layer_norm=true`.
"""

import json
import os
import sys
import threading
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import numpy as np

# Run from a checkout without installing the package.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

_OUT = flags.DEFINE_string('out', None, 'Output directory (results.json/.md).')
_QUICK = flags.DEFINE_boolean(
    'quick', False, 'ViT-B/16 only (or --models), batch 256, 2 s per run.')
_CPU_SMALL = flags.DEFINE_boolean(
    'cpu_small', False, 'Tiny CPU run: ViT-B/16, float32, batch 8 and 16.')
_MODELS = flags.DEFINE_list('models', None, 'Subset of: vit_b16, vit_l14.')
_BATCHES = flags.DEFINE_list('batch_sizes', None, 'Batch sizes to sweep.')
_DTYPE = flags.DEFINE_enum('dtype', None, ['bfloat16', 'float32'],
                           'Compute dtype (default: bf16 on GPU, f32 on CPU).')
_ATTENTION = flags.DEFINE_enum(
    'attention', None, ['xla', 'cudnn'],
    'JAX attention implementation (default: cudnn on GPU, xla otherwise).')
_MIN_TIME = flags.DEFINE_float('min_time_s', None,
                               'Seconds each configuration runs (timed part).')
_SKIP_TORCH = flags.DEFINE_boolean('skip_torch', False,
                                   'Only run the JAX side.')
_TORCH_COMPILE = flags.DEFINE_boolean(
    'torch_compile', True, 'torch.compile the timm model (else eager).')
_MODES = flags.DEFINE_list('modes', ['e2e', 'model'], 'Modes to run.')
_PEAK = flags.DEFINE_float('peak_tflops', None,
                           'Device peak TFLOP/s for MFU (default: table).')
_XLA_FLAGS = flags.DEFINE_string('xla_flags', '',
                                 'Extra XLA_FLAGS, set before JAX starts.')
_REPEATS = flags.DEFINE_integer(
    'repeats', 3, 'Timed runs per framework, alternating JAX and PyTorch.')
_POOL = flags.DEFINE_integer('pool_images', 512,
                             'Distinct host images cycled through in e2e.')

# name -> (fennec_jax registry name + overrides, timm name, patch, width,
#          depth, mlp)
MODELS = {
    'vit_b16': (('vit_base_patch16_224', {}), 'vit_base_patch16_224', 16, 768,
                12, 3072),
    # OpenAI CLIP ViT-L/14 tower (quick-GELU) without the projection: the
    # same computation as timm's model with num_classes=0.
    'vit_l14': (('clip_vit_l14', {'proj_dim': None}),
                'vit_large_patch14_clip_quickgelu_224', 14, 1024, 24, 4096),
}
# Dense bf16 peak TFLOP/s by device kind substring (vendor datasheets).
PEAK_BF16_TFLOPS = {'H200': 989.0, 'H100': 989.0, 'A100': 312.0,
                    'L4': 121.0, 'TPU v5 lite': 197.0, 'TPU v4': 275.0}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def vit_flops(patch: int, width: int, depth: int, mlp: int,
              image: int = 224, cls: bool = True) -> float:
  """Forward FLOPs of one image (2 x multiply-adds), matmuls and attention."""
  n = (image // patch) ** 2
  t = n + int(cls)
  macs = n * patch * patch * 3 * width  # Patch embedding.
  per_layer = (t * width * 3 * width  # QKV.
               + 2 * t * t * width  # Q K^T and A V.
               + t * width * width  # Output projection.
               + 2 * t * width * mlp)  # MLP.
  return 2.0 * (macs + depth * per_layer)


class _CyclingImages:
  """`n` uint8 images cycling through a pool (the e2e input of JAX)."""

  def __init__(self, pool: np.ndarray, n: int):
    self.pool, self.n = pool, n
    self.image_shape = tuple(pool.shape[1:])
    self.labels = self.names = None

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> np.ndarray:
    return self.pool[i % len(self.pool)]

  def get_batch(self, start: int, stop: int) -> np.ndarray:
    p = len(self.pool)
    if start % p + (stop - start) <= p:
      return self.pool[start % p:start % p + stop - start]
    return np.stack([self.pool[i % p] for i in range(start, stop)])


def _timed(run_once, min_time_s: float) -> tuple[float, int]:
  """Calls `run_once() -> images` until `min_time_s` passed; (seconds, imgs)."""
  images, t0 = 0, time.perf_counter()
  while True:
    images += run_once()
    elapsed = time.perf_counter() - t0
    if elapsed >= min_time_s:
      return elapsed, images


def _iters_for(step, min_time_s: float) -> int:
  """Warms up with 2 steps; steps per timed call of ~`min_time_s` (>= 2)."""
  step()
  t0 = time.perf_counter()
  step()
  return max(2, int(min_time_s / max(time.perf_counter() - t0, 1e-6)))


def _calls_for(run, batch: int, min_time_s: float) -> int:
  """Warms up with 3 batches; images for one e2e call of ~`min_time_s`.

  One long call keeps the pipeline fill / drain (the first transfer is not
  overlapped) out of the steady-state rate.
  """
  t0 = time.perf_counter()
  run(3 * batch)
  rate = 3 * batch / (time.perf_counter() - t0)
  return max(3, int(np.ceil(rate * min_time_s / batch))) * batch


def _matmul_tflops(jax, jnp, dtype, size: int) -> float:
  """Measured TFLOP/s of a large square matmul (the device's roofline)."""
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  reps, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < 1.0:
    out = f(a)
    reps += 1
  out.block_until_ready()
  return 2 * size ** 3 * reps / (time.perf_counter() - t0) / 1e12


def run_jax(key: str, batch: int, mode: str, dtype_name: str,
            attention: str | None, min_time_s: float,
            pool: np.ndarray) -> tuple[float, Any]:
  """Builds and warms up one JAX configuration.

  Returns:
    (compile seconds, `once() -> images processed`).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from fennec_jax import models  # pylint: disable=g-import-not-at-top
  from fennec_jax.proxy import extract  # pylint: disable=g-import-not-at-top

  (name, overrides), _, *_ = MODELS[key]
  dtype = jnp.dtype(dtype_name)
  model = models.get_model(name, num_classes=0, dtype=dtype,
                           attention_impl=attention, **overrides)
  x0 = jnp.zeros((1, 224, 224, 3), jnp.float32)
  params = jax.jit(lambda r: model.init(r, x0))(jax.random.key(0))
  # Inference in bf16: cast the weights once instead of in every matmul.
  params = jax.tree.map(lambda p: p.astype(dtype), params)
  apply = lambda v, x: model.apply(v, x, train=False)
  n_dev = jax.device_count()
  if batch % n_dev:
    raise ValueError(f'batch {batch} not divisible by {n_dev} devices.')
  if mode == 'model':
    mesh = extract.make_mesh()
    data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
    params = jax.device_put(params, jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))
    x = jax.device_put(
        jax.random.normal(jax.random.key(1), (batch, 224, 224, 3),
                          jnp.float32), data)
    f = jax.jit(apply)
    t0 = time.perf_counter()
    f(params, x).block_until_ready()
    compile_s = time.perf_counter() - t0
    iters = _iters_for(lambda: f(params, x).block_until_ready(), min_time_s)

    def once():
      outs = [f(params, x) for _ in range(iters)]
      outs[-1].block_until_ready()
      return iters * batch
  else:
    prep = extract.Preprocessing(size=(224, 224), mean=MEAN, std=STD,
                                 interpolation='bilinear', crop_fraction=1.0)
    fx = extract.FeatureExtractor(apply, params, prep, batch_size=batch,
                                  log_every_s=1e9)
    t0 = time.perf_counter()
    fx(_CyclingImages(pool, batch))  # Compiles.
    compile_s = time.perf_counter() - t0
    per_call = _calls_for(lambda n: fx(_CyclingImages(pool, n)), batch,
                          min_time_s)

    def once():
      fx(_CyclingImages(pool, per_call))
      return per_call
  return compile_s, once


def run_torch(key: str, batch: int, mode: str, dtype_name: str,
              min_time_s: float, pool: np.ndarray,
              compile_model: bool) -> tuple[float, Any]:
  """Builds and warms up one timm configuration (torch.compile by default).

  Returns:
    (compile seconds, `once() -> images processed`).
  """
  import torch  # pylint: disable=g-import-not-at-top
  import timm  # pylint: disable=g-import-not-at-top

  _, timm_name, *_ = MODELS[key]
  # A fresh compile per configuration: with dynamo's cache kept, a second
  # batch size would recompile with dynamic shapes (slower kernels).
  torch._dynamo.reset()  # pylint: disable=protected-access
  cuda = torch.cuda.is_available()
  device = torch.device('cuda' if cuda else 'cpu')
  dtype = getattr(torch, dtype_name)
  model = timm.create_model(timm_name, pretrained=False, num_classes=0)
  model = model.eval().to(device=device, dtype=dtype)
  mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
  std = torch.tensor(STD, device=device).view(1, 3, 1, 1)

  def e2e_fn(u8):  # uint8 NHWC -> features; compiled together with the model.
    x = u8.permute(0, 3, 1, 2).float().div_(255.0)
    return model(((x - mean) / std).to(dtype))

  fn = e2e_fn if mode == 'e2e' else model
  if compile_model:
    fn = torch.compile(fn, dynamic=False)
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  pool_t = torch.from_numpy(pool)
  if cuda:
    pool_t = pool_t.pin_memory()
  with torch.inference_mode():
    if mode == 'model':
      x = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
      t0 = time.perf_counter()
      fn(x)
      sync()
      compile_s = time.perf_counter() - t0
      def step():
        fn(x)
        sync()

      iters = _iters_for(step, min_time_s)

      def once():
        for _ in range(iters):
          fn(x)
        sync()
        return iters * batch
    else:
      copy_stream = torch.cuda.Stream() if cuda else None
      n_pool = pool_t.shape[0]
      host_out = torch.empty((batch, model.num_features), dtype=dtype,
                             pin_memory=cuda)

      def batches(n):
        """Double-buffered uint8 host->device copies on a side stream."""
        nxt = None
        for start in range(0, n, batch):
          idx = torch.arange(start, start + batch) % n_pool
          src = (pool_t[start % n_pool:start % n_pool + batch]
                 if start % n_pool + batch <= n_pool else pool_t[idx])
          if cuda:
            with torch.cuda.stream(copy_stream):
              dev = src.to(device, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record(copy_stream)
          else:
            dev, ev = src, None
          if nxt is not None:
            yield nxt
          nxt = (dev, ev)
        if nxt is not None:
          yield nxt

      def run(n):
        for dev, ev in batches(n):
          if ev is not None:
            torch.cuda.current_stream().wait_event(ev)
          out = fn(dev)
          host_out.copy_(out, non_blocking=cuda)  # Features to the host.
        sync()
        return n

      t0 = time.perf_counter()
      run(batch)
      compile_s = time.perf_counter() - t0
      per_call = _calls_for(run, batch, min_time_s)
      once = lambda: run(per_call)

  def once_inference():
    with torch.inference_mode():
      return once()

  return compile_s, once_inference


def _fmt(v: float) -> str:
  return f'{v:,.0f}' if v >= 100 else f'{v:.3g}'


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  if not _OUT.value:
    raise app.UsageError('--out=DIR is required.')
  if _XLA_FLAGS.value:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' +
                               _XLA_FLAGS.value).strip()
  if not _SKIP_TORCH.value:
    # JAX and PyTorch share the GPU: JAX preallocates half instead of 75%.
    os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.5')
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  backend = jax.default_backend()
  device_kind = jax.devices()[0].device_kind
  gpu = backend == 'gpu'
  dtype = _DTYPE.value or ('float32' if _CPU_SMALL.value or backend == 'cpu'
                           else 'bfloat16')
  attention = _ATTENTION.value or ('cudnn' if gpu else 'xla')
  if _CPU_SMALL.value:
    keys, batches, min_time = ['vit_b16'], [8, 16], 5.0
  elif _QUICK.value:
    keys, batches, min_time = ['vit_b16'], [256], 2.0
  else:
    keys, batches, min_time = ['vit_b16', 'vit_l14'], [128, 256, 512], 4.0
  keys = _MODELS.value or keys
  batches = [int(b) for b in _BATCHES.value] if _BATCHES.value else batches
  min_time = _MIN_TIME.value or min_time
  peak = _PEAK.value
  if peak is None and dtype == 'bfloat16':
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_kind),
                None)
  roofline = _matmul_tflops(jax, jnp, jnp.dtype(dtype),
                            8192 if gpu else 2048)
  torch_info = None
  if not _SKIP_TORCH.value:
    try:
      import torch  # pylint: disable=g-import-not-at-top
      import timm  # pylint: disable=g-import-not-at-top
      torch_info = dict(torch=torch.__version__, timm=timm.__version__,
                        cuda=torch.cuda.is_available())
      if gpu and not torch.cuda.is_available():
        logging.warning('torch has no CUDA here; skipping the PyTorch side.')
        torch_info = None
    except ImportError as e:
      logging.warning('PyTorch side skipped: %s', e)
  import flax  # pylint: disable=g-import-not-at-top
  meta = dict(device=device_kind, backend=backend,
              device_count=jax.device_count(), jax=jax.__version__,
              flax=flax.__version__, dtype=dtype, attention=attention,
              min_time_s=min_time, peak_tflops=peak,
              matmul_roofline_tflops=roofline, xla_flags=os.environ.get(
                  'XLA_FLAGS', ''), torch=torch_info)
  logging.info('benchmark: %s', meta)
  pool_n = max(_POOL.value, max(batches))
  pool = np.random.default_rng(0).integers(0, 256, (pool_n, 224, 224, 3),
                                           np.uint8)
  rows, ratios = [], []
  for key in keys:
    _, _, patch, width, depth, mlp = MODELS[key]
    flops = vit_flops(patch, width, depth, mlp)
    for batch in batches:
      for mode in _MODES.value:
        builders = [('jax', lambda: run_jax(key, batch, mode, dtype,
                                            attention, min_time, pool))]
        if torch_info:
          name = 'timm+compile' if _TORCH_COMPILE.value else 'timm eager'
          builders.append((name, lambda: run_torch(
              key, batch, mode, dtype, min_time, pool, _TORCH_COMPILE.value)))
        sides = []
        for framework, build in builders:
          try:
            compile_s, once = build()
            sides.append((framework, compile_s, once))
          except Exception as e:  # pylint: disable=broad-except
            logging.exception('%s %s b%d %s failed', framework, key, batch,
                              mode)
            rows.append(dict(model=key, batch=batch, mode=mode,
                             framework=framework,
                             error=f'{type(e).__name__}: {e}'[:500]))
        # Alternate the frameworks `--repeats` times (drift and contention
        # hit both alike); report medians and the median of paired ratios.
        rates = {f: [] for f, _, _ in sides}
        for _ in range(_REPEATS.value):
          for framework, _, once in sides:
            seconds, images = _timed(once, min_time)
            rates[framework].append(images / seconds)
        for framework, compile_s, _ in sides:
          rate = float(np.median(rates[framework]))
          tflops = rate * flops / 1e12
          row = dict(model=key, batch=batch, mode=mode, framework=framework,
                     gflops_per_img=flops / 1e9, img_per_s=rate,
                     img_per_s_runs=rates[framework], compile_s=compile_s,
                     tflops=tflops, roofline=tflops / roofline,
                     mfu=tflops / peak if peak else None)
          rows.append(row)
          logging.info('%s', row)
        if len(sides) == 2:
          paired = [a / b for a, b in zip(rates[sides[0][0]],
                                          rates[sides[1][0]])]
          ratios.append(dict(model=key, batch=batch, mode=mode,
                             jax_over_torch=float(np.median(paired)),
                             paired=paired))
        del sides
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'results.json'), 'w') as f:
    json.dump(dict(meta=meta, results=rows, ratios=ratios), f, indent=1)
  lines = [f'# Proxy throughput on {device_kind} ({backend}, {dtype}, '
           f'attention={attention})', '',
           '| model | batch | mode | framework | img/s | TFLOP/s | MFU | '
           'of matmul roofline | compile s |', '|---|---|---|---|---|---|---|'
           '---|---|']
  for r in rows:
    if 'error' in r:
      lines.append(f"| {r['model']} | {r['batch']} | {r['mode']} | "
                   f"{r['framework']} | error: {r['error'][:60]} | | | | |")
      continue
    mfu = f"{r['mfu']:.1%}" if r['mfu'] is not None else 'n/a'
    lines.append(f"| {r['model']} | {r['batch']} | {r['mode']} | "
                 f"{r['framework']} | {_fmt(r['img_per_s'])} | "
                 f"{r['tflops']:.3g} | {mfu} | {r['roofline']:.1%} | "
                 f"{r['compile_s']:.1f} |")
  lines += ['', f'Matmul roofline measured here: {roofline:.3g} TFLOP/s; '
            f'peak used for MFU: {peak}.', '',
            '| model | batch | mode | JAX / PyTorch (median) | paired runs |',
            '|---|---|---|---|---|']
  lines += [f"| {r['model']} | {r['batch']} | {r['mode']} | "
            f"{r['jax_over_torch']:.3f}x | "
            f"{', '.join(f'{p:.2f}' for p in r['paired'])} |" for r in ratios]
  text = '\n'.join(lines) + '\n'
  with open(os.path.join(_OUT.value, 'results.md'), 'w') as f:
    f.write(text)
  print(text)


if __name__ == '__main__':
  app.run(main)
