"""The `fennec` command: `fennec <command> [--flags]`.

Each command lives in `fennec_jax.commands.<module>`, which defines its absl flags
at import time. Only the chosen command's module is imported, so flags of one
command never leak into another and importing `fennec_jax` itself defines none.
"""

import importlib
import sys

from absl import app

# command name -> module under fennec_jax.commands (each has `main(argv)`).
COMMANDS = {
    'evaluate': 'evaluate',
    'score': 'score',
    'features': 'features',
    'nas-bench': 'nas_bench',
    'build-benchmark': 'build_benchmark',
    'recommend': 'recommend',
    'demo': 'demo',
}


def _usage() -> str:
  names = ', '.join(sorted(COMMANDS))
  return f'usage: fennec <command> [--flags]; commands: {names}'


def run(argv: list[str] | None = None) -> None:
  """Entry point of the `fennec` console script."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(_usage())
    sys.exit(0 if len(argv) >= 2 else 2)
  name = argv[1]
  if name not in COMMANDS:
    print(f'fennec: unknown command {name!r}. {_usage()}', file=sys.stderr)
    sys.exit(2)
  module = importlib.import_module(f'fennec_jax.commands.{COMMANDS[name]}')
  app.run(module.main, argv=[f'fennec {name}'] + argv[2:])


if __name__ == '__main__':
  run()
