"""The main job's papermill interface: parameter names users rely on, JSON-string lists/dicts, bad input. Run in-process
as papermill runs the notebook (its parameters, then the injected ones, typed as papermill's `-p` types them); the
notebook run as typed, with papermill, is `make run` in tests/test_experiment_notebooks.py."""
import json

import pytest
from papermill.cli import _resolve_type

from tests.helpers import REPO, run_notebook

TRAIN = REPO / 'nbs' / 'train.ipynb'
PARAMS = ['backbone', 'pretrained', 'captions', 'steps', 'batch_size', 'lr', 'noise_scale', 'seed', 'device',
          'val_benchmark', 'val_every', 'out_dir']


def dash_p(*pairs) -> dict:
    "`-p name value` pairs as papermill hands them to the notebook (a list or dict stays a string)."
    return {name: _resolve_type(str(value)) for name, value in pairs}


def test_parameters_cell_has_the_documented_names():
    nb = json.loads(TRAIN.read_text())
    cell = next(c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', []))
    names = {line.split('=')[0].strip() for line in ''.join(cell['source']).splitlines() if '=' in line}
    assert set(PARAMS) <= names


def test_tiny_run_with_json_parameters(tmp_path):
    "Lists and dicts given with `-p` arrive as JSON strings and are read as JSON; the run then honours them."
    run = tmp_path / 'run'
    params = dash_p(('captions', '["shapes:300"]'), ('steps', 4), ('batch_size', 16), ('val_benchmark', ''),
                    ('out_dir', run), ('extra', '{"ema": 0.9, "log_every": 2}'))
    assert isinstance(params['captions'], str) and isinstance(params['extra'], str)
    ns = run_notebook(TRAIN, params)
    cfg = json.loads((run / 'config.json').read_text())
    assert cfg['captions'] == ['shapes:300'] and cfg['ema'] == 0.9 and cfg['steps'] == 4 and cfg['val_benchmark'] is None
    assert [json.loads(l)['step'] for l in (run / 'metrics.jsonl').read_text().splitlines()] == [2, 4]
    assert (run / 'phi.safetensors').exists() and (run / 'loss.png').exists() and ns['run'] == run


@pytest.mark.parametrize('name,value,message', [('batch_size', 0, 'batch_size'), ('steps', 0, 'steps'),
                                                ('backbone', 'ViT-Q-99', 'ViT-Q-99'),
                                                ('captions', '/no/such/file.txt', '/no/such/file.txt')])
def test_bad_parameters_fail_before_work(tmp_path, name, value, message):
    "What `papermill nbs/train.ipynb out.ipynb -p NAME VALUE` meets: the notebook's own check, naming the value, before any file."
    run = tmp_path / 'run'
    with pytest.raises(Exception) as e: run_notebook(TRAIN, dash_p((name, value), ('out_dir', run)))
    assert message in f'{type(e.value).__name__}: {e.value}'
    assert not run.exists()
