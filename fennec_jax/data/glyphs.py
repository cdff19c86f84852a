"""Glyph tasks: characters rendered from the DejaVu fonts.

The fonts ship inside matplotlib (a core dependency), so a fresh clone renders
the same pixels everywhere; the Debian fonts folder is the fallback. A glyph
task labels each image by its character, its script or its font.
"""

import functools
import os

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from fennec_jax.data import task_images

_FONT_FILES = ('DejaVuSans.ttf', 'DejaVuSans-Bold.ttf',
               'DejaVuSans-Oblique.ttf', 'DejaVuSerif.ttf',
               'DejaVuSerif-Bold.ttf', 'DejaVuSerif-Italic.ttf',
               'DejaVuSansMono.ttf', 'DejaVuSansMono-Bold.ttf')
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
# v2: 10-character subsets '<name>_10' (every k-th character, so a subset
# spans its script) of the v1 many-class charsets.
SUBSET10 = ('latin_upper', 'greek_upper', 'cyrillic_upper', 'armenian_upper',
            'georgian', 'hebrew', 'braille')
CHARSETS.update({f'{c}_10': CHARSETS[c][::len(CHARSETS[c]) // 10][:10]
                 for c in SUBSET10})


@functools.cache
def _font_path(filename: str) -> str:
  """The font's path; matplotlib's bundled DejaVu first, for determinism."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  for folder in (os.path.join(os.path.dirname(matplotlib.__file__),
                              'mpl-data', 'fonts', 'ttf'), _SYSTEM_FONT_DIR):
    path = os.path.join(folder, filename)
    if os.path.exists(path):
      return path
  raise task_images.MissingSystemDataError(
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
    raise task_images.MissingSystemDataError(
        f'No DejaVu font covers {charset!r}.')
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
  x = 22 + rng.normal(0, 1.5 * jitter)
  y = 22 + rng.normal(0, 1.5 * jitter)
  draw.text((x, y), ch, font=_font(font_file, size), fill=255, anchor='mm',
            stroke_width=stroke, stroke_fill=255)
  canvas = canvas.rotate(float(rng.normal(0, 8 * jitter)),
                         resample=Image.Resampling.BILINEAR)
  arr = np.asarray(canvas, np.float32)[8:36, 8:36]
  fg, bg = rng.uniform(160, 255), rng.uniform(0, 70)
  arr = bg + (fg - bg) * arr / 255.0
  return task_images.add_noise(rng, task_images.gray_to_rgb(arr), 12.0)


def glyph_task(charsets: tuple[str, ...], label: str = 'char',
               fonts: tuple[str, ...] | None = None) -> task_images.Generator:
  """Glyph task; label 'char' (which character), 'script', or 'font'.

  Args:
    charsets: names of `CHARSETS` the characters come from.
    label: 'char' (one class per character of the joined charsets), 'script'
      (one class per charset) or 'font' (one class per entry of `fonts`,
      characters from `charsets[0]`).
    fonts: the font files of the 'font' label.

  Returns:
    The task's generator.
  """

  def gen(rng, split, n):
    del split
    chars = [''.join(CHARSETS[c] for c in charsets)]
    if label == 'char':
      k = len(chars[0])
    elif label == 'script':
      k = len(charsets)
    else:
      k = len(fonts)
    y = task_images.balanced_labels(rng, n, k)
    out = np.empty((n, *task_images.IMAGE_SHAPE), np.uint8)
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

