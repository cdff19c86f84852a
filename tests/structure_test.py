"""The package's structure, checked from its source with `ast` (nothing runs).

Rules (see DESIGN.md, "Layout"), each finding named by file and line:
(a) no import cycle among the package's modules;
(b) no package import inside a function body, outside the CLI's dispatch
    (`cli.py`, `commands/`), be it an import statement or
    `importlib.import_module('fennec_jax...')`;
(c) no Python file over `MAX_LINES` lines;
(d) imports only downward in `LAYERS` (a module's layer is its top-level name
    under the package; the re-exporting `__init__.py` files of the root and of
    `benchmarks` are exempt as importers); a top-level module missing from
    `LAYERS` is itself a finding.

Package `__init__.py` files re-export and are not nodes of the import graph:
an import of a package stands for the modules its `__init__` imports. The
checker is tested on small synthetic trees first, then run on the package.
"""

import ast
import collections
from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import pathlib
import tempfile
import textwrap

from absl.testing import absltest

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1] / 'fennec_jax'
MAX_LINES = 700
LAYERS = {
    'history': 0, 'metrics': 0, 'sharding': 0, 'checkpoint': 0, 'progress': 0,
    'files': 0, 'model_metadata': 0,
    'models': 1, 'data': 1, 'estimators': 1, 'archi2vec': 1, 'proxy': 1,
    'space': 2, 'neighbors': 2, 'task_maps': 2, 'joint': 2, 'forest': 2,
    'nmf': 2, 'posterior': 2, 'paper_features': 2,
    'recommender': 3, 'paper': 3,
    'benchmarks': 4,
    'cli': 5, 'commands': 5,
}
# Top-level names whose functions may import the package (subcommand dispatch).
LAZY_ALLOWED = ('cli', 'commands')
# Packages whose `__init__` re-exports across layers ('' is the root).
REEXPORT_INITS = ('', 'benchmarks')


@dataclasses.dataclass(frozen=True)
class Module:
  """One Python file of the package.

  Attributes:
    name: dotted module name ('fennec_jax.data.tasks'; a package's
      `__init__.py` is named after the package).
    rel: the path shown in findings, from the package's parent folder.
    is_package: True for an `__init__.py`.
    source: the file's text.
  """
  name: str
  rel: str
  is_package: bool
  source: str


@dataclasses.dataclass(frozen=True)
class Import:
  """One import of a package module, as written in `source`'s file.

  Attributes:
    source: the importing module's name.
    target: the imported module's name (the package itself when a name, not
      a submodule, is imported from it).
    line: line of the import statement.
    in_function: True if the statement sits inside a function body.
  """
  source: str
  target: str
  line: int
  in_function: bool


def read_package(root: pathlib.Path) -> dict[str, Module]:
  """Every `.py` file under `root`, keyed by dotted module name."""
  root = pathlib.Path(root).resolve()
  modules = {}
  for path in sorted(root.rglob('*.py')):
    parts = path.relative_to(root.parent).with_suffix('').parts
    is_package = parts[-1] == '__init__'
    name = '.'.join(parts[:-1] if is_package else parts)
    modules[name] = Module(name, str(path.relative_to(root.parent)),
                           is_package, path.read_text(encoding='utf-8'))
  return modules


def top_name(module: str) -> str:
  """The top-level name under the package ('' for the package itself)."""
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else ''


def _nearest_module(name: str, modules: Mapping[str, Module]) -> str | None:
  """`name` or its longest dotted prefix that is a module of the package."""
  parts = name.split('.')
  for k in range(len(parts), 0, -1):
    if '.'.join(parts[:k]) in modules:
      return '.'.join(parts[:k])
  return None


def _function_nodes(tree: ast.AST) -> set[int]:
  """ids of every node inside a function or lambda body."""
  inside = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      inside.update(id(sub) for sub in ast.walk(node) if sub is not node)
  return inside


def _imported_names(module: Module, node: ast.Import | ast.ImportFrom,
                    modules: Mapping[str, Module]) -> list[str]:
  """Dotted names an import statement loads (submodules where they exist)."""
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names]
  base = node.module or ''
  if node.level:
    parts = module.name.split('.')
    if not module.is_package:
      parts = parts[:-1]
    parts = parts[:len(parts) - (node.level - 1)]
    base = '.'.join(parts + ([node.module] if node.module else []))
  return [f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules
          else base for alias in node.names]


def package_imports(modules: Mapping[str, Module]) -> list[Import]:
  """Every import of a package module, in file and line order."""
  out = []
  for module in modules.values():
    tree = ast.parse(module.source, filename=module.rel)
    inside = _function_nodes(tree)
    nodes = [n for n in ast.walk(tree)
             if isinstance(n, (ast.Import, ast.ImportFrom))]
    for node in sorted(nodes, key=lambda n: n.lineno):
      seen = set()
      for name in _imported_names(module, node, modules):
        target = _nearest_module(name, modules)
        if target is None or target == module.name or target in seen:
          continue
        seen.add(target)
        out.append(Import(module.name, target, node.lineno,
                          id(node) in inside))
  return out


def _dynamic_imports(module: Module, package: str) -> list[tuple[int, str]]:
  """(line, literal prefix) of `import_module` / `__import__` calls inside
  functions whose argument starts with the package name (a string, an
  f-string or a name assigned one in the same function)."""
  tree = ast.parse(module.source, filename=module.rel)
  found = []
  for func in ast.walk(tree):
    if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
      continue
    constants = {}
    for node in ast.walk(func):
      if (isinstance(node, ast.Assign) and len(node.targets) == 1
          and isinstance(node.targets[0], ast.Name)):
        constants[node.targets[0].id] = node.value
    for node in ast.walk(func):
      if not (isinstance(node, ast.Call) and node.args):
        continue
      callee = node.func
      callee_name = (callee.attr if isinstance(callee, ast.Attribute)
                     else getattr(callee, 'id', None))
      if callee_name not in ('import_module', '__import__'):
        continue
      arg = node.args[0]
      if isinstance(arg, ast.Name):
        arg = constants.get(arg.id, arg)
      if isinstance(arg, ast.JoinedStr) and arg.values:
        arg = arg.values[0]
      if (isinstance(arg, ast.Constant) and isinstance(arg.value, str)
          and (arg.value == package or arg.value.startswith(package + '.'))):
        found.append((node.lineno, arg.value))
  return sorted(set(found))


def _strongly_connected(graph: Mapping[str, Iterable[str]]
                        ) -> list[list[str]]:
  """Components of more than one node (mutually reachable sets), sorted."""
  def reach(start):
    seen, stack = {start}, [start]
    while stack:
      for nxt in graph.get(stack.pop(), ()):
        if nxt not in seen:
          seen.add(nxt)
          stack.append(nxt)
    return seen
  reachable = {v: reach(v) for v in graph}
  components = {frozenset(w for w in reachable[v] if v in reachable.get(w, ()))
                for v in graph}
  return sorted(sorted(c) for c in components if len(c) > 1)


def _shortest_cycle(graph: Mapping[str, Iterable[str]], start: str,
                    members: set[str]) -> list[str]:
  """A shortest path start -> ... -> start within `members` (BFS)."""
  parent = {}
  queue = collections.deque([start])
  while queue:
    node = queue.popleft()
    for nxt in sorted(graph.get(node, ())):
      if nxt not in members:
        continue
      if nxt == start:
        path = [node]
        while path[-1] != start:
          path.append(parent[path[-1]])
        return [start] + path[::-1][1:] + [start]
      if nxt not in parent:
        parent[nxt] = node
        queue.append(nxt)
  raise AssertionError(f'{start} is on no cycle within {sorted(members)}')


def find_cycles(modules: Mapping[str, Module],
                imports: Sequence[Import]) -> list[str]:
  """(a) Import cycles among non-`__init__` modules, one finding each."""
  direct = collections.defaultdict(list)
  for imp in imports:
    direct[imp.source].append(imp)

  def expand(target, seen=()):
    """Non-package modules an import of `target` loads."""
    if not modules[target].is_package:
      return {target}
    out = set()
    for imp in direct[target]:
      if imp.target not in seen and imp.target != target:
        out |= expand(imp.target, (*seen, target))
    return out

  graph, where = collections.defaultdict(set), {}
  for name, module in modules.items():
    if module.is_package:
      continue
    for imp in direct[name]:
      for target in expand(imp.target):
        if target != name:
          graph[name].add(target)
          where.setdefault((name, target), imp)
  findings = []
  for component in _strongly_connected(graph):
    cycle = _shortest_cycle(graph, component[0], set(component))
    first = where[(cycle[0], cycle[1])]
    steps = '; '.join(
        f'{modules[a].rel}:{where[(a, b)].line} imports '
        f'{where[(a, b)].target}' for a, b in zip(cycle, cycle[1:]))
    findings.append(f'{modules[cycle[0]].rel}:{first.line}: import cycle '
                    f'{" -> ".join(cycle)} ({steps}); modules in the cycle: '
                    f'{", ".join(component)}')
  return findings


def find_hidden_imports(modules: Mapping[str, Module],
                        imports: Sequence[Import], package: str,
                        lazy_allowed: Sequence[str] = LAZY_ALLOWED
                        ) -> list[str]:
  """(b) Package imports inside function bodies outside `lazy_allowed`."""
  findings = []
  for imp in imports:
    if imp.in_function and top_name(imp.source) not in lazy_allowed:
      findings.append(
          f'{modules[imp.source].rel}:{imp.line}: imports {imp.target} inside '
          'a function; import it at module level (if that makes a cycle, '
          'restructure: import the specific submodule or move code down)')
  for name, module in modules.items():
    if top_name(name) in lazy_allowed:
      continue
    for line, literal in _dynamic_imports(module, package):
      findings.append(
          f'{module.rel}:{line}: imports {literal!r} dynamically inside a '
          'function; import it at module level')
  return findings


def find_long_files(modules: Mapping[str, Module],
                    max_lines: int = MAX_LINES) -> list[str]:
  """(c) Files over `max_lines` lines."""
  findings = []
  for module in modules.values():
    n = len(module.source.splitlines())
    if n > max_lines:
      findings.append(f'{module.rel}:{max_lines + 1}: {n} lines, over the '
                      f'{max_lines}-line limit; split it by concept')
  return findings


def find_upward_imports(modules: Mapping[str, Module],
                        imports: Sequence[Import], package: str,
                        layers: Mapping[str, int] = LAYERS,
                        reexport_inits: Sequence[str] = REEXPORT_INITS
                        ) -> list[str]:
  """(d) Imports of a higher layer, and top-level names without a layer."""
  findings = []
  missing = {}
  for name, module in modules.items():
    top = top_name(name)
    if top and top not in layers:
      missing.setdefault(top, module)
  for top, module in sorted(missing.items()):
    findings.append(
        f'{module.rel}:1: top-level module {top!r} has no layer; add it to '
        f'LAYERS in tests/structure_test.py (and to the layer list of '
        'DESIGN.md)')
  # The root package stands as high as the highest module it re-exports.
  root_layer = max((layers[top_name(i.target)] for i in imports
                    if i.source == package and top_name(i.target) in layers),
                   default=max(layers.values()))
  exempt = {package if r == '' else f'{package}.{r}' for r in reexport_inits}
  for imp in imports:
    source_top = top_name(imp.source)
    if imp.source in exempt or source_top not in layers:
      continue
    target_top = top_name(imp.target)
    if not target_top:
      target_layer, what = root_layer, f'the package root {package}'
    elif target_top in layers:
      target_layer, what = layers[target_top], imp.target
    else:
      continue  # Reported above as missing.
    if target_layer > layers[source_top]:
      findings.append(
          f'{modules[imp.source].rel}:{imp.line}: upward import: '
          f'{imp.source} (layer {layers[source_top]}, {source_top}) imports '
          f'{what} (layer {target_layer}); move the shared code down or '
          'pass it in from above')
  return findings


def check(root: pathlib.Path, layers: Mapping[str, int] = LAYERS,
          lazy_allowed: Sequence[str] = LAZY_ALLOWED,
          reexport_inits: Sequence[str] = REEXPORT_INITS,
          max_lines: int = MAX_LINES) -> list[str]:
  """Every finding of rules (a)-(d) for the package at `root`."""
  package = pathlib.Path(root).resolve().name
  modules = read_package(root)
  imports = package_imports(modules)
  return (find_cycles(modules, imports)
          + find_hidden_imports(modules, imports, package, lazy_allowed)
          + find_long_files(modules, max_lines)
          + find_upward_imports(modules, imports, package, layers,
                                reexport_inits))


# --------------------------------------------------------------------- tests

_TOY_LAYERS = {'base': 0, 'mid': 1, 'top': 2, 'cli': 3, 'commands': 3}

# A clean toy package: relative and absolute imports, a re-exporting root,
# and a CLI that imports its subcommands lazily.
_CLEAN = {
    '__init__.py': 'from pkg.top import serve\n',
    'base.py': '"""Base."""\nimport os\n\nVALUE = 1\n',
    'mid/__init__.py': 'from pkg.mid.a import twice\n',
    'mid/a.py': 'from pkg import base\n\n\ndef twice():\n'
                '  return 2 * base.VALUE\n',
    'mid/b.py': 'from . import a\nfrom .. import base\n',
    'top.py': 'import pkg.mid.b\nfrom pkg.mid import twice\n\n\n'
              'def serve():\n  return twice()\n',
    'cli.py': 'import importlib\n\n\ndef main(name):\n'
              '  from pkg.commands import run\n'
              "  return importlib.import_module(f'pkg.commands.{name}')\n",
    'commands/__init__.py': '',
    'commands/run.py': 'def run():\n  from pkg import top\n'
                       '  return top.serve()\n',
}


class CheckerTest(absltest.TestCase):
  """The checker on synthetic trees: each rule fires, a clean tree passes."""

  def _tree(self, files: Mapping[str, str]) -> pathlib.Path:
    root = pathlib.Path(
        self.enterContext(tempfile.TemporaryDirectory())) / 'pkg'
    for rel, text in files.items():
      path = root / rel
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(textwrap.dedent(text))
    return root

  def _check(self, changes: Mapping[str, str]) -> list[str]:
    return check(self._tree({**_CLEAN, **changes}), layers=_TOY_LAYERS,
                 reexport_inits=('',))

  def test_clean_tree_passes(self):
    self.assertEqual(self._check({}), [])

  def test_imports_resolve_relative_names_and_submodules(self):
    modules = read_package(self._tree(_CLEAN))
    got = {(i.source, i.target, i.line, i.in_function)
           for i in package_imports(modules)}
    self.assertContainsSubset({
        ('pkg.mid.b', 'pkg.mid.a', 1, False),
        ('pkg.mid.b', 'pkg.base', 2, False),
        ('pkg.top', 'pkg.mid.b', 1, False),
        ('pkg.top', 'pkg.mid', 2, False),  # A name: the package's __init__.
        ('pkg.commands.run', 'pkg.top', 2, True),
    }, got)
    self.assertNotIn('os', {i.target for i in package_imports(modules)})

  def test_cycle_is_found_with_file_and_line(self):
    findings = self._check({'mid/a.py': 'from pkg import base\n'
                                        'from pkg.mid import b\n'})
    self.assertLen(findings, 1)
    self.assertRegex(findings[0], r'^pkg/mid/a\.py:2: import cycle '
                                  r'pkg\.mid\.a -> pkg\.mid\.b -> pkg\.mid\.a')
    self.assertIn('pkg/mid/b.py:1 imports pkg.mid.a', findings[0])

  def test_cycle_through_a_reexporting_init_is_found(self):
    # a imports a name of pkg.mid, whose __init__ loads b; b imports a.
    findings = self._check({
        'mid/__init__.py': 'from pkg.mid.b import helper\n',
        'mid/a.py': 'from pkg.mid import helper\n',
        'mid/b.py': 'from pkg.mid import a\n\n\ndef helper():\n  pass\n',
        'top.py': 'from pkg.mid import b\n',
    })
    self.assertLen(findings, 1)
    self.assertIn('import cycle pkg.mid.a -> pkg.mid.b -> pkg.mid.a',
                  findings[0])

  def test_import_hidden_in_a_function_is_found(self):
    findings = self._check({
        'mid/b.py': 'def f():\n  x = 1\n  from pkg import base\n  return x\n',
        'base.py': 'import importlib\n\n\ndef g(name):\n'
                   "  module = 'pkg.mid.a'\n"
                   '  return importlib.import_module(module)\n',
    })
    self.assertCountEqual(findings, [
        'pkg/mid/b.py:3: imports pkg.base inside a function; import it at '
        'module level (if that makes a cycle, restructure: import the '
        'specific submodule or move code down)',
        "pkg/base.py:6: imports 'pkg.mid.a' dynamically inside a function; "
        'import it at module level'])

  def test_long_file_is_found_and_the_limit_is_inclusive(self):
    root = self._tree({**_CLEAN, 'base.py': 'X = 1\n' * 20,
                       'top.py': 'X = 1\n' * 21})
    findings = check(root, layers=_TOY_LAYERS, reexport_inits=('',),
                     max_lines=20)
    self.assertEqual(findings, ['pkg/top.py:21: 21 lines, over the 20-line '
                                'limit; split it by concept'])

  def test_upward_import_is_found(self):
    # Nothing imports mid/c.py, so these close no cycle.
    findings = self._check({'mid/c.py': 'from pkg import top\nimport pkg\n'})
    self.assertEqual(findings, [
        'pkg/mid/c.py:1: upward import: pkg.mid.c (layer 1, mid) imports '
        'pkg.top (layer 2); move the shared code down or pass it in from '
        'above',
        'pkg/mid/c.py:2: upward import: pkg.mid.c (layer 1, mid) imports '
        'the package root pkg (layer 2); move the shared code down or pass '
        'it in from above'])

  def test_reexporting_init_is_exempt_only_where_listed(self):
    files = {'mid/__init__.py': 'from pkg.mid.a import twice\n'
                                'from pkg.top import serve\n'}
    self.assertEqual(check(self._tree({**_CLEAN, **files}),
                           layers=_TOY_LAYERS, reexport_inits=('', 'mid')),
                     [])
    findings = self._check(files)
    self.assertTrue(any(f.startswith('pkg/mid/__init__.py:2: upward import')
                        for f in findings), findings)

  def test_module_without_a_layer_is_found(self):
    findings = self._check({'extra/__init__.py': '', 'extra/x.py': ''})
    self.assertEqual(findings, [
        "pkg/extra/__init__.py:1: top-level module 'extra' has no layer; add "
        'it to LAYERS in tests/structure_test.py (and to the layer list of '
        'DESIGN.md)'])


class PackageTest(absltest.TestCase):
  """The real package follows every rule."""

  def test_fennec_jax_structure(self):
    findings = check(PACKAGE_DIR)
    if findings:
      self.fail(f'{len(findings)} structure finding(s) in {PACKAGE_DIR}:\n'
                + '\n'.join(findings))


if __name__ == '__main__':
  absltest.main()
