"""The experiment notebooks as a user runs them: papermill, in a fresh folder, with their (smoke) defaults.

`make test` runs each experiment notebook exactly once, here (nbdev_test skips them: see tests/run_all.sh): `make run`'s
two commands, read from the Makefile (train.ipynb, then evaluate.ipynb on the Phi it trained), and results.ipynb.
Each asserts on what it wrote; the notebooks assert on their own numbers too, and an assertion failing inside fails
papermill."""
import json, re, shlex, subprocess, sys

import pytest

from tests.helpers import REPO


def make_run_commands(run) -> list[list[str]]:
    "The papermill commands of the Makefile's `run` target, `$(RUN)` set to `run`, run by this Python's papermill."
    recipe = re.search(r'^run:.*\n((?:\t.*\n)+)', (REPO / 'Makefile').read_text(), re.M)[1]
    cmds = [shlex.split(line.strip().replace('$(RUN)', str(run))) for line in recipe.splitlines()]
    return [[sys.executable, '-m', 'papermill', *argv[1:]] for argv in cmds if argv[0] == '$(BIN)/papermill']


def papermill(argv, cwd):
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, (shlex.join(argv), res.stderr[-3000:])


@pytest.fixture(scope='module')
def make_run(tmp_path_factory):
    "The run folder of `make run`'s first command (train.ipynb with its defaults), run from the repository as make runs it."
    run = tmp_path_factory.mktemp('make-run') / 'main'
    cmds = make_run_commands(run)
    assert [c[3] for c in cmds] == ['nbs/train.ipynb', 'nbs/evaluate.ipynb'], cmds
    run.mkdir()
    papermill(cmds[0], REPO)
    return run, cmds


def test_make_run_trains(make_run):
    "train.ipynb's defaults: a sandbox run with validation, its loss curve, and the evaluation table at the end."
    run, _ = make_run
    cfg = json.loads((run / 'config.json').read_text())
    assert cfg['out_dir'] == str(run) and cfg['backbone'] == 'shapes-clip' and cfg['val_benchmark'] == 'shapes'
    names = {p.name for p in run.iterdir()}
    assert {'train.ipynb', 'config.json', 'phi.safetensors', 'phi.json', 'metrics.jsonl', 'loss.png', 'best',
            'results.json'} <= names, names
    rows = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    train_rows = [r for r in rows if 'loss' in r]
    assert [r['step'] for r in train_rows] == list(range(cfg['log_every'], cfg['steps'] + 1, cfg['log_every']))
    assert [r['step'] for r in rows if 'val' in r] == list(range(cfg['val_every'], cfg['steps'] + 1, cfg['val_every']))
    results = json.loads((run / 'results.json').read_text())
    assert list(results) == ['image', 'text', 'sum', 'lincir', 'upper']


def test_make_run_evaluates_the_trained_phi(make_run):
    "evaluate.ipynb on the Phi that train.ipynb wrote (make run's second command): every method, all output files."
    run, cmds = make_run
    papermill(cmds[1], REPO)
    out = run / 'eval'
    assert {'config.json', 'metrics.json', 'rankings.json', 'examples.png'} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / 'metrics.json').read_text())
    assert list(metrics['methods']) == ['image', 'text', 'sum', 'upper', 'lincir'], metrics['methods']
    assert metrics['main_method'] == 'lincir' and metrics['phi'] == str(run / 'best' / 'phi.safetensors')
    assert json.loads((out / 'config.json').read_text())['benchmark'] == 'shapes'
    assert (run / 'evaluate.ipynb').exists()


def test_results_notebook_with_its_defaults(tmp_path):
    "results.ipynb as typed with no parameter, in a fresh folder: the report lands in its default out_dir there."
    papermill([sys.executable, '-m', 'papermill', str(REPO / 'nbs' / 'results.ipynb'), str(tmp_path / 'results.ipynb'),
               '--cwd', str(tmp_path)], tmp_path)
    report = tmp_path / 'runs' / 'results-smoke'
    assert {'RESULTS.md', 'results.png', 'results.json'} <= {p.name for p in report.iterdir()}
    assert '| lincir |' in (report / 'RESULTS.md').read_text()
