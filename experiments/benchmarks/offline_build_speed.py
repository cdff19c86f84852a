r"""Speed of the offline builder's fine-tune step: vmapped group vs one by one.

Measures, per zoo architecture, the wall time of fine-tuning a group of
`--group` models on one target with the builder's own jitted function
(`fennec_jax.benchmarks.offline.build.finetune_fn`), once with `vmap` over
the group and once model by model, after a warm-up call (compile excluded).
Writes `<out>/offline_build_speed.json` and `.md`.

  python experiments/benchmarks/offline_build_speed.py --out=runs/speed \
      --steps=50

Runtime on the 2-core CPU: a few minutes of CPU time (10 archs x 2 modes x
2 calls); CPU seconds are reported next to wall seconds because the machine
is shared.
"""

import json
import os
import time

from absl import app
from absl import flags
import jax
import numpy as np

from fennec_jax import sharding
from fennec_jax.benchmarks.offline import build
from fennec_jax.benchmarks.offline import zoo

_OUT = flags.DEFINE_string('out', 'runs/offline_build_speed', 'Output dir.')
_STEPS = flags.DEFINE_integer('steps', 50, 'Fine-tune steps per call.')
_GROUP = flags.DEFINE_integer('group', 3, 'Models per architecture.')
_ARCHS = flags.DEFINE_list('archs', [], 'Archs (default: the zoo).')


def _time(fn, *args):
  """(wall s, process CPU s): CPU time is robust to a shared, busy machine."""
  t0, c0 = time.perf_counter(), time.process_time()
  out = fn(*args)
  jax.block_until_ready(out)
  return time.perf_counter() - t0, time.process_time() - c0


def main(argv):
  del argv
  config = build.default_config()
  config.finetune.steps = _STEPS.value
  mesh = sharding.make_mesh(1)
  rng = np.random.default_rng(0)
  n, nt = config.finetune.max_train, 500
  args = (rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8),
          rng.integers(0, 10, n).astype(np.int32), np.int32(800),
          np.arange(config.finetune.max_classes) < 10,
          rng.integers(0, 255, (nt, 28, 28, 3), dtype=np.uint8),
          rng.integers(0, 10, nt).astype(np.int32), np.int32(nt))
  rows = []
  archs = _ARCHS.value or [a[0] for a in config.archs]
  for arch in archs:
    module = zoo.make_classifier(arch, config.finetune.max_classes)
    x = np.zeros((1, 28, 28, 3), np.float32)
    backbones = []
    for i in range(_GROUP.value):
      v = module.init(jax.random.key(i), x)
      backbones.append({k: c['backbone'] for k, c in v.items()})
    row = dict(arch=arch, group=_GROUP.value, steps=_STEPS.value,
               batch_size=config.finetune.batch_size)
    for mode in ('vmap', 'loop'):
      config.vmap = mode == 'vmap'
      fn = build.finetune_fn(config, mesh, arch, 250, _GROUP.value)
      row[f'{mode}_first_call_s'], _ = _time(fn, backbones,
                                             jax.random.key(0), *args)
      row[f'{mode}_s'], row[f'{mode}_cpu_s'] = _time(
          fn, backbones, jax.random.key(1), *args)
    row['speedup_wall'] = row['loop_s'] / row['vmap_s']
    row['speedup_cpu'] = row['loop_cpu_s'] / row['vmap_cpu_s']
    print(json.dumps(row))
    rows.append(row)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'offline_build_speed.json'), 'w') as f:
    json.dump(dict(device=str(jax.devices()[0]), rows=rows), f, indent=1)
  with open(os.path.join(_OUT.value, 'offline_build_speed.md'), 'w') as f:
    f.write('| arch | vmap wall s | loop wall s | vmap CPU s | loop CPU s | '
            'loop/vmap (CPU) |\n|---|---|---|---|---|---|\n')
    for r in rows:
      f.write(f"| {r['arch']} | {r['vmap_s']:.2f} | {r['loop_s']:.2f} | "
              f"{r['vmap_cpu_s']:.2f} | {r['loop_cpu_s']:.2f} | "
              f"{r['speedup_cpu']:.2f} |\n")


if __name__ == '__main__':
  app.run(main)
