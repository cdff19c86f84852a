"""The `fennec` command: `fennec <command> [--flags]`.

Each command lives in `fennec_jax.commands.<module>`, which defines its absl
flags at import time. Only the chosen command's module is imported, so flags of
one command never leak into another and importing `fennec_jax` itself defines
none.
The experiment commands (evaluate, build-benchmark, nas-bench, demo) map their
flags onto a `fennec_jax.benchmarks.runner` config and run it; score,
features and recommend are tools, not experiments, and call the library
directly.

`fennec --help` lists the commands; `fennec <command> --help` (or `-h`,
`--helpshort`) that command's flags with their help and defaults.

Errors of the user's input (a bad flag value, a missing or malformed file, a
damaged checkpoint: `ValueError`, `FileNotFoundError`, `NotADirectoryError`,
`IsADirectoryError`, `PermissionError`, `checkpoint.CheckpointError`, absl
flag errors) print `fennec <command>: error: ...` on one or two lines and exit
with code 2, without a traceback. `fennec --verbose <command> ...` (the flag
may stand anywhere on the line) or the environment variable
`FENNEC_VERBOSE=1` also prints the traceback. Other exceptions are bugs and
always show their traceback.
"""

import ast
import importlib
import importlib.util
import os
import sys
import traceback

from absl import app
from absl import flags

# command name -> module under fennec_jax.commands (each has `main(argv)`).
COMMANDS = {
    'evaluate': 'evaluate',
    'score': 'score',
    'features': 'features',
    'nas-bench': 'nas_bench',
    'build-benchmark': 'build_benchmark',
    'recommend': 'recommend',
    'demo': 'demo',
    'list': 'listing',
}
# absl's --helpshort would list the flags of the `fennec_jax.cli` module
# (none); here it lists the command's, as --help does. --helpfull stays
# absl's: every flag of every loaded library.
_HELP_FLAGS = ('-h', '--help', '-help', '-?', '--helpshort', '-helpshort')
_VERBOSE_FLAGS = ('--verbose', '-verbose')
VERBOSE_ENV = 'FENNEC_VERBOSE'
# Exit status of a user error (bad flag, file or data), as argparse uses.
USER_ERROR_EXIT = 2
# Errors of the user's input: printed without a traceback
# (`checkpoint.CheckpointError` is a ValueError).
_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError,
                IsADirectoryError, PermissionError, flags.Error)


def _module_name(command: str) -> str:
  return f'fennec_jax.commands.{COMMANDS[command]}'


def _summary(command: str) -> str:
  """First docstring line of a command's module, read without importing it
  (importing defines its flags, which would clash with other commands')."""
  spec = importlib.util.find_spec(_module_name(command))
  with open(spec.origin) as f:
    doc = ast.get_docstring(ast.parse(f.read())) or ''
  first = doc.splitlines()[0] if doc else ''
  return first.split(': ', 1)[-1]


def _usage() -> str:
  width = max(len(c) for c in COMMANDS)
  lines = [f'  {c:{width}s}  {_summary(c)}' for c in sorted(COMMANDS)]
  return ('usage: fennec <command> [--flags]\n\ncommands:\n' + '\n'.join(lines)
          + '\n\n`fennec <command> --help` lists the flags of a command.\n'
          f'`--verbose` (or {VERBOSE_ENV}=1) adds the traceback to an error.')


def command_help(command: str) -> str:
  """The module docstring and the flags (help and default) of `command`."""
  module = importlib.import_module(_module_name(command))
  return (f'{module.__doc__.strip()}\n\nflags of fennec {command}:\n'
          f'{flags.FLAGS.module_help(module)}')


def _verbose(argv: list[str]) -> bool:
  """Whether `--verbose` is on the command line or FENNEC_VERBOSE is set."""
  return (any(a in _VERBOSE_FLAGS for a in argv)
          or os.environ.get(VERBOSE_ENV, '') not in ('', '0'))


def _report(prog: str, error: BaseException, verbose: bool) -> None:
  """Prints a user error (and its traceback when `verbose`), exits 2."""
  if verbose:
    traceback.print_exception(error)
  message = str(error) or type(error).__name__
  if isinstance(error, OSError) and error.filename and error.strerror:
    message = f'{error.filename}: {error.strerror}.'
  if 'Traceback (most recent call last)' in message:
    # A flag parser (e.g. ml_collections' config_flags) that embeds the
    # traceback of the error in its message: keep its first and last lines.
    lines = [l.strip() for l in message.splitlines() if l.strip()]
    message = f'{lines[0]} {lines[-1]}'
  if isinstance(error, flags.Error):
    message += f' (see `{prog} --help`)'
  print(f'{prog}: error: {message}', file=sys.stderr)
  sys.exit(USER_ERROR_EXIT)


def _main_reporting_errors(main, verbose: bool):
  """`main` with user errors printed as `fennec <command>: error: ...`."""
  def wrapped(argv: list[str]) -> None:
    try:
      main(argv)
    except _USER_ERRORS as e:
      _report(argv[0], e, verbose)
  return wrapped


def _flags_parser(verbose: bool):
  """absl's flag parsing with a bad flag reported as a user error."""
  def parse(argv: list[str]) -> list[str]:
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      _report(argv[0], e, verbose)
  return parse


def run(argv: list[str] | None = None) -> None:
  """Entry point of the `fennec` console script."""
  argv = list(sys.argv if argv is None else argv)
  verbose = _verbose(argv)
  argv = [a for a in argv if a not in _VERBOSE_FLAGS]
  if len(argv) < 2 or argv[1] in _HELP_FLAGS + ('help',):
    print(_usage())
    sys.exit(0 if len(argv) >= 2 else 2)
  name = argv[1]
  if name not in COMMANDS:
    print(f'fennec: unknown command {name!r}.\n{_usage()}', file=sys.stderr)
    sys.exit(2)
  if any(a in _HELP_FLAGS for a in argv[2:]):
    print(command_help(name))
    sys.exit(0)
  module = importlib.import_module(_module_name(name))
  app.run(_main_reporting_errors(module.main, verbose),
          argv=[f'fennec {name}'] + argv[2:],
          flags_parser=_flags_parser(verbose))


if __name__ == '__main__':
  run()
