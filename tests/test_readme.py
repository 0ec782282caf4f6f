"The README tells the truth: its results table is the one nbs/results.ipynb wrote, its two commands are the Makefile's."
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / 'README.md').read_text()


def test_results_section_matches_generated_report():
    report = (ROOT / 'results' / 'RESULTS.md').read_text()
    rows = [l for l in report.splitlines() if l.startswith('|') or l.startswith('- ')]
    assert len(rows) > 10
    missing = [r for r in rows if r not in README]
    assert not missing, f"README results differ from results/RESULTS.md (regenerate the section): {missing[:3]}"
    assert (ROOT / 'results' / 'results.png').exists() and 'results/results.png' in README


def test_quick_start_commands_exist():
    quick = README.split('## Quick start')[1].split('\n## ')[0]
    commands = re.findall(r'^(make \w+)', quick, flags=re.M)
    assert commands == ['make run', 'make test']
    makefile = (ROOT / 'Makefile').read_text()
    assert re.search(r'^run:', makefile, re.M) and re.search(r'^test:', makefile, re.M)
    assert 'make test' in (ROOT / '.ci' / 'run').read_text()
