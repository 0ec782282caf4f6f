"The main job's papermill interface: parameter names users rely on, JSON-string lists/dicts, bad input."
import json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
PARAMS = ['backbone', 'pretrained', 'captions', 'steps', 'batch_size', 'lr', 'noise_scale', 'seed', 'device',
          'val_benchmark', 'val_every', 'out_dir']


def papermill(out, *params):
    cmd = [sys.executable, '-m', 'papermill', str(ROOT / 'nbs' / 'train.ipynb'), str(out), '--cwd', str(ROOT)]
    for name, value in params: cmd += ['-p', name, str(value)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_parameters_cell_has_the_documented_names():
    nb = json.loads((ROOT / 'nbs' / 'train.ipynb').read_text())
    cell = next(c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', []))
    names = {line.split('=')[0].strip() for line in ''.join(cell['source']).splitlines() if '=' in line}
    assert set(PARAMS) <= names


def test_tiny_run_with_json_parameters(tmp_path):
    run = tmp_path / 'run'
    res = papermill(tmp_path / 'out.ipynb', ('captions', '["shapes:300"]'), ('steps', 4), ('batch_size', 16),
                    ('val_benchmark', ''), ('out_dir', run), ('extra', '{"ema": 0.9, "log_every": 2}'))
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads((run / 'config.json').read_text())
    assert cfg['captions'] == ['shapes:300'] and cfg['ema'] == 0.9 and cfg['steps'] == 4
    assert [json.loads(l)['step'] for l in (run / 'metrics.jsonl').read_text().splitlines()] == [2, 4]
    assert (run / 'phi.safetensors').exists() and (run / 'loss.png').exists()


@pytest.mark.parametrize('name,value,message', [('batch_size', 0, 'batch_size'), ('steps', 0, 'steps'),
                                                ('backbone', 'ViT-Q-99', 'ViT-Q-99'),
                                                ('captions', '/no/such/file.txt', '/no/such/file.txt')])
def test_bad_parameters_fail_before_work(tmp_path, name, value, message):
    run = tmp_path / 'run'
    res = papermill(tmp_path / 'out.ipynb', (name, value), ('out_dir', run))
    assert res.returncode != 0 and message in res.stderr + res.stdout
    assert not run.exists()
