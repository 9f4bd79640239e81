"The package itself: every third-party import is a declared dependency; notebooks carry no stray metadata."
import ast
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# import name -> distribution name, where they differ
DIST = {'yaml': 'pyyaml', 'PIL': 'pillow', 'skimage': 'scikit-image', 'sklearn': 'scikit-learn', 'pywt': 'pywavelets'}


def third_party_imports():
    names = set()
    for py in (ROOT/'slnb').glob('*.py'):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split('.')[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split('.')[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ('slnb', '__future__')}


def test_every_import_is_declared():
    deps = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['dependencies']
    declared = {d.split('>')[0].split('=')[0].split('[')[0].strip().lower() for d in deps}
    missing = {n for n in third_party_imports() if DIST.get(n, n).lower() not in declared}
    assert not missing, f'imported but not declared in pyproject.toml: {missing}'


def test_report_templates_have_parameters_cells():
    for nb in (ROOT/'reports'/'templates').glob('*.ipynb'):
        cells = json.loads(nb.read_text())['cells']
        assert any('parameters' in c.get('metadata', {}).get('tags', []) for c in cells), nb.name
        assert not any('#| export' in ''.join(c['source']) for c in cells), f'{nb.name} holds library code'
