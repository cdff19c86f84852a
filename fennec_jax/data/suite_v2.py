"""The v2 offline suite's new tasks: more targets, two packaged domains.

Registered by `tasks` with `suite='v2'`, so the v1 lists (`list_tasks()`'s
default) are unchanged. v2 = these + the v1 tasks named in `V1_TARGETS` /
`V1_SOURCES`. What changes from v1:

* the many-class glyph targets (24-50 classes, near chance under the v1
  recipe) are replaced by 10-class subsets (every k-th character, so the
  subset spans the script) with 100 train images per class;
* two domains of real images that ship inside packages: the UCI handwritten
  digits (scikit-learn) and patches of scikit-image's sample photographs;
* more shape, texture, counting and Fashion targets; sources and mixtures for
  the new domains so that source-target relatedness can matter.

Each entry is `(name, domain, role, classes, generator, description, train,
test)`; mixtures are `(part, part, ...)` tuples of source names.
"""

from fennec_jax.data import digits
from fennec_jax.data import fashion
from fennec_jax.data import glyphs
from fennec_jax.data import photos
from fennec_jax.data import scenes
from fennec_jax.data import textures

V1_TARGETS = (
    'fashion_all', 'fashion_tops', 'fashion_footwear', 'fashion_rot90',
    'fashion_inverted', 'glyph_digits', 'glyph_script', 'glyph_font',
    'shape_kind', 'shape_color', 'shape_size', 'shape_position',
    'shape_filled', 'texture_kind', 'texture_orientation',
    'texture_frequency', 'count_dots', 'count_squares', 'count_parity')
V1_SOURCES = (
    'src_fashion_all', 'src_fashion_upper', 'src_fashion_lower',
    'src_fashion_rotation', 'src_glyph_latin_lower', 'src_glyph_greek_lower',
    'src_glyph_cyrillic_lower', 'src_glyph_armenian_lower',
    'src_glyph_symbols', 'src_glyph_fonts', 'src_shape_polygon',
    'src_shape_rotation', 'src_shape_pairs', 'src_shape_kind4',
    'src_texture_gabor', 'src_texture_scale', 'src_texture_kind4',
    'src_count_big', 'src_count_lines', 'mix_fashion-all_glyph-lower',
    'mix_glyph-lower_shape-polygon', 'mix_shape-kind4_texture-kind4',
    'mix_texture-gabor_count-big', 'mix_count-lines_fashion-upper',
    'mix_fashion-lower_texture-scale', 'mix_glyph-symbols_count-big',
    'mix_shape-rotation_count-lines',
    'mix_shape-pairs_texture-gabor_count-big',
    'mix_fashion-rotation_shape-kind4', 'mix_glyph-lower_texture-kind4')
# 10-character subsets (`glyphs.CHARSETS['<name>_10']`) of the v1
# many-class glyph targets.
GLYPH10 = glyphs.SUBSET10


def tasks() -> list[tuple]:
  """The new single-domain tasks (targets first)."""
  t, s = 'target', 'source'
  out = []
  for cs in GLYPH10:
    out.append((f'glyph10_{cs}', 'glyph', t, 10,
                glyphs.glyph_task((f'{cs}_10',)),
                f'which of 10 {cs.replace("_", " ")} characters', 1000, 500))
  out += [
      ('fashion_upper', 'fashion', t, 5,
       fashion.fashion_task((0, 2, 3, 4, 6), t),
       't-shirt / pullover / dress / coat / shirt', 800, 500),
      ('fashion_lower', 'fashion', t, 5,
       fashion.fashion_task((1, 5, 7, 8, 9), t),
       'trouser / sandal / sneaker / bag / ankle boot', 600, 500),
      ('shape_same', 'shape', t, 2, scenes.pair_task(),
       'two shapes: same kind or not', 800, 500),
      ('shape_rotation', 'shape', t, 4, scenes.shape_task('rotation'),
       'triangle pointing right / down / left / up', 500, 500),
      ('texture_kind4', 'texture', t, 4,
       textures.texture_task('kind', ('dots', 'waves', 'grid', 'blotches')),
       'dots / waves / grid / blotches', 600, 500),
      ('texture_orientation4', 'texture', t, 4,
       textures.texture_task('orientation', ('checker', 'waves', 'grid'),
                             bins=4),
       'orientation of checkers, waves or grids, 4 bins of 45 degrees',
       600, 500),
      ('texture_scale3', 'texture', t, 3,
       textures.texture_task('frequency', ('dots', 'grid', 'waves'), bins=3,
                             fmin=0.06, fmax=0.35),
       'scale of dots, grids or waves, 3 log-spaced bins', 600, 500),
      ('count_lines', 'count', t, 5, scenes.count_task(1, 5, 'line'),
       'number of lines, 1-5', 800, 500),
      ('count_small', 'count', t, 6,
       scenes.count_task(1, 6, rmin=1.2, rmax=1.7),
       'number of small dots, 1-6', 800, 500),
      ('count_big', 'count', t, 4, scenes.count_task(1, 4, rmin=3.0, rmax=4.0),
       'number of big blobs, 1-4', 600, 500),
      # UCI digits (scikit-learn).
      ('digits_all', 'digits', t, 10, digits.digit_task(t),
       'which of 10 handwritten digits', 800, 360),
      ('digits_low', 'digits', t, 5, digits.digit_task(t, (0, 1, 2, 3, 4)),
       'handwritten 0-4', 500, 180),
      ('digits_high', 'digits', t, 5, digits.digit_task(t, (5, 6, 7, 8, 9)),
       'handwritten 5-9', 500, 180),
      ('digits_parity', 'digits', t, 2, digits.digit_task(t,
                                                          transform='parity'),
       'handwritten digit even or odd', 800, 360),
      ('digits_inverted', 'digits', t, 10,
       digits.digit_task(t, transform='invert'),
       '10 digits, contrast inverted', 800, 360),
      ('digits_rot90', 'digits', t, 10, digits.digit_task(t,
                                                          transform='rot90'),
       '10 digits rotated 90 degrees', 800, 360),
      ('digits_small', 'digits', t, 10, digits.digit_task(t,
                                                          size_range=(9, 14)),
       '10 digits drawn 9-13 px high', 800, 360),
      # scikit-image sample photographs.
      ('photo_which', 'photo', t, 8, photos.photo_task(t, 'photo'),
       'which of 8 photographs a patch is from', 800, 500),
      ('photo_which_gray', 'photo', t, 8,
       photos.photo_task(t, 'photo', gray=True),
       'which of 8 photographs, gray patches', 800, 500),
      ('photo_scale', 'photo', t, 3, photos.photo_task(t, 'scale'),
       'crop side 12-17 / 36-47 / 96-127 px', 600, 500),
      ('photo_rotation', 'photo', t, 4, photos.photo_task(t, 'rotation'),
       'patch rotated by 0 / 90 / 180 / 270 degrees', 800, 500),
      ('photo_channels', 'photo', t, 6, photos.photo_task(t, 'channels'),
       'which of 6 RGB channel orders', 800, 500),
      ('photo_blur', 'photo', t, 3, photos.photo_task(t, 'blur'),
       'Gaussian blur sigma 0 / 0.8 / 1.6', 600, 500),
      ('photo_contrast', 'photo', t, 3, photos.photo_task(t, 'contrast'),
       'contrast 35% / 65% / 100%', 600, 500),
      ('photo_which_small', 'photo', t, 4,
       photos.photo_task(t, 'photo', photos.TARGET_PHOTOS[:4], side=(8, 15)),
       'which of 4 photographs from 8-14 px crops', 800, 500),
      # Sources of the new domains (other rows / other photographs).
      ('src_digits_all', 'digits', s, 10, digits.digit_task(s),
       'UCI digits, odd rows, 10 classes', 3000, 500),
      ('src_digits_rotation', 'digits', s, 4,
       digits.digit_task(s, transform='rotation_label'),
       'UCI digits, odd rows: which of 4 rotations', 3000, 500),
      ('src_photo_which', 'photo', s, 8, photos.photo_task(s, 'photo'),
       'which of 8 other photographs', 3000, 500),
      ('src_photo_rotation', 'photo', s, 4, photos.photo_task(s, 'rotation'),
       'other photographs: which of 4 rotations', 3000, 500),
      ('src_photo_scale', 'photo', s, 3, photos.photo_task(s, 'scale'),
       'other photographs: crop scale, 3 bins', 3000, 500),
  ]
  return out


MIXTURES = (
    ('src_digits_all', 'src_glyph_latin_lower'),
    ('src_photo_which', 'src_texture_kind4'),
    ('src_photo_rotation', 'src_fashion_all'),
    ('src_digits_rotation', 'src_count_big'),
    ('src_photo_scale', 'src_shape_polygon'),
    ('src_digits_all', 'src_fashion_upper'),
    ('src_photo_which', 'src_glyph_symbols'),
)

