"""Shape and counting tasks: scenes of simple shapes.

A scene is drawn with PIL on a 56x56 canvas and box-downsampled to 28x28, so
edges are anti-aliased; colors are jittered around a fixed palette. Shape
tasks label one shape by its kind, color, size, quadrant, fill or rotation (or
a pair by whether the kinds match); counting tasks label how many target items
a scene holds, among optional distractors.
"""

import numpy as np
from PIL import Image
from PIL import ImageDraw

from fennec_jax.data import task_images

COLORS = np.array([[230, 40, 40], [40, 200, 60], [50, 80, 240], [240, 220, 40],
                   [40, 220, 230], [220, 50, 220], [245, 245, 245],
                   [250, 140, 20]], np.float32)
SHAPES = ('circle', 'square', 'triangle', 'diamond', 'star', 'cross', 'ring',
          'hexagon')


def _polygon(cx, cy, r, n, angle, star=False):
  """Vertices of a regular `n`-gon (or `n`-pointed star) around (cx, cy)."""
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
  return task_images.add_noise(rng, np.asarray(small), noise)


def _jitter_color(rng, k):
  """Palette color `k` with Gaussian jitter, as an RGB int tuple."""
  c = COLORS[k] + rng.normal(0, 12, 3)
  return tuple(int(v) for v in np.clip(c, 0, 255))


def _random_color(rng):
  """A jittered color of a random palette entry."""
  return _jitter_color(rng, int(rng.integers(len(COLORS))))


def shape_task(label: str,
               kinds: tuple[str, ...] = SHAPES) -> task_images.Generator:
  """One shape per image; the label is its kind, color, size, place or fill.

  Args:
    label: 'kind', 'color', 'size' (3 bins), 'position' (quadrant), 'filled'
      or 'rotation' (a triangle turned by one of 4 right angles).
    kinds: the shape kinds drawn (`SHAPES` or 'poly_<n>' polygons).

  Returns:
    The task's generator.
  """
  k = {'kind': len(kinds), 'color': len(COLORS), 'size': 3, 'position': 4,
       'filled': 2, 'rotation': 4}[label]

  def gen(rng, split, n):
    del split
    y = task_images.balanced_labels(rng, n, k)
    out = np.empty((n, *task_images.IMAGE_SHAPE), np.uint8)
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


def pair_task() -> task_images.Generator:
  """Two shapes: label 1 if they are the same kind."""

  def gen(rng, split, n):
    del split
    y = task_images.balanced_labels(rng, n, 2)
    out = np.empty((n, *task_images.IMAGE_SHAPE), np.uint8)
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



def _place(rng, count, r, tries=200):
  """Up to `count` centers of radius-`r` items that do not overlap."""
  pts = []
  for _ in range(tries):
    if len(pts) == count:
      break
    p = rng.uniform(r + 1, 27 - r, 2)
    if all(np.hypot(*(p - q)) > 2 * r + 1.5 for q in pts):
      pts.append(p)
  return pts


def count_task(lo: int, hi: int, target: str = 'dot', label: str = 'count',
               distractors: int = 0, rmin: float = 1.8,
               rmax: float = 2.6) -> task_images.Generator:
  """Count the `target` items (lo..hi of them) among optional distractors.

  Args:
    lo: fewest target items.
    hi: most target items.
    target: 'dot', 'square' (among circle distractors) or 'line'.
    label: 'count' (label = count - lo) or 'parity' (count % 2).
    distractors: at most this many distractor items per scene.
    rmin: smallest item radius (28 px coordinates).
    rmax: largest item radius.

  Returns:
    The task's generator.
  """
  k = 2 if label == 'parity' else hi - lo + 1

  def gen(rng, split, n):
    del split
    y = task_images.balanced_labels(rng, n, k)
    out = np.empty((n, *task_images.IMAGE_SHAPE), np.uint8)
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
        out[i] = task_images.add_noise(rng, np.asarray(
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

