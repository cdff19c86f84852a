r"""Runs `experiments/main.py` as several JAX processes.

On one host (CPU collectives over localhost, each process with fake CPU
devices), the multi-host path tested without a cluster:

  python experiments/launch_local.py --num_processes=2 -- \
      --config=experiments/configs/full_benchmark.py:tiny --workdir=/tmp/fb2

On every worker of a TPU VM (JAX finds the coordinator by itself), the same
command each worker runs (e.g. `gcloud compute tpus tpu-vm ssh NAME
--worker=all --command=...`):

  python experiments/launch_local.py --tpu_vm -- \
      --config=experiments/configs/full_benchmark.py --workdir=/shared/run

Everything after `--` goes to main.py. A worker that fails stops the others
and the launcher exits with its status.
"""

import argparse
import os
import runpy
import subprocess
import sys
import time
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
_MAIN = os.path.join(_HERE, 'main.py')


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--num_processes', type=int, default=2)
  p.add_argument('--devices_per_process', type=int, default=2)
  p.add_argument('--port', type=int, default=0, help='0 = a free port')
  p.add_argument('--tpu_vm', action='store_true',
                 help='this is one worker of a TPU VM: jax.distributed finds '
                 'the others itself')
  p.add_argument('--worker', type=int, default=-1, help=argparse.SUPPRESS)
  if '--' in argv:
    i = argv.index('--')
    own, main_args = argv[:i], argv[i + 1:]
  else:
    own, main_args = argv, []
  args = p.parse_args(own)
  if not args.tpu_vm and args.num_processes < 1:
    p.error(f'--num_processes={args.num_processes}; must be >= 1.')
  return args, main_args


def _run_main(main_args):
  """Runs main.py in this worker; a failure exits at once.

  A worker that raises would otherwise wait at `jax.distributed`'s
  shutdown barrier for the others (minutes) before its status shows.
  """
  sys.argv = [_MAIN] + main_args
  try:
    runpy.run_path(_MAIN, run_name='__main__')
  except SystemExit as e:
    if e.code not in (None, 0):
      _exit_now(e.code if isinstance(e.code, int) else 1)
    raise
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    _exit_now(1)


def _exit_now(status):
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access


def main(argv):
  args, main_args = _parse(argv)
  sys.path.insert(0, os.path.dirname(_HERE))
  from fennec_jax.benchmarks.full import distributed  # pylint: disable=g-import-not-at-top
  if args.tpu_vm:
    distributed.initialize()
    return _run_main(main_args)
  if args.worker >= 0:
    distributed.initialize(f'127.0.0.1:{args.port}', args.num_processes,
                           args.worker, args.devices_per_process)
    return _run_main(main_args)
  port = args.port or distributed.free_port()
  procs = []
  for i in range(args.num_processes):
    cmd = [sys.executable, os.path.abspath(__file__),
           f'--num_processes={args.num_processes}',
           f'--devices_per_process={args.devices_per_process}',
           f'--port={port}', f'--worker={i}', '--'] + main_args
    procs.append(subprocess.Popen(cmd))
  status = 0
  while procs:
    for proc in list(procs):
      rc = proc.poll()
      if rc is None:
        continue
      procs.remove(proc)
      if rc and not status:
        status = rc
        for other in procs:  # One failed: the others would wait forever.
          other.kill()
    time.sleep(0.2)
  sys.exit(status)


if __name__ == '__main__':
  main(sys.argv[1:])
