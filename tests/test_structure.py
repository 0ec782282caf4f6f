"The shape of the package: one-way imports between modules, no module's private names used by another, small modules."
import ast, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'lincir'
MAX_LINES = 400  # no module over this many lines (nbdev's median is about 100)


def modules() -> dict[str, ast.Module]:
    "The package's modules (nbdev's generated `_modidx` aside), parsed."
    return {p.stem: ast.parse(p.read_text()) for p in sorted(PACKAGE.glob('*.py')) if not p.stem.startswith('_')}


def imports(name: str, tree: ast.Module, names: set[str]) -> list[tuple[str, list[str], int]]:
    "(module imported, names taken from it, line) for every import of another lincir module, inside functions too."
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            parts = (node.module or '').split('.')
            if node.level == 1 and node.module is None:  # from . import backbone
                out += [(a.name, [], node.lineno) for a in node.names if a.name in names]
            elif (node.level == 1 or parts[0] == 'lincir') and parts[-1] in names:
                out.append((parts[-1], [a.name for a in node.names], node.lineno))
            elif parts == ['lincir']:  # from lincir import backbone
                out += [(a.name, [], node.lineno) for a in node.names if a.name in names]
        elif isinstance(node, ast.Import):
            out += [(a.name.split('.')[1], [], node.lineno) for a in node.names
                    if a.name.startswith('lincir.') and a.name.split('.')[1] in names]
    return [(m, taken, line) for m, taken, line in out if m != name]


def module_names(tree: ast.Module, names: set[str]) -> dict[str, str]:
    "The names under which a module holds other lincir modules (`from . import backbone as _backbone`): name -> module."
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and ((node.level == 1 and node.module is None) or node.module == 'lincir'):
            out.update({a.asname or a.name: a.name for a in node.names if a.name in names})
        elif isinstance(node, ast.Import):
            out.update({a.asname: a.name.split('.')[1] for a in node.names
                        if a.asname and a.name.startswith('lincir.') and a.name.split('.')[1] in names})
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {t for t, _, _ in imports(m, tree, set(mods))} for m, tree in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    "Every cycle of `edges`, each once, as a path that ends where it starts."
    found, state = [], {}
    def visit(m, path):
        state[m] = 'open'
        for t in sorted(edges[m]):
            if state.get(t) == 'open': found.append(path[path.index(t):] + [t])
            elif t not in state: visit(t, path + [t])
        state[m] = 'done'
    for m in sorted(edges):
        if m not in state: visit(m, [m])
    return found


def test_the_checker_sees_imports_inside_functions_and_cycles():
    tree = ast.parse("from .a import x\ndef f():\n    from lincir.b import _y\n    import lincir.c\nfrom . import d")
    assert imports('m', tree, {'a', 'b', 'c', 'd'}) == [('a', ['x'], 1), ('d', [], 5), ('b', ['_y'], 3), ('c', [], 4)]
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c', 'a']]
    assert cycles({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) == []
    held = ast.parse("from . import backbone as _bb\nimport lincir.store as S\nfrom lincir import phi")
    assert module_names(held, {'backbone', 'store', 'phi'}) == {'_bb': 'backbone', 'S': 'store', 'phi': 'phi'}


def test_no_import_cycle():
    "Lower modules never import higher ones, not even inside a function."
    assert cycles(graph()) == []


def test_no_private_name_crosses_modules():
    "A leading underscore means 'this module's own': no other module imports it."
    mods = modules()
    private = [f"{m}:{line} imports {t}.{n}" for m, tree in mods.items() for t, taken, line in imports(m, tree, set(mods))
               for n in taken if n.startswith('_')]
    attribute = [f"{m}:{node.lineno} uses {node.value.id}.{node.attr}" for m, tree in mods.items()
                 for held in [module_names(tree, set(mods))] for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in held
                 and node.attr.startswith('_') and not node.attr.startswith('__')]
    assert private + attribute == []


@pytest.mark.parametrize('path', [PACKAGE/f'{m}.py' for m in modules()], ids=lambda p: p.name)
def test_modules_stay_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.name} has {n} lines; split it by what changes together"


def test_no_unused_import():
    "ruff's F401 over the package (fix it in the notebook that exports the module), the tests and the speed benchmarks (speed/)."
    res = subprocess.run([sys.executable, '-m', 'ruff', 'check', '--select', 'F401', '--output-format', 'concise',
                          'lincir', 'tests', 'speed'], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
