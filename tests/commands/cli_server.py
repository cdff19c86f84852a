"""Runs `fennec` commands for the tests, each in a fresh forked process.

A command defines its absl flags at import, so each must run in its own
process; but a new interpreter spends ~4 CPU seconds importing JAX, SciPy and
fennec_jax before the command starts. This server imports those once (no
command module, no JAX backend: nothing that forking would break) and forks a
child per command, whose exit status, stdout and stderr are the command's as
`python -m fennec_jax.cli ARGS` gives them (cli_test runs that entry point
itself once).

Protocol: each stdin line is a JSON list of calls `{"args": [...], "env":
{name: value or null}}`; the calls of a line run at once, and one stdout line
answers with a JSON list of `{"returncode", "stdout", "stderr"}`.
`Client` below starts the server and speaks the protocol; `run_many` and
`close` keep one client for a test process.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback

_TIMEOUT_S = 600


def _child(args: list[str], env: dict[str, str | None], out: str,
           err: str) -> None:
  """In the forked child: runs `fennec ARGS` into files, never returns."""
  signal.alarm(_TIMEOUT_S)  # A hung command dies (status -14), not the suite.
  from fennec_jax import cli  # pylint: disable=g-import-not-at-top
  devnull = os.open(os.devnull, os.O_RDONLY)
  os.dup2(devnull, 0)
  for fd, path in ((1, out), (2, err)):
    os.dup2(os.open(path, os.O_WRONLY | os.O_TRUNC), fd)
  for name, value in env.items():
    if value is None:
      os.environ.pop(name, None)
    else:
      os.environ[name] = value
  code = 1
  try:
    cli.run(['fennec', *args])
    code = 0
  except SystemExit as e:  # As the interpreter turns it into a status.
    if e.code is None:
      code = 0
    elif isinstance(e.code, int):
      code = e.code
    else:
      print(e.code, file=sys.stderr)
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


def _run_all(calls: list[dict]) -> list[dict]:
  """Forks one child per call, all at once; their results in call order."""
  sys.stdout.flush()
  sys.stderr.flush()
  with tempfile.TemporaryDirectory() as tmp:
    running = []
    for i, call in enumerate(calls):
      out, err = os.path.join(tmp, f'{i}.out'), os.path.join(tmp, f'{i}.err')
      for path in (out, err):
        open(path, 'w').close()
      pid = os.fork()
      if pid == 0:
        _child(call['args'], call.get('env', {}), out, err)
      running.append((pid, out, err))
    results = []
    for pid, out, err in running:
      _, status = os.waitpid(pid, 0)
      with open(out) as f_out, open(err) as f_err:
        results.append({'returncode': os.waitstatus_to_exitcode(status),
                        'stdout': f_out.read(), 'stderr': f_err.read()})
  return results


def serve() -> None:
  os.environ['JAX_PLATFORMS'] = 'cpu'
  # What every command imports; importing no command module defines no flag.
  # pylint: disable=g-import-not-at-top,unused-import
  import fennec_jax.benchmarks.runner
  import fennec_jax.cli
  # pylint: enable=g-import-not-at-top,unused-import
  for line in sys.stdin:
    print(json.dumps(_run_all(json.loads(line))), flush=True)


class Client:
  """Starts the server in the repository root; runs commands through it."""

  def __init__(self, root: str):
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               PYTHONPATH=os.pathsep.join(
                   [root] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    self._proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__)], cwd=root, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

  def run_many(self, *calls: tuple[tuple[str, ...], dict]
               ) -> list[subprocess.CompletedProcess]:
    """Runs `(args, env)` calls at once; env values None unset a variable."""
    request = [{'args': list(args), 'env': env} for args, env in calls]
    self._proc.stdin.write(json.dumps(request) + '\n')
    self._proc.stdin.flush()
    line = self._proc.stdout.readline()
    if not line:
      raise RuntimeError(f'the fennec test server exited with status '
                         f'{self._proc.wait()}')
    return [subprocess.CompletedProcess(['fennec', *args], r['returncode'],
                                        r['stdout'], r['stderr'])
            for (args, _), r in zip(calls, json.loads(line))]

  def close(self) -> None:
    self._proc.stdin.close()
    self._proc.wait(timeout=60)
    self._proc.stdout.close()


_client = None


def run_many(root: str, *calls: tuple[tuple[str, ...], dict]
             ) -> list[subprocess.CompletedProcess]:
  """`Client.run_many` on this process's client, started on first use."""
  global _client
  if _client is None:
    _client = Client(root)
  return _client.run_many(*calls)


def close() -> None:
  """Stops the client; a later `run_many` starts a new one (pytest-xdist's
  loadscope may come back to a test module after tearing it down)."""
  global _client
  if _client is not None:
    _client.close()
    _client = None


if __name__ == '__main__':
  serve()
