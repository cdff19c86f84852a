"""The offline task suite: image-classification tasks from offline sources.

Every task is a 28x28x3 uint8 image classification problem made from a source
that needs no network: Fashion-MNIST (Debian package `dataset-fashion-mnist`),
glyphs rendered from the DejaVu fonts that ship inside matplotlib (a core
dependency, so a fresh clone has them), and procedural shapes, textures and
counting scenes. A task is a `TaskSpec`; `generate(name, split)` returns its
images and labels, deterministically from the task's seed. The tfds builder in
`fennec_jax.data.builders.offline_tasks` wraps the same generators so the suite
reads like any tfds data set.

Roles: `target` tasks are what the benchmark fine-tunes on; `source` tasks
(and mixtures of them) pretrain the zoo. Fashion targets come from the official
Fashion-MNIST test file, fashion sources from the train file, procedural
sources use other seeds and other class definitions, so no source ever sees a
target's test split.
"""

import dataclasses
import functools
import gzip
import os
import pathlib
import struct
import zlib
from typing import Callable

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

IMAGE_SHAPE = (28, 28, 3)
SPLITS = ('train', 'test')
DOMAINS = ('fashion', 'glyph', 'shape', 'texture', 'count')
FASHION_ENV = 'FENNEC_FASHION_MNIST_DIR'
FASHION_DIR = '/usr/share/datasets/fashion-mnist'
FASHION_CLASSES = ('tshirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal',
                   'shirt', 'sneaker', 'bag', 'ankle_boot')

# (rng, split, n) -> (images uint8 [n, 28, 28, 3], labels int32 [n]).
Generator = Callable[[np.random.Generator, str, int],
                     tuple[np.ndarray, np.ndarray]]


class MissingSystemDataError(FileNotFoundError):
  """Raised when a task needs system data that is not installed."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One task of the suite.

  Attributes:
    name: unique task name.
    domain: one of `DOMAINS`, or 'mixture' for multi-domain sources.
    role: 'target' or 'source'.
    num_classes: number of classes (labels are 0..num_classes-1).
    train_size: examples in the train split.
    test_size: examples in the test split.
    generator: `generator(rng, split, n) -> (images, labels)`.
    description: one line on what the classes are.
    domains: the visual domains the task draws from.
    needs_system_data: True if it reads Fashion-MNIST from the system.
  """
  name: str
  domain: str
  role: str
  num_classes: int
  train_size: int
  test_size: int
  generator: Generator
  description: str
  domains: tuple[str, ...]
  needs_system_data: bool = False

  @property
  def seed(self) -> int:
    """Stable seed from the name (crc32), so adding tasks moves no other."""
    return zlib.crc32(self.name.encode())

  def size(self, split: str) -> int:
    if split not in SPLITS:
      raise ValueError(f'Unknown split {split!r} of task {self.name!r}; '
                       f'valid splits: {SPLITS}')
    return self.train_size if split == 'train' else self.test_size


_TASKS: dict[str, TaskSpec] = {}


def _register(spec: TaskSpec) -> None:
  if spec.name in _TASKS:
    raise ValueError(f'Task {spec.name!r} is registered twice.')
  _TASKS[spec.name] = spec


def list_tasks(role: str | None = None, domain: str | None = None,
               system_data: bool = True) -> list[str]:
  """Task names (in registration order), optionally filtered.

  Args:
    role: 'target' or 'source' to filter by role.
    domain: keep only tasks of this domain.
    system_data: if False, drop tasks that need Fashion-MNIST.

  Returns:
    The matching task names.
  """
  return [n for n, s in _TASKS.items()
          if (role is None or s.role == role)
          and (domain is None or s.domain == domain)
          and (system_data or not s.needs_system_data)]


def get_task(name: str) -> TaskSpec:
  """The `TaskSpec` of `name`; raises `ValueError` listing valid names."""
  try:
    return _TASKS[name]
  except KeyError:
    raise ValueError(f'Unknown task {name!r}; valid tasks: '
                     f'{", ".join(_TASKS)}') from None


def generate(name: str, split: str,
             size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Images and labels of one split of a task, deterministic from its seed.

  Args:
    name: task name (see `list_tasks`).
    split: 'train' or 'test'.
    size: number of examples (default: the task's split size). The first `k`
      examples do not depend on `size` only for the Fashion-MNIST tasks, so
      always pass the same size to get the same data.

  Returns:
    `(images, labels)`: uint8 `[n, 28, 28, 3]` and int32 `[n]`.

  Raises:
    ValueError: unknown task or split.
    MissingSystemDataError: Fashion-MNIST is not installed.
  """
  spec = get_task(name)
  n = spec.size(split) if size is None else int(size)
  rng = np.random.default_rng([spec.seed, SPLITS.index(split)])
  images, labels = spec.generator(rng, split, n)
  if images.shape != (n, *IMAGE_SHAPE) or images.dtype != np.uint8:
    raise AssertionError(f'{name}: bad images {images.shape} {images.dtype}')
  if labels.min() < 0 or labels.max() >= spec.num_classes:
    raise AssertionError(f'{name}: labels out of range')
  return images, labels.astype(np.int32)


def _balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
  return rng.permutation(np.arange(n) % k).astype(np.int32)


def _gray_to_rgb(x: np.ndarray) -> np.ndarray:
  return np.repeat(x[..., None], 3, axis=-1)


def _add_noise(rng: np.random.Generator, img: np.ndarray,
               sigma: float) -> np.ndarray:
  out = img.astype(np.float32) + rng.normal(0, sigma, img.shape)
  return np.clip(out, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- Fashion-MNIST


def _read_idx(path: pathlib.Path) -> np.ndarray:
  with gzip.open(path, 'rb') as f:
    data = f.read()
  magic, = struct.unpack('>I', data[:4])
  ndim = magic & 0xFF
  if magic >> 8 != 0x08 or ndim not in (1, 3):
    raise ValueError(f'{path}: not an IDX ubyte file (magic {magic:#x}).')
  dims = struct.unpack('>' + 'I' * ndim, data[4:4 + 4 * ndim])
  arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if arr.size != int(np.prod(dims)):
    raise ValueError(f'{path}: truncated, {arr.size} bytes for shape {dims}; '
                     'reinstall the dataset-fashion-mnist package.')
  return arr.reshape(dims)


@functools.cache
def fashion_mnist(part: str) -> tuple[np.ndarray, np.ndarray]:
  """Fashion-MNIST `part` ('train' = 60k file or 't10k' = 10k file).

  Args:
    part: 'train' or 't10k'.

  Returns:
    `(images uint8 [n, 28, 28], labels uint8 [n])`.

  Raises:
    MissingSystemDataError: the files are not installed.
  """
  root = pathlib.Path(os.environ.get(FASHION_ENV, FASHION_DIR))
  img = root / f'{part}-images-idx3-ubyte.gz'
  lab = root / f'{part}-labels-idx1-ubyte.gz'
  if not img.exists() or not lab.exists():
    raise MissingSystemDataError(
        f'Fashion-MNIST not found: {img} is missing. Install the Debian '
        'package `dataset-fashion-mnist` (sudo apt-get install '
        f'dataset-fashion-mnist) or point ${FASHION_ENV} at a folder with '
        'the four *-ubyte.gz files. Tasks that need no system data: '
        'list_tasks(system_data=False).')
  return _read_idx(img), _read_idx(lab)


def _fashion_pool(split: str, role: str) -> tuple[np.ndarray, np.ndarray]:
  """Targets draw from the 10k test file (train/test disjoint), sources 60k."""
  if role == 'source':
    return fashion_mnist('train')
  images, labels = fashion_mnist('t10k')
  order = np.random.default_rng(20260101).permutation(len(labels))
  idx = order[:6000] if split == 'train' else order[6000:]
  return images[idx], labels[idx]


def _fashion_task(classes: tuple[int, ...], role: str,
                  transform: str = 'none') -> Generator:
  """Subset of Fashion classes, relabelled 0..k-1 (or rotation labels)."""

  def gen(rng, split, n):
    images, labels = _fashion_pool(split, role)
    if transform == 'rotation_label':
      idx = rng.choice(len(labels), n, replace=False)
      y = _balanced_labels(rng, n, 4)
      x = np.stack([np.rot90(images[i], k) for i, k in zip(idx, y)])
      return _gray_to_rgb(x), y
    keep = np.flatnonzero(np.isin(labels, classes))
    if len(keep) < n:
      raise ValueError(f'Fashion-MNIST pool has {len(keep)} images of classes '
                       f'{classes}, fewer than the {n} requested.')
    idx = rng.choice(keep, n, replace=False)
    remap = {c: i for i, c in enumerate(classes)}
    y = np.array([remap[c] for c in labels[idx]], np.int32)
    x = images[idx]
    if transform == 'rot90':
      x = np.rot90(x, 1, axes=(1, 2))
    elif transform == 'invert':
      x = 255 - x
    elif transform == 'binary':
      y = (y >= len(classes) // 2).astype(np.int32)
    return _gray_to_rgb(np.ascontiguousarray(x)), y

  return gen


# ----------------------------------------------------------------------- glyphs

_FONT_FILES = ('DejaVuSans.ttf', 'DejaVuSans-Bold.ttf', 'DejaVuSans-Oblique.ttf',
               'DejaVuSerif.ttf', 'DejaVuSerif-Bold.ttf',
               'DejaVuSerif-Italic.ttf', 'DejaVuSansMono.ttf',
               'DejaVuSansMono-Bold.ttf')
_SYSTEM_FONT_DIR = '/usr/share/fonts/truetype/dejavu'


def _chars(start: int, stop: int, skip: tuple[int, ...] = ()) -> str:
  return ''.join(chr(c) for c in range(start, stop) if c not in skip)


CHARSETS = {
    'latin_upper': _chars(0x41, 0x5B),
    'latin_lower': _chars(0x61, 0x7B),
    'greek_upper': _chars(0x391, 0x3AA, skip=(0x3A2,)),
    'greek_lower': _chars(0x3B1, 0x3CA, skip=(0x3C2,)),
    'cyrillic_upper': _chars(0x410, 0x430),
    'cyrillic_lower': _chars(0x430, 0x450),
    'armenian_upper': _chars(0x531, 0x557),
    'armenian_lower': _chars(0x561, 0x587),
    'georgian': _chars(0x10D0, 0x10F1),
    'hebrew': _chars(0x5D0, 0x5EB),
    'digits': _chars(0x30, 0x3A),
    'symbols': '+-*/=<>%&@#$?!()[]{}~^' + _chars(0x2200, 0x2208),
    # 50 Braille cells with 2-5 raised dots, a fixed pick.
    'braille': ''.join(chr(0x2800 + m) for m in range(1, 256)
                       if 2 <= bin(m).count('1') <= 5)[::4][:50],
}


@functools.cache
def _font_path(filename: str) -> str:
  """Prefers matplotlib's bundled DejaVu (a pinned dependency) for determinism."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  for folder in (os.path.join(os.path.dirname(matplotlib.__file__),
                              'mpl-data', 'fonts', 'ttf'), _SYSTEM_FONT_DIR):
    path = os.path.join(folder, filename)
    if os.path.exists(path):
      return path
  raise MissingSystemDataError(
      f'DejaVu font {filename} not found in matplotlib\'s mpl-data or '
      f'{_SYSTEM_FONT_DIR}; reinstall matplotlib or install the Debian '
      'package fonts-dejavu-core.')


@functools.cache
def _covering_fonts(charset: str) -> tuple[str, ...]:
  """The font files that have a glyph for every character of `charset`."""
  from fontTools import ttLib  # pylint: disable=g-import-not-at-top
  out = []
  for f in _FONT_FILES:
    cmap = ttLib.TTFont(_font_path(f)).getBestCmap()
    if all(ord(c) in cmap for c in charset):
      out.append(f)
  if not out:
    raise MissingSystemDataError(f'No DejaVu font covers {charset!r}.')
  return tuple(out)


@functools.cache
def _font(filename: str, size: int) -> ImageFont.FreeTypeFont:
  return ImageFont.truetype(_font_path(filename), size)


def _render_glyph(rng: np.random.Generator, ch: str, font_file: str,
                  jitter: float = 1.0) -> np.ndarray:
  """One glyph, with size, stroke, rotation, position and contrast varied."""
  size = int(rng.integers(15, 23))
  canvas = Image.new('L', (44, 44), 0)
  draw = ImageDraw.Draw(canvas)
  stroke = int(rng.random() < 0.3 * jitter)
  draw.text((22 + rng.normal(0, 1.5 * jitter), 22 + rng.normal(0, 1.5 * jitter)),
            ch, font=_font(font_file, size), fill=255, anchor='mm',
            stroke_width=stroke, stroke_fill=255)
  canvas = canvas.rotate(float(rng.normal(0, 8 * jitter)),
                         resample=Image.Resampling.BILINEAR)
  arr = np.asarray(canvas, np.float32)[8:36, 8:36]
  fg, bg = rng.uniform(160, 255), rng.uniform(0, 70)
  arr = bg + (fg - bg) * arr / 255.0
  return _add_noise(rng, _gray_to_rgb(arr), 12.0)


def _glyph_task(charsets: tuple[str, ...], label: str = 'char',
                fonts: tuple[str, ...] | None = None) -> Generator:
  """Glyph task; label 'char' (which character), 'script', or 'font'."""

  def gen(rng, split, n):
    del split
    chars = [''.join(CHARSETS[c] for c in charsets)]
    if label == 'char':
      k = len(chars[0])
    elif label == 'script':
      k = len(charsets)
    else:
      k = len(fonts)
    y = _balanced_labels(rng, n, k)
    out = np.empty((n, *IMAGE_SHAPE), np.uint8)
    for i, yi in enumerate(y):
      if label == 'char':
        ch = chars[0][yi]
        avail = _covering_fonts(''.join(CHARSETS[c] for c in charsets))
        font = avail[rng.integers(len(avail))]
      elif label == 'script':
        cs = CHARSETS[charsets[yi]]
        ch = cs[rng.integers(len(cs))]
        avail = _covering_fonts(''.join(CHARSETS[c] for c in charsets))
        font = avail[rng.integers(len(avail))]
      else:
        cs = CHARSETS[charsets[0]]
        ch = cs[rng.integers(len(cs))]
        font = fonts[yi]
      out[i] = _render_glyph(rng, ch, font, jitter=0.5 if label == 'font'
                             else 1.0)
    return out, y

  return gen


# ----------------------------------------------------------------------- shapes

COLORS = np.array([[230, 40, 40], [40, 200, 60], [50, 80, 240], [240, 220, 40],
                   [40, 220, 230], [220, 50, 220], [245, 245, 245],
                   [250, 140, 20]], np.float32)
SHAPES = ('circle', 'square', 'triangle', 'diamond', 'star', 'cross', 'ring',
          'hexagon')


def _polygon(cx, cy, r, n, angle, star=False):
  pts = []
  m = 2 * n if star else n
  for i in range(m):
    rr = r * (0.45 if star and i % 2 else 1.0)
    t = angle + 2 * np.pi * i / m
    pts.append((cx + rr * np.cos(t), cy + rr * np.sin(t)))
  return pts


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float,
                r: float, angle: float, color: tuple[int, ...],
                filled: bool = True) -> None:
  """Draws on a 2x canvas (coordinates already scaled)."""
  fill = color if filled else None
  width = 3
  if kind == 'circle':
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=color,
                 width=width)
  elif kind == 'ring':
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=color,
                 width=max(3, int(r / 3)))
  elif kind == 'cross':
    w = r * 0.35
    arm = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r),
           (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
    c, s = np.cos(angle), np.sin(angle)
    pts = [(cx + c * x - s * y, cy + s * x + c * y) for x, y in arm]
    draw.polygon(pts, fill=fill, outline=color, width=width)
  else:
    n, off, star = {'square': (4, np.pi / 4, False),
                    'triangle': (3, -np.pi / 2, False),
                    'diamond': (4, 0.0, False), 'star': (5, -np.pi / 2, True),
                    'hexagon': (6, 0.0, False)}.get(kind, (None, 0, False))
    if n is None:
      n = int(kind.split('_')[1])  # 'poly_<n>'
    draw.polygon(_polygon(cx, cy, r, n, angle + off, star), fill=fill,
                 outline=color, width=width)


def _scene(rng: np.random.Generator, items: list[dict],
           noise: float = 10.0) -> np.ndarray:
  """Renders shapes `items` (dicts of _draw_shape args, 28px coords) at 2x."""
  bg = tuple(int(v) for v in rng.uniform(0, 60, 3))
  canvas = Image.new('RGB', (56, 56), bg)
  draw = ImageDraw.Draw(canvas)
  for it in items:
    _draw_shape(draw, it['kind'], 2 * it['cx'], 2 * it['cy'], 2 * it['r'],
                it.get('angle', 0.0), it['color'], it.get('filled', True))
  small = canvas.resize((28, 28), Image.Resampling.BOX)
  return _add_noise(rng, np.asarray(small), noise)


def _jitter_color(rng, k):
  c = COLORS[k] + rng.normal(0, 12, 3)
  return tuple(int(v) for v in np.clip(c, 0, 255))


def _random_color(rng):
  return _jitter_color(rng, int(rng.integers(len(COLORS))))


def _shape_task(label: str, kinds: tuple[str, ...] = SHAPES) -> Generator:
  """One shape per image; the label is its kind, color, size, place or fill."""
  k = {'kind': len(kinds), 'color': len(COLORS), 'size': 3, 'position': 4,
       'filled': 2, 'rotation': 4}[label]

  def gen(rng, split, n):
    del split
    y = _balanced_labels(rng, n, k)
    out = np.empty((n, *IMAGE_SHAPE), np.uint8)
    for i, yi in enumerate(y):
      kind = kinds[yi] if label == 'kind' else kinds[rng.integers(len(kinds))]
      r = rng.uniform(5, 9)
      if label == 'size':
        r = rng.uniform(*((3, 5), (6, 8), (9, 11.5))[yi])
      cx, cy = rng.uniform(r + 1, 27 - r, 2)
      if label == 'position':
        r = rng.uniform(3.5, 5.5)
        qx, qy = yi % 2, yi // 2
        cx = 14 * qx + rng.uniform(r + 0.5, 13.5 - r)
        cy = 14 * qy + rng.uniform(r + 0.5, 13.5 - r)
      angle = rng.uniform(0, 2 * np.pi)
      if label == 'rotation':
        angle = yi * np.pi / 2 + rng.normal(0, 0.15)
        kind = 'triangle'
      color = (_jitter_color(rng, yi) if label == 'color'
               else _random_color(rng))
      filled = bool(yi) if label == 'filled' else rng.random() < 0.8
      out[i] = _scene(rng, [dict(kind=kind, cx=cx, cy=cy, r=r, angle=angle,
                                 color=color, filled=filled)])
    return out, y

  return gen


def _pair_task() -> Generator:
  """Two shapes: label 1 if they are the same kind."""

  def gen(rng, split, n):
    del split
    y = _balanced_labels(rng, n, 2)
    out = np.empty((n, *IMAGE_SHAPE), np.uint8)
    for i, yi in enumerate(y):
      a = int(rng.integers(len(SHAPES)))
      b = a if yi else int((a + rng.integers(1, len(SHAPES))) % len(SHAPES))
      items = []
      for j, kind in enumerate((SHAPES[a], SHAPES[b])):
        items.append(dict(kind=kind, cx=rng.uniform(6, 8) + 14 * j,
                          cy=rng.uniform(6, 22), r=rng.uniform(4, 5.5),
                          angle=rng.uniform(0, 6.3), color=_random_color(rng)))
      out[i] = _scene(rng, items)
    return out, y

  return gen


# --------------------------------------------------------------------- textures

TEXTURES = ('stripes', 'checker', 'dots', 'noise', 'waves', 'grid', 'rings',
            'blotches')
_YY, _XX = np.mgrid[0:28, 0:28].astype(np.float32)


def _texture(rng: np.random.Generator, kind: str, freq: float,
             theta: float) -> np.ndarray:
  """A [28, 28] pattern in [0, 1]."""
  phase = rng.uniform(0, 2 * np.pi)
  u = _XX * np.cos(theta) + _YY * np.sin(theta)
  v = -_XX * np.sin(theta) + _YY * np.cos(theta)
  if kind == 'stripes':
    p = np.sin(2 * np.pi * freq * u + phase) > 0
  elif kind == 'sine':
    p = 0.5 + 0.5 * np.sin(2 * np.pi * freq * u + phase)
  elif kind == 'checker':
    s = 0.5 / freq
    p = (np.floor(u / s) + np.floor(v / s)) % 2
  elif kind == 'dots':
    s = 1.0 / freq
    p = (((u % s) - s / 2) ** 2 + ((v % s) - s / 2) ** 2) < (s / 3.2) ** 2
  elif kind == 'noise':
    p = rng.random((28, 28)) > 0.5
  elif kind == 'waves':
    p = np.sin(2 * np.pi * freq * u + phase) * np.sin(
        2 * np.pi * freq * v + phase)
    p = p > 0.0
  elif kind == 'grid':
    s = 1.0 / freq
    p = ((u % s) < 1.6) | ((v % s) < 1.6)
  elif kind == 'rings':
    cx, cy = rng.uniform(4, 24, 2)
    p = np.sin(2 * np.pi * freq * np.hypot(_XX - cx, _YY - cy) + phase) > 0
  elif kind == 'blotches':
    from scipy import ndimage  # pylint: disable=g-import-not-at-top
    z = ndimage.gaussian_filter(rng.normal(size=(28, 28)), 0.35 / freq,
                                mode='wrap')
    p = z > 0
  else:
    raise ValueError(f'Unknown texture {kind!r}')
  return p.astype(np.float32)


def _colorize(rng, p, noise=14.0):
  a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
  while np.abs(a - b).sum() < 150:
    b = rng.uniform(0, 255, 3)
  img = a + (b - a) * p[..., None]
  return _add_noise(rng, img, noise)


def _texture_task(label: str, kinds: tuple[str, ...] = TEXTURES,
                  bins: int = 8, fmin: float = 0.08,
                  fmax: float = 0.3) -> Generator:
  """Texture label: its kind, orientation bin, frequency bin or blob scale."""
  k = len(kinds) if label == 'kind' else bins

  def gen(rng, split, n):
    del split
    y = _balanced_labels(rng, n, k)
    out = np.empty((n, *IMAGE_SHAPE), np.uint8)
    for i, yi in enumerate(y):
      freq = rng.uniform(fmin, fmax)
      theta = rng.uniform(0, np.pi)
      kind = kinds[rng.integers(len(kinds))]
      if label == 'kind':
        kind = kinds[yi]
      elif label == 'orientation':
        theta = (yi + rng.uniform(0.1, 0.9)) * np.pi / bins
      elif label == 'frequency':
        edges = np.geomspace(fmin, fmax, bins + 1)
        freq = rng.uniform(edges[yi], edges[yi + 1])
      out[i] = _colorize(rng, _texture(rng, kind, freq, theta))
    return out, y

  return gen


# --------------------------------------------------------------------- counting


def _place(rng, count, r, tries=200):
  pts = []
  for _ in range(tries):
    if len(pts) == count:
      break
    p = rng.uniform(r + 1, 27 - r, 2)
    if all(np.hypot(*(p - q)) > 2 * r + 1.5 for q in pts):
      pts.append(p)
  return pts


def _count_task(lo: int, hi: int, target: str = 'dot', label: str = 'count',
                distractors: int = 0, rmin: float = 1.8,
                rmax: float = 2.6) -> Generator:
  """Count the `target` items (lo..hi of them) among optional distractors."""
  k = 2 if label == 'parity' else hi - lo + 1

  def gen(rng, split, n):
    del split
    y = _balanced_labels(rng, n, k)
    out = np.empty((n, *IMAGE_SHAPE), np.uint8)
    for i, yi in enumerate(y):
      if label == 'parity':
        c = int(rng.integers(lo, hi + 1))
        while c % 2 != yi:
          c = int(rng.integers(lo, hi + 1))
      else:
        c = lo + int(yi)
      r = rng.uniform(rmin, rmax)
      nd = int(rng.integers(0, distractors + 1))
      pts = _place(rng, c + nd, r)
      items = []
      if target == 'line':
        canvas = Image.new('RGB', (56, 56), tuple(
            int(v) for v in rng.uniform(0, 60, 3)))
        draw = ImageDraw.Draw(canvas)
        xs = np.sort(rng.choice(np.arange(4, 52, 4), c, replace=False))
        for x in xs:
          draw.line([(x, rng.uniform(2, 14)), (x + rng.uniform(-6, 6),
                                              rng.uniform(42, 54))],
                    fill=_random_color(rng), width=3)
        out[i] = _add_noise(rng, np.asarray(
            canvas.resize((28, 28), Image.Resampling.BOX)), 10.0)
        continue
      for j, p in enumerate(pts):
        kind = ('square' if target == 'square' else 'circle') if j < c else (
            'circle' if target == 'square' else 'triangle')
        items.append(dict(kind=kind, cx=p[0], cy=p[1], r=r,
                          angle=rng.uniform(0, 6.3), color=_random_color(rng)))
      out[i] = _scene(rng, items)
    return out, y

  return gen


# --------------------------------------------------------------------- mixtures


def _mixture(parts: tuple[str, ...]) -> Generator:
  """Union of tasks `parts` with label offsets, examples split evenly."""

  def gen(rng, split, n):
    xs, ys, offset = [], [], 0
    for j, part in enumerate(parts):
      spec = get_task(part)
      m = n // len(parts) + (j < n % len(parts))
      sub = np.random.default_rng([spec.seed, SPLITS.index(split),
                                   int(rng.integers(2**31))])
      x, y = spec.generator(sub, split, m)
      xs.append(x)
      ys.append(y + offset)
      offset += spec.num_classes
    perm = rng.permutation(n)
    return np.concatenate(xs)[perm], np.concatenate(ys)[perm]

  return gen


# ------------------------------------------------------------------ the suite


def _add(name, domain, role, k, gen, desc, train, test=500, domains=None):
  _register(TaskSpec(name, domain, role, k, train, test, gen, desc,
                     tuple(domains or (domain,)),
                     needs_system_data='fashion' in (domains or (domain,))))


def _define_suite() -> None:
  """Registers the targets, then the sources, then the mixtures."""
  t = 'target'
  # Fashion-MNIST targets (from the official 10k test file).
  _add('fashion_all', 'fashion', t, 10, _fashion_task(tuple(range(10)), t),
       'all 10 Fashion-MNIST classes', 800)
  _add('fashion_tops', 'fashion', t, 4, _fashion_task((0, 2, 4, 6), t),
       't-shirt / pullover / coat / shirt (fine-grained)', 600)
  _add('fashion_footwear', 'fashion', t, 3, _fashion_task((5, 7, 9), t),
       'sandal / sneaker / ankle boot', 500)
  _add('fashion_rot90', 'fashion', t, 10,
       _fashion_task(tuple(range(10)), t, 'rot90'),
       '10 classes, images rotated 90 degrees', 1000)
  _add('fashion_inverted', 'fashion', t, 10,
       _fashion_task(tuple(range(10)), t, 'invert'),
       '10 classes, contrast inverted', 600)
  # Glyph targets.
  for cs, n in (('latin_upper', 1000), ('greek_upper', 800),
                ('cyrillic_upper', 1200), ('armenian_upper', 1200),
                ('georgian', 1000), ('hebrew', 800), ('digits', 500),
                ('braille', 1500)):
    _add(f'glyph_{cs}', 'glyph', t, len(CHARSETS[cs]), _glyph_task((cs,)),
         f'which {cs.replace("_", " ")} character', n)
  scripts = ('latin_upper', 'greek_upper', 'cyrillic_upper', 'armenian_upper',
             'georgian', 'hebrew')
  _add('glyph_script', 'glyph', t, len(scripts), _glyph_task(scripts, 'script'),
       'which script a letter is from (6 scripts)', 600)
  fonts = ('DejaVuSans.ttf', 'DejaVuSerif.ttf', 'DejaVuSansMono.ttf',
           'DejaVuSans-Bold.ttf')
  _add('glyph_font', 'glyph', t, len(fonts),
       _glyph_task(('latin_upper',), 'font', fonts),
       'which font (sans / serif / mono / sans bold)', 800)
  # Shapes.
  _add('shape_kind', 'shape', t, 8, _shape_task('kind'),
       'which of 8 shapes', 600)
  _add('shape_color', 'shape', t, 8, _shape_task('color'),
       'which of 8 colors', 500)
  _add('shape_size', 'shape', t, 3, _shape_task('size'),
       'small / medium / large', 500)
  _add('shape_position', 'shape', t, 4, _shape_task('position'),
       'which quadrant', 500)
  _add('shape_filled', 'shape', t, 2, _shape_task('filled'),
       'filled or outline', 500)
  # Textures.
  _add('texture_kind', 'texture', t, 8, _texture_task('kind'),
       'which of 8 texture kinds', 800)
  _add('texture_orientation', 'texture', t, 8,
       _texture_task('orientation', ('stripes', 'sine')),
       'grating orientation, 8 bins of 22.5 degrees', 600)
  _add('texture_frequency', 'texture', t, 5,
       _texture_task('frequency', ('stripes', 'checker', 'rings'), bins=5,
                     fmin=0.05, fmax=0.35),
       'spatial frequency, 5 log-spaced bins', 600)
  # Counting.
  _add('count_dots', 'count', t, 9, _count_task(1, 9),
       'number of dots, 1-9', 1000)
  _add('count_squares', 'count', t, 6,
       _count_task(0, 5, 'square', distractors=3, rmin=2.2, rmax=3.0),
       'number of squares (0-5) among circles', 800)
  _add('count_parity', 'count', t, 2, _count_task(1, 8, label='parity'),
       'even or odd number of dots', 600)

  s = 'source'
  n_src = 3000
  _add('src_fashion_all', 'fashion', s, 10, _fashion_task(tuple(range(10)), s),
       'Fashion-MNIST train file, 10 classes', n_src)
  _add('src_fashion_upper', 'fashion', s, 5,
       _fashion_task((0, 2, 3, 4, 6), s), 'upper-body garments', n_src)
  _add('src_fashion_lower', 'fashion', s, 5,
       _fashion_task((1, 5, 7, 8, 9), s), 'trousers, shoes, bags', n_src)
  _add('src_fashion_rotation', 'fashion', s, 4,
       _fashion_task(tuple(range(10)), s, 'rotation_label'),
       'which of 4 rotations', n_src)
  for cs in ('latin_lower', 'greek_lower', 'cyrillic_lower', 'armenian_lower',
             'symbols'):
    _add(f'src_glyph_{cs}', 'glyph', s, len(CHARSETS[cs]), _glyph_task((cs,)),
         f'which {cs.replace("_", " ")} character', n_src)
  sfonts = ('DejaVuSans.ttf', 'DejaVuSerif.ttf', 'DejaVuSansMono.ttf',
            'DejaVuSerif-Bold.ttf', 'DejaVuSans-Oblique.ttf',
            'DejaVuSerif-Italic.ttf')
  _add('src_glyph_fonts', 'glyph', s, len(sfonts),
       _glyph_task(('latin_lower',), 'font', sfonts), 'which of 6 fonts',
       n_src)
  _add('src_shape_polygon', 'shape', s, 6,
       _shape_task('kind', tuple(f'poly_{k}' for k in range(3, 9))),
       'polygon with 3-8 sides', n_src)
  _add('src_shape_rotation', 'shape', s, 4, _shape_task('rotation'),
       'triangle pointing right/down/left/up', n_src)
  _add('src_shape_pairs', 'shape', s, 2, _pair_task(),
       'two shapes: same kind or not', n_src)
  _add('src_shape_kind4', 'shape', s, 4,
       _shape_task('kind', ('circle', 'square', 'triangle', 'cross')),
       'circle / square / triangle / cross', n_src)
  _add('src_texture_gabor', 'texture', s, 4,
       _texture_task('orientation', ('sine',), bins=4, fmin=0.05, fmax=0.12),
       'coarse sine grating orientation, 4 bins', n_src)
  _add('src_texture_scale', 'texture', s, 4,
       _texture_task('frequency', ('blotches', 'dots'), bins=4, fmin=0.06,
                     fmax=0.4), 'blob / dot scale, 4 bins', n_src)
  _add('src_texture_kind4', 'texture', s, 4,
       _texture_task('kind', ('stripes', 'checker', 'noise', 'rings')),
       'stripes / checker / noise / rings', n_src)
  _add('src_count_big', 'count', s, 5,
       _count_task(1, 5, rmin=3.0, rmax=4.0), 'count 1-5 big blobs', n_src)
  _add('src_count_lines', 'count', s, 6, _count_task(1, 6, 'line'),
       'count 1-6 lines', n_src)
  mixes = (('fashion_all', 'glyph_latin_lower'),
           ('glyph_greek_lower', 'shape_polygon'),
           ('shape_kind4', 'texture_kind4'),
           ('texture_gabor', 'count_big'),
           ('count_lines', 'fashion_upper'),
           ('fashion_lower', 'texture_scale'),
           ('glyph_symbols', 'count_big'),
           ('shape_rotation', 'count_lines'),
           ('shape_pairs', 'texture_gabor', 'count_big'),
           ('fashion_rotation', 'shape_kind4'),
           ('glyph_cyrillic_lower', 'texture_kind4'))
  for parts in mixes:
    parts = tuple(f'src_{p}' for p in parts)
    specs = [get_task(p) for p in parts]
    doms = tuple(dict.fromkeys(x.domain for x in specs))
    name = 'mix_' + '_'.join(p.replace('src_', '').split('_')[0] + '-'
                             + p.replace('src_', '').split('_')[-1]
                             for p in parts)
    _add(name, 'mixture', s, sum(x.num_classes for x in specs),
         _mixture(parts), 'mixture of ' + ', '.join(parts), n_src, 500, doms)


def proxy_sources() -> list[str]:
  """The proxy's broad mixture: every single-domain source task."""
  return [n for n in list_tasks(role='source') if get_task(n).domain
          != 'mixture']


_define_suite()
