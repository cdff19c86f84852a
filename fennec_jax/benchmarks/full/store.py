"""The run's resumable work store: one atomic file per finished unit.

Layout under the work directory:

  probes/<task>.npz            probe indices, labels, proxy subset
  proxy/<task>.npz             proxy features of the subset + seconds
  features/<task>/<model>.npz  a candidate's features (+ source probs)
  scores/<task>/<model>.json   every estimator's score of that pair + times

Each file is written under a temporary name and renamed, so a run killed at
any moment leaves finished units whole and nothing half-written; a restart
finds them and skips them (logged). Every process writes its own copy of
what it computed (all processes hold the same gathered arrays, so copies on
a shared directory are identical, and hosts with local disks each keep
theirs); a unit counts as done only when every process has it
(`all_have`), so processes never disagree on what to skip.
"""

import json
import os
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from fennec_jax import files


def write_npz(path: str, arrays: dict[str, Any]) -> None:
  """Atomically writes `arrays` to `path` (`.npz`)."""
  def write(tmp):
    with open(tmp, 'wb') as f:
      np.savez(f, **arrays)
  files.write_atomically(path, write)


def write_json(path: str, obj: Any) -> None:
  """Atomically writes `obj` as JSON to `path`."""
  def write(tmp):
    with open(tmp, 'w') as f:
      json.dump(obj, f, indent=1, sort_keys=True)
  files.write_atomically(path, write)


def write_text(path: str, text: str) -> None:
  """Atomically writes `text` to `path`."""
  def write(tmp):
    with open(tmp, 'w') as f:
      f.write(text)
  files.write_atomically(path, write)


def all_have(path: str) -> bool:
  """Whether `path` exists for every process (one small collective)."""
  here = os.path.exists(path)
  if jax.process_count() == 1:
    return here
  flags = multihost_utils.process_allgather(np.asarray([here], np.int32))
  return bool(np.all(np.asarray(flags)))


class Store:
  """Paths and reads of the work store (see the module docstring)."""

  def __init__(self, workdir: str):
    self.root = os.path.abspath(workdir)
    self.skipped = 0  # Units found finished (for the log and tests).
    self.computed = 0

  def probe_path(self, task: str) -> str:
    return os.path.join(self.root, 'probes', f'{task}.npz')

  def proxy_path(self, task: str) -> str:
    return os.path.join(self.root, 'proxy', f'{task}.npz')

  def features_path(self, task: str, model: str) -> str:
    return os.path.join(self.root, 'features', task, f'{model}.npz')

  def scores_path(self, task: str, model: str) -> str:
    return os.path.join(self.root, 'scores', task, f'{model}.json')

  def done(self, path: str, what: str, valid=None) -> bool:
    """Whether a unit is finished everywhere; logs a skip.

    Args:
      path: the unit's file.
      what: the unit, for the log.
      valid: optional `valid(path) -> bool`: a finished file that does not
        hold what this run needs (e.g. an estimator added to the config)
        counts as not done (logged).
    """
    if all_have(path):
      if valid is not None and not valid(path):
        logging.info('resume: %s is stored without what this config asks '
                     'for; recomputing it.', what)
        return False
      self.skipped += 1
      logging.info('resume: %s already done (%s); skipped.', what,
                   os.path.relpath(path, self.root))
      return True
    return False

  @staticmethod
  def read_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}

  @staticmethod
  def read_json(path: str) -> Any:
    with open(path) as f:
      return json.load(f)
