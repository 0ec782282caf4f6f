"""The README tells the truth: it is the conversion of nbs/index.ipynb, its results are the ones nbs/results.ipynb wrote,
its two commands are the Makefile's, its links lead somewhere, and the speed folder's old name is gone."""
import json, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / 'README.md').read_text()
MAX_BYTES = 15_000  # issue 21: a README a newcomer reads in one sitting; the rest lives where it is explained


def _table(text:str, header:str) -> list[list[str]]:
    "The rows (cells stripped) of the markdown table whose header line starts with `header`, header row included."
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(header))
    rows = []
    for l in lines[start:]:
        if not l.startswith('|'): break
        if not re.fullmatch(r'\|[-:| ]+\|', l): rows.append([c.strip() for c in l.strip().strip('|').split('|')])
    return rows


def test_results_section_matches_generated_report():
    "Every number of the README's results table is the report's, for the same method and column."
    report = (ROOT / 'results' / 'RESULTS.md').read_text()
    rows = [l for l in report.splitlines() if l.startswith('|') or l.startswith('- ')]
    assert len(rows) > 10
    results = README.split('## Results (sandbox)')[1].split('\n## ')[0]
    ours, theirs = _table(results, '| method |'), _table(report, '| method |')
    by_method = {r[0]: dict(zip(theirs[0], r)) for r in theirs[1:]}
    assert len(ours) >= 5 and {'lincir', 'text', 'upper'} <= {r[0] for r in ours[1:]}, ours
    assert set(ours[0]) <= set(theirs[0]), (ours[0], theirs[0])
    differ = [(r[0], col, cell, by_method.get(r[0], {}).get(col)) for r in ours[1:] for col, cell in zip(ours[0], r)
              if by_method.get(r[0], {}).get(col) != cell]
    assert not differ, f"README results differ from results/RESULTS.md (copy them into nbs/index.ipynb, then make readme): {differ[:3]}"
    assert (ROOT / 'results' / 'results.png').exists() and 'results/results.png' in README
    assert '(results/RESULTS.md)' in results  # the generated report is one click away



# The README's names for the query-time methods -> the generated report's row names
BEYOND_ROWS = {'LinCIR (mAP@10)': 'lincir', '`centre`': 'centre', '`centre+spread`': 'centre, spread matched',
               '`centre+project+centred_cosine`': 'centre + project + centred cosine',
               '`centre+ensemble+centred_cosine`': 'centre + ensemble + centred cosine', '`slerp` (SlerpTAT)': 'slerp'}


def test_beyond_section_matches_generated_report():
    "Every cell of the README's query-time table is the report's: test mAP@10 for LinCIR, else the difference, per sandbox."
    report = (ROOT / 'results' / 'query-time-methods' / 'RESULTS.md').read_text()
    beyond = README.split('## Beyond LinCIR')[1].split('\n## ')[0]
    ours = _table(beyond, '| method |')
    assert {r[0] for r in ours[1:]} == set(BEYOND_ROWS), ours
    for col, sandbox in enumerate(ours[0][1:], 1):
        section = report.split(f"### {sandbox.strip('`')}\n")[1].split('\n### ')[0]
        theirs = {r[0]: r for r in _table(section, '| method |')[1:]}
        for r in ours[1:]:
            name = BEYOND_ROWS[r[0]]
            want = theirs[name][1:3] if name == 'lincir' else theirs[name][3:5]
            assert r[col].replace('**', '') == ' / '.join(want), (sandbox, r[0], r[col], want)
    assert '(results/query-time-methods/RESULTS.md)' in beyond

def test_quick_start_commands_exist():
    quick = README.split('## Quick start')[1].split('\n## ')[0]
    commands = re.findall(r'^(make \w+)', quick, flags=re.M)
    assert commands == ['make run', 'make test']
    makefile = (ROOT / 'Makefile').read_text()
    assert re.search(r'^run:', makefile, re.M) and re.search(r'^test:', makefile, re.M)
    assert 'make test' in (ROOT / '.ci' / 'run').read_text()


def test_readme_is_the_conversion_of_the_index_notebook(tmp_path):
    "README.md is what `make readme` writes from nbs/index.ipynb, byte for byte, and stays short."
    makefile = (ROOT / 'Makefile').read_text()
    recipe = re.search(r'^readme:.*\n\t(.*)$', makefile, re.M)[1]
    assert 'nbconvert --to markdown nbs/index.ipynb' in recipe and '--output README' in recipe, recipe
    nb = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text())
    code = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
    assert all(s.startswith('#| hide') for s in code), "index.ipynb: only markdown (or hidden) cells, so the README needs no run"
    subprocess.run([sys.executable, '-m', 'jupyter', 'nbconvert', '--to', 'markdown', str(ROOT / 'nbs' / 'index.ipynb'),
                    '--output-dir', str(tmp_path), '--output', 'README'], check=True, capture_output=True)
    assert (tmp_path / 'README.md').read_bytes() == (ROOT / 'README.md').read_bytes(), \
        "README.md differs from nbs/index.ipynb: edit the notebook, then run `make readme`"
    assert len(README.encode()) <= MAX_BYTES, f"README.md is {len(README.encode())} bytes (at most {MAX_BYTES})"


def test_readme_links_resolve():
    "Every relative link of the README and of speed/README.md names a file or folder that exists."
    for doc in (ROOT / 'README.md', ROOT / 'speed' / 'README.md'):
        links = re.findall(r'\]\(([^)\s]+)\)', doc.read_text())
        local = [l.split('#')[0] for l in links if not re.match(r'[a-z]+:', l) and not l.startswith('#')]
        assert local, doc
        missing = [l for l in local if not (doc.parent / l).exists()]
        assert not missing, f"{doc.relative_to(ROOT)} links to missing files: {missing}"


def test_readme_names_paper_citation_and_licence():
    assert 'https://arxiv.org/abs/2312.01998' in README and 'CVPR 2024' in README
    bib = re.search(r'```bibtex\n(.*?)```', README, re.S)[1]
    assert 'Language-only Training of Zero-shot Composed Image Retrieval' in bib and 'Gu, Geonmo' in bib
    settings = (ROOT / 'settings.ini').read_text()
    assert re.search(r'^license = apache2$', settings, re.M)
    assert (ROOT / 'LICENSE').read_text().lstrip().startswith('Apache License') and 'Apache License 2.0' in README


def test_speed_folder_has_one_name():
    "The speed measurements live in speed/ (the old folder's name was confused with lincir.benchmarks): no tracked file names the old folder."
    old = 'benchmarks'
    assert not (ROOT / old).exists() and (ROOT / 'speed' / 'gpu.sh').exists()
    files = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    stale = []
    for f in filter(None, files.split('\0')):
        p = ROOT / f
        if not p.is_file() or p.suffix not in {'.py', '.sh', '.md', '.ipynb', '.toml', '.ini', '.json', '.txt', ''}: continue
        text = p.read_text(errors='replace')
        stale += [f'{f}: {m}' for m in re.findall(rf'(?<![\w/]){old}/\S*', text)]
    assert not stale, stale
