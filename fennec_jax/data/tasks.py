"""The offline task suite: image-classification tasks from offline sources.

Every task is a 28x28x3 uint8 image classification problem made from a source
that needs no network: Fashion-MNIST (Debian package `dataset-fashion-mnist`),
glyphs rendered from the DejaVu fonts that ship inside matplotlib (a core
dependency, so a fresh clone has them), and procedural shapes, textures and
counting scenes. A task is a `TaskSpec`; `generate(name, split)` returns its
images and labels, deterministically from the task's seed. The tfds builder in
`fennec_jax.data.builders.offline_tasks` wraps the same generators so the suite
reads like any tfds data set. The generators themselves live in `fashion`,
`glyphs`, `scenes` and `textures` (sharing `task_images`); this module names
and registers the tasks.

Roles: `target` tasks are what the benchmark fine-tunes on; `source` tasks
(and mixtures of them) pretrain the zoo. Fashion targets come from the official
Fashion-MNIST test file, fashion sources from the train file, procedural
sources use other seeds and other class definitions, so no source ever sees a
target's test split.
"""

import dataclasses
import zlib

import numpy as np

from fennec_jax.data import fashion
from fennec_jax.data import glyphs
from fennec_jax.data import scenes
from fennec_jax.data import suite_v2
from fennec_jax.data import task_images
from fennec_jax.data import textures

SPLITS = ('train', 'test')
DOMAINS = ('fashion', 'glyph', 'shape', 'texture', 'count', 'digits', 'photo')
SUITES = ('v1', 'v2')
# Domains whose images come from installed data (Debian Fashion-MNIST, the
# scikit-learn and scikit-image wheels) rather than from code.
_SYSTEM_DOMAINS = ('fashion', 'digits', 'photo')

# The generators live in their own modules (fashion, glyphs, scenes, textures,
# task_images); these names stay reachable here as the suite's one front door.
IMAGE_SHAPE = task_images.IMAGE_SHAPE
Generator = task_images.Generator
MissingSystemDataError = task_images.MissingSystemDataError
FASHION_ENV = fashion.FASHION_ENV
FASHION_CLASSES = fashion.FASHION_CLASSES
fashion_mnist = fashion.fashion_mnist
CHARSETS = glyphs.CHARSETS
COLORS = scenes.COLORS
SHAPES = scenes.SHAPES
TEXTURES = textures.TEXTURES


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
    needs_system_data: True if it reads installed data (Fashion-MNIST,
      the scikit-learn or scikit-image wheels).
    suite: 'v1' (the committed benchmark's task set) or 'v2' (tasks added
      for the v2 build; `list_tasks` lists them only when asked).
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
  suite: str = 'v1'

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
  """Adds `spec` to the suite; a name may be registered once."""
  if spec.name in _TASKS:
    raise ValueError(f'Task {spec.name!r} is registered twice.')
  _TASKS[spec.name] = spec


def list_tasks(role: str | None = None, domain: str | None = None,
               system_data: bool = True, suite: str | None = 'v1') -> list[str]:
  """Task names (in registration order), optionally filtered.

  Args:
    role: 'target' or 'source' to filter by role.
    domain: keep only tasks of this domain.
    system_data: if False, drop tasks that need installed data.
    suite: 'v1' (default: the committed benchmark's tasks), 'v2' (the v2
      build's tasks: the v1 ones it keeps plus the new ones) or None (all).

  Returns:
    The matching task names.
  """
  if suite not in (None,) + SUITES:
    raise ValueError(f'suite={suite!r}; valid: None, {", ".join(SUITES)}.')
  keep = set(v2_tasks()) if suite == 'v2' else None
  return [n for n, s in _TASKS.items()
          if (role is None or s.role == role)
          and (domain is None or s.domain == domain)
          and (system_data or not s.needs_system_data)
          and (suite is None or (s.suite == 'v1' if suite == 'v1'
                                 else n in keep))]


def v2_tasks() -> list[str]:
  """The v2 suite: the v1 tasks it keeps, then the v2 ones."""
  return (list(suite_v2.V1_TARGETS) + list(suite_v2.V1_SOURCES)
          + [n for n, s in _TASKS.items() if s.suite == 'v2'])


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


def _add(name, domain, role, k, gen, desc, train, test=500, domains=None,
         suite='v1'):
  """Registers one task (positional shorthand of `TaskSpec`)."""
  domains = tuple(domains or (domain,))
  _register(TaskSpec(name, domain, role, k, train, test, gen, desc, domains,
                     any(d in _SYSTEM_DOMAINS for d in domains), suite))


def _define_suite() -> None:
  """Registers the targets, then the sources, then the mixtures."""
  t = 'target'
  # Fashion-MNIST targets (from the official 10k test file).
  _add('fashion_all', 'fashion', t, 10,
       fashion.fashion_task(tuple(range(10)), t),
       'all 10 Fashion-MNIST classes', 800)
  _add('fashion_tops', 'fashion', t, 4, fashion.fashion_task((0, 2, 4, 6), t),
       't-shirt / pullover / coat / shirt (fine-grained)', 600)
  _add('fashion_footwear', 'fashion', t, 3, fashion.fashion_task((5, 7, 9), t),
       'sandal / sneaker / ankle boot', 500)
  _add('fashion_rot90', 'fashion', t, 10,
       fashion.fashion_task(tuple(range(10)), t, 'rot90'),
       '10 classes, images rotated 90 degrees', 1000)
  _add('fashion_inverted', 'fashion', t, 10,
       fashion.fashion_task(tuple(range(10)), t, 'invert'),
       '10 classes, contrast inverted', 600)
  # Glyph targets.
  for cs, n in (('latin_upper', 1000), ('greek_upper', 800),
                ('cyrillic_upper', 1200), ('armenian_upper', 1200),
                ('georgian', 1000), ('hebrew', 800), ('digits', 500),
                ('braille', 1500)):
    _add(f'glyph_{cs}', 'glyph', t, len(glyphs.CHARSETS[cs]),
         glyphs.glyph_task((cs,)),
         f'which {cs.replace("_", " ")} character', n)
  scripts = ('latin_upper', 'greek_upper', 'cyrillic_upper', 'armenian_upper',
             'georgian', 'hebrew')
  _add('glyph_script', 'glyph', t, len(scripts),
       glyphs.glyph_task(scripts, 'script'),
       'which script a letter is from (6 scripts)', 600)
  fonts = ('DejaVuSans.ttf', 'DejaVuSerif.ttf', 'DejaVuSansMono.ttf',
           'DejaVuSans-Bold.ttf')
  _add('glyph_font', 'glyph', t, len(fonts),
       glyphs.glyph_task(('latin_upper',), 'font', fonts),
       'which font (sans / serif / mono / sans bold)', 800)
  # Shapes.
  _add('shape_kind', 'shape', t, 8, scenes.shape_task('kind'),
       'which of 8 shapes', 600)
  _add('shape_color', 'shape', t, 8, scenes.shape_task('color'),
       'which of 8 colors', 500)
  _add('shape_size', 'shape', t, 3, scenes.shape_task('size'),
       'small / medium / large', 500)
  _add('shape_position', 'shape', t, 4, scenes.shape_task('position'),
       'which quadrant', 500)
  _add('shape_filled', 'shape', t, 2, scenes.shape_task('filled'),
       'filled or outline', 500)
  # Textures.
  _add('texture_kind', 'texture', t, 8, textures.texture_task('kind'),
       'which of 8 texture kinds', 800)
  _add('texture_orientation', 'texture', t, 8,
       textures.texture_task('orientation', ('stripes', 'sine')),
       'grating orientation, 8 bins of 22.5 degrees', 600)
  _add('texture_frequency', 'texture', t, 5,
       textures.texture_task('frequency', ('stripes', 'checker', 'rings'),
                             bins=5, fmin=0.05, fmax=0.35),
       'spatial frequency, 5 log-spaced bins', 600)
  # Counting.
  _add('count_dots', 'count', t, 9, scenes.count_task(1, 9),
       'number of dots, 1-9', 1000)
  _add('count_squares', 'count', t, 6,
       scenes.count_task(0, 5, 'square', distractors=3, rmin=2.2, rmax=3.0),
       'number of squares (0-5) among circles', 800)
  _add('count_parity', 'count', t, 2, scenes.count_task(1, 8, label='parity'),
       'even or odd number of dots', 600)

  s = 'source'
  n_src = 3000
  _add('src_fashion_all', 'fashion', s, 10,
       fashion.fashion_task(tuple(range(10)), s),
       'Fashion-MNIST train file, 10 classes', n_src)
  _add('src_fashion_upper', 'fashion', s, 5,
       fashion.fashion_task((0, 2, 3, 4, 6), s), 'upper-body garments', n_src)
  _add('src_fashion_lower', 'fashion', s, 5,
       fashion.fashion_task((1, 5, 7, 8, 9), s), 'trousers, shoes, bags', n_src)
  _add('src_fashion_rotation', 'fashion', s, 4,
       fashion.fashion_task(tuple(range(10)), s, 'rotation_label'),
       'which of 4 rotations', n_src)
  for cs in ('latin_lower', 'greek_lower', 'cyrillic_lower', 'armenian_lower',
             'symbols'):
    _add(f'src_glyph_{cs}', 'glyph', s, len(glyphs.CHARSETS[cs]),
         glyphs.glyph_task((cs,)),
         f'which {cs.replace("_", " ")} character', n_src)
  sfonts = ('DejaVuSans.ttf', 'DejaVuSerif.ttf', 'DejaVuSansMono.ttf',
            'DejaVuSerif-Bold.ttf', 'DejaVuSans-Oblique.ttf',
            'DejaVuSerif-Italic.ttf')
  _add('src_glyph_fonts', 'glyph', s, len(sfonts),
       glyphs.glyph_task(('latin_lower',), 'font', sfonts), 'which of 6 fonts',
       n_src)
  _add('src_shape_polygon', 'shape', s, 6,
       scenes.shape_task('kind', tuple(f'poly_{k}' for k in range(3, 9))),
       'polygon with 3-8 sides', n_src)
  _add('src_shape_rotation', 'shape', s, 4, scenes.shape_task('rotation'),
       'triangle pointing right/down/left/up', n_src)
  _add('src_shape_pairs', 'shape', s, 2, scenes.pair_task(),
       'two shapes: same kind or not', n_src)
  _add('src_shape_kind4', 'shape', s, 4,
       scenes.shape_task('kind', ('circle', 'square', 'triangle', 'cross')),
       'circle / square / triangle / cross', n_src)
  _add('src_texture_gabor', 'texture', s, 4,
       textures.texture_task('orientation', ('sine',), bins=4, fmin=0.05,
                             fmax=0.12),
       'coarse sine grating orientation, 4 bins', n_src)
  _add('src_texture_scale', 'texture', s, 4,
       textures.texture_task('frequency', ('blotches', 'dots'), bins=4,
                             fmin=0.06, fmax=0.4),
       'blob / dot scale, 4 bins', n_src)
  _add('src_texture_kind4', 'texture', s, 4,
       textures.texture_task('kind', ('stripes', 'checker', 'noise', 'rings')),
       'stripes / checker / noise / rings', n_src)
  _add('src_count_big', 'count', s, 5,
       scenes.count_task(1, 5, rmin=3.0, rmax=4.0), 'count 1-5 big blobs',
       n_src)
  _add('src_count_lines', 'count', s, 6, scenes.count_task(1, 6, 'line'),
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
    _add_mixture(tuple(f'src_{p}' for p in parts), n_src)


def _add_mixture(parts: tuple[str, ...], n: int, suite: str = 'v1') -> None:
  """Registers the mixture of source tasks `parts` (named from them)."""
  specs = [get_task(p) for p in parts]
  doms = tuple(dict.fromkeys(x.domain for x in specs))
  name = 'mix_' + '_'.join(p.replace('src_', '').split('_')[0] + '-'
                           + p.replace('src_', '').split('_')[-1]
                           for p in parts)
  _add(name, 'mixture', 'source', sum(x.num_classes for x in specs),
       _mixture(parts), 'mixture of ' + ', '.join(parts), n, 500, doms, suite)


def _define_suite_v2() -> None:
  """Registers the v2 suite's new tasks (`suite_v2`) and its mixtures."""
  for entry in suite_v2.tasks():
    _add(*entry, suite='v2')
  for parts in suite_v2.MIXTURES:
    _add_mixture(parts, 3000, 'v2')


def proxy_sources(suite: str = 'v1') -> list[str]:
  """The proxy's broad mixture: every single-domain source task."""
  return [n for n in list_tasks(role='source', suite=suite)
          if get_task(n).domain != 'mixture']


_define_suite()
_define_suite_v2()
