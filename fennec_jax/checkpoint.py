"""The package's one checkpoint format: orbax arrays + a JSON manifest.

A checkpoint is a directory holding

* `state/`: a nested dict of bool or numeric arrays written by
  `orbax.checkpoint.StandardCheckpointer`;
* `fennec.json`: the manifest: `kind` (which class wrote it), `format_version`,
  `meta` (the writer's configuration, ids and scalars), the arrays' shapes and
  dtypes, and `sha256`, a content hash over the manifest and every array.

Zero-size arrays, which orbax refuses, are kept in the manifest as shapes. The
directory is written under a temporary name and renamed when complete, so a
crash leaves no partial checkpoint. Loading checks the kind, the version and
the hash, so a foreign, damaged or hand-edited checkpoint is reported in one
line naming the file.
"""

from collections.abc import Mapping
import hashlib
import json
import os
import shutil
from typing import Any
import uuid

import jax
import jax.numpy as jnp
import numpy as np

MANIFEST = 'fennec.json'
STATE_DIR = 'state'
FORMAT_VERSION = 2


def _orbax() -> Any:
  """`orbax.checkpoint`, imported on first use.

  Importing orbax logs through absl before any flags are parsed, which
  installs a root logging handler; importing fennec_jax must not (see
  tests/import_test.py), so the import waits until a checkpoint is read or
  written.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp


def _checkpointer() -> Any:
  """A `StandardCheckpointer` of the calling process alone.

  The arrays are host (NumPy) arrays every caller holds whole, so one
  process writes or reads them without the others; orbax's default would
  wait at a barrier for every `jax.distributed` process (a multi-process
  run whose process 0 alone writes a checkpoint would hang).
  """
  ocp = _orbax()
  if jax.process_count() == 1:
    return ocp.StandardCheckpointer()
  me = jax.process_index()
  return ocp.StandardCheckpointer(
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          primary_host=me, active_processes={me}))


class CheckpointError(ValueError):
  """A checkpoint that is missing, foreign, of another version or damaged."""


def _storable(dtype: np.dtype) -> bool:
  """Whether orbax (tensorstore) writes arrays of `dtype`."""
  return dtype == np.bool_ or jnp.issubdtype(dtype, jnp.number)


def _flatten(arrays: Mapping[str, Any], prefix: str = ''
             ) -> dict[str, np.ndarray]:
  """`{'a/b': array}` from a nested dict, checking keys and dtypes."""
  out = {}
  for key, value in arrays.items():
    if not isinstance(key, str) or not key or '/' in key:
      raise ValueError(f'checkpoint array keys must be non-empty strings '
                       f'without "/", got {key!r}.')
    if isinstance(value, Mapping):
      if not value:
        raise ValueError(f'checkpoint array group {prefix + key!r} is empty; '
                         'a round trip would drop it.')
      out.update(_flatten(value, f'{prefix}{key}/'))
    else:
      a = np.asarray(value)
      if not _storable(a.dtype):
        raise ValueError(f'checkpoint array {prefix + key!r} has dtype '
                         f'{a.dtype}; valid: bool and numeric dtypes (put '
                         'strings and objects in meta).')
      out[prefix + key] = a
  return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for name, value in flat.items():
    *groups, key = name.split('/')
    node = out
    for g in groups:
      node = node.setdefault(g, {})
    node[key] = value
  return out


def _digest(manifest: Mapping[str, Any], flat: Mapping[str, np.ndarray]
            ) -> str:
  h = hashlib.sha256()
  h.update(json.dumps({k: v for k, v in manifest.items() if k != 'sha256'},
                      sort_keys=True).encode())
  for name in sorted(flat):
    a = np.ascontiguousarray(flat[name])
    h.update(name.encode())
    h.update(str(a.dtype).encode())
    h.update(str(a.shape).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def save(path: str, kind: str, arrays: Mapping[str, Any],
         meta: Mapping[str, Any]) -> None:
  """Writes a checkpoint directory.

  Nothing is written when an argument is invalid (arrays orbax cannot
  write included), and a save that fails part-way removes its temporary
  directory: `path` appears complete or not at all.

  Args:
    path: a directory that must not exist yet (made absolute).
    kind: the writer's name (e.g. 'Fennec'); `load` checks it.
    arrays: a nested dict of bool or numeric arrays (keys without '/', no
      empty groups).
    meta: JSON-serializable configuration, ids and scalars; `load` returns
      it as JSON reads it back (tuples become lists, keys strings).

  Raises:
    ValueError: `path` exists, a key is not a plain string, a group is
      empty, an array is not bool or numeric, or `meta` is not JSON.
  """
  path = os.path.abspath(path)
  if os.path.exists(path):
    raise ValueError(f'{path} exists; choose a new checkpoint directory.')
  flat = _flatten(arrays)
  try:  # The hash covers what `load` will read: meta after a JSON trip.
    meta = json.loads(json.dumps(meta))
  except (TypeError, ValueError) as e:
    raise ValueError(f'checkpoint meta of {path} is not JSON-serializable: '
                     f'{e}') from None
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  manifest = {
      'kind': kind,
      'format_version': FORMAT_VERSION,
      'meta': meta,
      'arrays': {k: [list(v.shape), str(v.dtype)] for k, v in flat.items()},
  }
  manifest['sha256'] = _digest(manifest, flat)
  # makedirs (unlike mkdtemp's 0o700) gives the checkpoint the umask's mode.
  tmp = os.path.join(parent,
                     f'.{os.path.basename(path)}.{uuid.uuid4().hex}.tmp')
  os.makedirs(tmp)
  try:
    stored = {k: v for k, v in flat.items() if v.size}
    if stored:
      # Leaving the block closes the checkpointer's threads, also on error.
      with _checkpointer() as ckptr:
        ckptr.save(os.path.join(tmp, STATE_DIR), _unflatten(stored))
        ckptr.wait_until_finished()
    with open(os.path.join(tmp, MANIFEST), 'w') as f:
      json.dump(manifest, f, indent=1)
    os.rename(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def read_manifest(path: str) -> dict[str, Any]:
  """The manifest of the checkpoint at `path`.

  Raises:
    CheckpointError: no such directory, no manifest, or unreadable JSON.
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise CheckpointError(f'{path}: no such checkpoint directory.')
  manifest_path = os.path.join(path, MANIFEST)
  if not os.path.exists(manifest_path):
    raise CheckpointError(f'{path} is not a fennec_jax checkpoint (no '
                          f'{MANIFEST}).')
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f'{manifest_path}: not valid JSON ({e}); the '
                          'checkpoint is damaged.') from None
  if not isinstance(manifest, dict):
    raise CheckpointError(f'{manifest_path}: expected a JSON object.')
  return manifest


def load(path: str, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """Reads a checkpoint written by `save`.

  Args:
    path: the checkpoint directory.
    kind: the kind the caller expects.

  Returns:
    (arrays as a nested dict of NumPy arrays, meta).

  Raises:
    CheckpointError: a missing directory, a checkpoint of another kind or
      format version, or one whose content does not match its hash (damaged
      or edited), each naming the file.
  """
  path = os.path.abspath(path)
  manifest = read_manifest(path)
  manifest_path = os.path.join(path, MANIFEST)
  if manifest.get('kind') != kind:
    raise CheckpointError(f'{manifest_path}: a {manifest.get("kind")!r} '
                          f'checkpoint; expected {kind!r}.')
  if manifest.get('format_version') != FORMAT_VERSION:
    raise CheckpointError(f'{manifest_path}: format_version '
                          f'{manifest.get("format_version")!r}; this code '
                          f'reads {FORMAT_VERSION}.')
  try:
    shapes = {k: (tuple(int(n) for n in s), np.dtype(d))
              for k, (s, d) in manifest.get('arrays', {}).items()}
  except (AttributeError, TypeError, ValueError) as e:
    raise CheckpointError(f'{manifest_path}: unreadable array shapes '
                          f'({e}); the checkpoint is damaged.') from None
  stored = {k: jax.ShapeDtypeStruct(s, d) for k, (s, d) in shapes.items()
            if int(np.prod(s))}
  flat = {k: np.zeros(s, d) for k, (s, d) in shapes.items()
          if not int(np.prod(s))}
  if stored:
    try:
      with _checkpointer() as ckptr:
        restored = ckptr.restore(os.path.join(path, STATE_DIR),
                                 _unflatten(stored))
    except Exception as e:  # orbax/tensorstore raise many types.
      raise CheckpointError(f'{os.path.join(path, STATE_DIR)}: cannot read '
                            f'the arrays ({type(e).__name__}); the checkpoint '
                            'is damaged.') from e
    flat.update({k: np.asarray(v) for k, v in _flatten(restored).items()})
  if _digest(manifest, flat) != manifest.get('sha256'):
    raise CheckpointError(f'{manifest_path}: the content does not match its '
                          'sha256; the checkpoint was damaged or edited.')
  return _unflatten(flat), manifest.get('meta')


def config_diff(expected: Mapping[str, Any], saved: Mapping[str, Any],
                prefix: str = '') -> dict[str, tuple[Any, Any]]:
  """`{'a.b': (expected, saved)}` for every differing leaf of two nested
  JSON configurations: what a configuration-mismatch error names."""
  out = {}
  for k in sorted(set(expected) | set(saved)):
    a, b = expected.get(k), saved.get(k)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      out.update(config_diff(a, b, f'{prefix}{k}.'))
    elif a != b:
      out[f'{prefix}{k}'] = (a, b)
  return out
