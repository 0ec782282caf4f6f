"benchmarks/gpu.sh runs end to end on CPU (--device cpu --dry-run), so its first GPU run does not fail on a typo."
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_dry_run_on_cpu(tmp_path):
    out = tmp_path / 'gpu.json'
    env = {**os.environ, 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '1'}
    res = subprocess.run(['bash', str(ROOT / 'benchmarks' / 'gpu.sh'), '--device', 'cpu', '--dry-run', '--out', str(out)],
                         capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert 'skipped' in res.stdout  # the CUDA tests were collected (and skipped on CPU)
    r = json.loads(out.read_text())
    assert r['dry_run'] and r['device'] == 'cpu' and r['recipe'] == dict(steps=20000, batch=512)
    tiny = r['backbones']['lincir-tiny']
    for key in ('chunked', 'whole_batch'):
        assert tiny[key]['ms_per_step'] > 0 and tiny[key]['recipe_minutes'] > 0 and tiny[key]['losses_finite']
    assert 'paper recipe' in res.stdout
