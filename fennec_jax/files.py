"""Atomic writes: a killed run leaves the old file (or directory) or none.

Every output of the package (tables, features, stored units of a resumable
run, checkpoints written in another library's format) goes through
`write_atomically`, so no reader ever sees half a file.
"""

import os
import shutil
from typing import Callable
import uuid


def write_atomically(path: str, write: Callable[[str], None]) -> None:
  """Calls `write(temp_path)`, then renames the temporary path to `path`.

  The temporary path sits next to `path` (same file system, so the rename is
  atomic) and ends with the same name, so writers that check or add a suffix
  (e.g. `np.savez`) keep it. A file is flushed to disk before the rename. The
  temporary file or directory is removed if `write` fails.

  Args:
    path: the final file or directory (an existing directory is not replaced:
      `os.replace` refuses a non-empty one).
    write: writes a complete file, or a directory, at the path it is given.
  """
  directory, base = os.path.split(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  temp = os.path.join(directory, f'.{uuid.uuid4().hex[:8]}.tmp.{base}')
  try:
    write(temp)
    if os.path.isfile(temp):
      with open(temp, 'rb') as f:
        os.fsync(f.fileno())
    os.replace(temp, path)
  finally:
    if os.path.isdir(temp):
      shutil.rmtree(temp, ignore_errors=True)
    elif os.path.exists(temp):
      os.remove(temp)


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically."""
  def write(temp):
    with open(temp, 'w') as f:
      f.write(text)
  write_atomically(path, write)
