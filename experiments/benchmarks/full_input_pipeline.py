r"""Speed: the full benchmark's probe reading, today's reader vs grain.

Both read the same probe of JPEG records from one array_record file (what
`tfds build --file_format=array_record` writes, read the way
`tfds.data_source` reads it: random access, decode on the host) and hand
over the probe as uint8 images resized to the model's input on the host
(PIL, `fennec_jax.proxy.extract.host_resize`), in probe order:

* `thread`: today's path: `tasks.ProbeImages` decodes (and caches) each
  image and `FeatureExtractor`'s prefetch thread resizes them one by one;
* `grain`: `grain.MapDataset.range(probe size).map(read + decode + resize)
  .to_iter_dataset(ReadOptions(num_threads=N))`, N threads at work.

Images/s of the whole probe, each reader run alternately `--repeats`
times (median), side by side in one process; ratios are against `thread`.
The device side is identical for both and left out. grain is optional
(`pip install grain`): without it only `thread` runs.

  PYTHONPATH=. python experiments/benchmarks/full_input_pipeline.py \
      --images=500 --out=DIR
"""

from concurrent import futures
import io
import json
import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from fennec_jax.benchmarks.full import tasks as tasks_lib
from fennec_jax.proxy import extract

_IMAGES = flags.DEFINE_integer('images', 500, 'Probe images.')
_RECORDS = flags.DEFINE_integer('records', 1000, 'Records in the file.')
_THREADS = flags.DEFINE_list('threads', ['1', '2', '8'],
                             'grain read threads to try.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Alternating runs per reader.')
_OUT = flags.DEFINE_string('out', None, 'Output directory (results.json).')


def _write_records(path: str, n: int) -> None:
  """`n` JPEG records (smooth random images, 300-500 px sides, quality 90)
  with a label byte, in one array_record file."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  writer = array_record_module.ArrayRecordWriter(path, 'group_size:1')
  for i in range(n):
    h, w = rng.integers(300, 501, 2)
    small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), np.uint8)
    img = Image.fromarray(small).resize((int(w), int(h)), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format='JPEG', quality=90)
    writer.write(bytes([i % 100]) + buf.getvalue())
  writer.close()


class _Records:
  """Random access to the file's decoded records, as tfds.data_source."""

  def __init__(self, path: str):
    from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top
    self._src = array_record_data_source.ArrayRecordDataSource([path])

  def __len__(self):
    return len(self._src)

  def __getitem__(self, i):
    raw = self._src[int(i)]
    return {'label': raw[0],
            'image': np.asarray(Image.open(io.BytesIO(raw[1:])).convert(
                'RGB'))}


class _Reader:
  """The `tasks.TaskReader` interface over `_Records`."""

  def __init__(self, records: _Records):
    self._records = records

  def image(self, i):
    return self._records[i]['image']


def _thread(records, probe, prep):
  """Today's path: ProbeImages + one resize at a time (fresh cache)."""
  images = tasks_lib.ProbeImages(_Reader(records), probe)
  return np.stack([extract.host_resize(images[i], prep)
                   for i in range(len(images))])


def _pool(records, probe, prep, pool):
  """The run's path: batches of 8 resized by the pool (fresh cache)."""
  images = tasks_lib.ProbeImages(_Reader(records), probe).resized(prep, pool)
  return np.concatenate([images.get_batch(i, min(i + 8, len(images)))
                         for i in range(0, len(images), 8)])


def _grain(records, probe, prep, threads):
  import grain  # pylint: disable=g-import-not-at-top
  ds = (grain.MapDataset.range(len(probe))
        .map(lambda i: records[probe[i]])
        .map(lambda r: extract.host_resize(r['image'], prep))
        .to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                           prefetch_buffer_size=64)))
  return np.stack(list(ds))


def main(argv):
  del argv
  try:
    import grain  # pylint: disable=g-import-not-at-top,unused-import
    have_grain = True
  except ImportError:
    have_grain = False
  prep = extract.Preprocessing()
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'probe.array_record')
    _write_records(path, _RECORDS.value)
    records = _Records(path)
    probe = np.sort(np.random.default_rng(1).permutation(len(records))[
        :_IMAGES.value])
    readers = {'thread': lambda: _thread(records, probe, prep)}
    pools = {t: futures.ThreadPoolExecutor(int(t)) for t in _THREADS.value}
    for t, pool in pools.items():
      readers[f'pool_{t}'] = lambda p=pool: _pool(records, probe, prep, p)
    if have_grain:
      for t in _THREADS.value:
        readers[f'grain_{t}'] = (
            lambda t=int(t): _grain(records, probe, prep, t))
    want = _thread(records, probe, prep)
    times = {k: [] for k in readers}
    for _ in range(_REPEATS.value):
      for name, fn in readers.items():
        start = time.perf_counter()
        got = fn()
        times[name].append(time.perf_counter() - start)
        np.testing.assert_array_equal(got, want, err_msg=name)
  rates = {k: _IMAGES.value / statistics.median(v) for k, v in times.items()}
  result = {'images': _IMAGES.value, 'cpus': os.cpu_count(),
            'load_average': os.getloadavg(), 'img_per_s': rates,
            'ratio_vs_thread': {k: v / rates['thread']
                                for k, v in rates.items()},
            'seconds': times, 'grain': have_grain}
  print(json.dumps(result, indent=1))
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, 'results.json'), 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  app.run(main)
