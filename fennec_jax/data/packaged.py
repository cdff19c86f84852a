"""Data files that ship inside installed Python packages (no downloads).

scikit-learn's wheel carries the UCI handwritten digits
(`sklearn/datasets/data/digits.csv.gz`) and scikit-image's carries sample
photographs (`skimage/data/*.png|jpg`). The files are located with
`importlib.util.find_spec`, which finds a package without importing it, so
neither library (nor its dependency tree) is loaded: the offline tasks read
the bytes only. Both are in the `offline2` extra of pyproject.toml.
"""

import functools
import importlib.util
import os

from fennec_jax.data import task_images

EXTRA = 'offline2'


@functools.cache
def package_file(package: str, *parts: str) -> str:
  """Path of `parts` inside installed `package` (not imported).

  Raises:
    MissingSystemDataError: the package or the file is not installed.
  """
  spec = importlib.util.find_spec(package)
  folders = list(spec.submodule_search_locations or []) if spec else []
  for folder in folders:
    path = os.path.join(folder, *parts)
    if os.path.exists(path):
      return path
  raise task_images.MissingSystemDataError(
      f'{"/".join((package,) + parts)} not found: the v2 offline tasks read '
      f'it from the installed {package!r} wheel. Install it with '
      f'`pip install -e ".[{EXTRA}]"` (no network needed where the wheel is '
      'in a local index).')
