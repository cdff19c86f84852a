"""Checks of the commands' flags that run before any work.

A command validates every output path and every cheap-to-check value first,
so a typo costs seconds, not a whole run; each check raises `ValueError`
naming the flag, the value and what is valid (the CLI prints it on one line
and exits with code 2). Outputs are then written through
`fennec_jax.files.write_atomically`, so a killed run leaves the old file or
none, never part of one.
"""

import os
from typing import Iterable, Sequence


def _nearest_existing(path: str) -> str:
  """`path`, or its closest ancestor that exists."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return path


def _check_creatable_dir(flag: str, value: str, directory: str) -> None:
  """`directory` exists as a writable directory or can be created."""
  existing = _nearest_existing(directory)
  if not os.path.isdir(existing):
    raise ValueError(f'{flag}={value}: {existing} is a file, not a '
                     'directory.')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f'{flag}={value}: directory {existing} is not '
                     'writable.')


def output_dir(flag: str, path: str) -> None:
  """Checks that `path` can be a command's output directory.

  Args:
    flag: the flag's name as typed, e.g. '--out'.
    path: its value.

  Raises:
    ValueError: `path` is empty, an existing file, or a directory (or the
      ancestor it would be created in) that is not writable.
  """
  if not path:
    raise ValueError(f'{flag} is empty; give an output directory.')
  _check_creatable_dir(flag, path, path)


def output_file(flag: str, path: str, *, suffix: str = '',
                overwrite: bool = True) -> None:
  """Checks that `path` can be written as one output file.

  Args:
    flag: the flag's name as typed, e.g. '--out'.
    path: its value.
    suffix: required file name ending (e.g. '.npz'), or '' for any.
    overwrite: whether an existing file may be replaced.

  Raises:
    ValueError: `path` is empty, lacks `suffix`, is an existing directory,
      exists while `overwrite` is False, or its directory cannot be written.
  """
  if not path:
    raise ValueError(f'{flag} is empty; give an output file.')
  if suffix and not path.endswith(suffix):
    raise ValueError(f'{flag}={path}: must name a {suffix} file.')
  if os.path.isdir(path):
    raise ValueError(f'{flag}={path} is a directory; give a file path.')
  if os.path.lexists(path) and not overwrite:
    raise ValueError(f'{flag}={path} already exists; remove it or choose '
                     'another path.')
  _check_creatable_dir(flag, path, os.path.dirname(os.path.abspath(path)))


def new_path(flag: str, path: str) -> None:
  """Checks that `path` does not exist and can be created.

  Raises:
    ValueError: `path` exists, or its parent cannot be written.
  """
  if os.path.lexists(path):
    raise ValueError(f'{flag}={path} already exists; remove it or choose '
                     'another path.')
  _check_creatable_dir(flag, path, os.path.dirname(os.path.abspath(path)))


def at_least(flag: str, value: int, minimum: int) -> None:
  """Raises ValueError unless `value >= minimum`."""
  if value < minimum:
    raise ValueError(f'{flag}={value}: must be >= {minimum}.')


def integers(flag: str, values: Sequence[str], minimum: int) -> tuple[int, ...]:
  """The integers of a list flag, each at least `minimum`.

  Raises:
    ValueError: a value that is not an integer or is below `minimum`.
  """
  out = []
  for value in values:
    try:
      number = int(value)
    except ValueError:
      raise ValueError(f'{flag} must be integers >= {minimum}, got '
                       f'{value!r} in {",".join(values)}.') from None
    if number < minimum:
      raise ValueError(f'{flag} must be integers >= {minimum}, got {number}.')
    out.append(number)
  return tuple(out)


def names(flag: str, values: Iterable[str], valid: Sequence[str]) -> None:
  """Raises ValueError naming every value of a list flag not in `valid`."""
  values = list(values)
  unknown = [v for v in values if v not in valid]
  if unknown:
    raise ValueError(f'{flag}: unknown name(s) {unknown}; valid: '
                     f'{", ".join(valid)}.')
  if not values:
    raise ValueError(f'{flag} is empty; valid: {", ".join(valid)}.')
