"""The GPU check rehearsed on CPU: `speed/gpu.sh --device cpu --dry-run` runs in a stand-in of the GPU machine's Python
(only the packages its image lists, `speed/device_packages.txt`: no open_clip, spaCy or datasets) with nothing but
what `make gpu-prep` put in `.gpu/`. A missing wheel, or a module-level import of something that machine lacks, fails
here and not on the GPU."""
import json, os, re, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'speed'))
from device_env import build

NEVER = ('datasets', 'spacy', 'open_clip_torch', 'ftfy', 'wcwidth')  # the image lacks them: never linked into the stand-in
ABSENT = ('datasets', 'spacy', 'open_clip', 'ftfy', 'wcwidth', 'nbdev', 'papermill', 'lincir')
TRAVEL_LIMIT = 64 * 2**20


@pytest.fixture(scope='module')
def prepared():
    "`make gpu-prep` as a user types it: downloads the wheels the first time (package index), then reuses `.gpu/`."
    res = subprocess.run(['make', 'gpu-prep'], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return ROOT / '.gpu', res.stdout


@pytest.fixture(scope='module')
def device_python(tmp_path_factory):
    return build(tmp_path_factory.mktemp('device') / 'env', never=NEVER)


def device_env(python, **extra) -> dict:
    "The environment of a command in the stand-in: no PYTHONPATH, no user site, no project .venv on the PATH."
    here = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'PYTHONHOME')}
    return dict(env, PATH=os.pathsep.join(p for p in env['PATH'].split(os.pathsep) if p != here), PYTHON=str(python),
                PYTHONNOUSERSITE='1', OMP_NUM_THREADS='1', **extra)


def gpu_sh(python, out:Path, gpu_dir:Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', str(ROOT / 'speed' / 'gpu.sh'), *args], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env=device_env(python, OUT=str(out), LINCIR_GPU_DIR=str(gpu_dir)))


def test_stand_in_lacks_what_the_gpu_machine_lacks(device_python):
    probe = ("import importlib, json\nout = {}\nfor m in %r + ('torch', 'numpy', 'pytest', 'safetensors', 'PIL', 'timm'):\n"
             "    try: importlib.import_module(m); out[m] = True\n    except ImportError: out[m] = False\nprint(json.dumps(out))") % (ABSENT,)
    res = subprocess.run([str(device_python), '-c', probe], capture_output=True, text=True, cwd='/', env=device_env(device_python))
    found = json.loads(res.stdout)
    assert not any(found[m] for m in ABSENT), found
    assert all(found[m] for m in ('torch', 'numpy', 'pytest', 'safetensors', 'PIL', 'timm')), found


def test_prepared_folder(prepared):
    gpu, log = prepared
    manifest = json.loads((gpu / 'manifest.json').read_text())
    assert sorted(w['file'].split('-')[0] for w in manifest['wheels']) == ['ftfy', 'open_clip_torch', 'wcwidth']
    assert manifest['captions'] == {'ViT-L-14': 'SimpleTokenizer-77', 'ViT-bigG-14': 'SimpleTokenizer-77', 'lincir-tiny': 'SimpleTokenizer-16'}
    assert manifest['bytes'] < 8 * 2**20 and 'MiB; a device call carrying it sends' in log
    sent = float(log.split('carrying it sends ')[1].split(' MiB')[0])
    assert sent * 2**20 < TRAVEL_LIMIT
    for sub, width in (('SimpleTokenizer-77', 77), ('SimpleTokenizer-16', 16)):
        meta = json.loads((gpu / 'captions' / sub / 'meta.json').read_text())
        ids, length = (np.load(gpu / 'captions' / sub / f'{k}.npy') for k in ('ids', 'length'))
        assert ids.shape == (4096, 2, width) and ids.dtype == np.uint16 and meta['context_length'] == width
        assert ((ids[:, 1] == meta['placeholder_id']).sum(1) >= 1).all()  # every masked caption has a `$` ...
        assert not (ids[:, 0] == meta['placeholder_id']).any()  # ... and no caption of the mix does
        eot = ids.max()  # CLIP's end token is its largest id: the lengths run up to it
        np.testing.assert_array_equal(length, np.maximum((ids[:, 0] == eot).argmax(1), (ids[:, 1] == eot).argmax(1)) + 1)
        assert meta['masking']['kind'] == 'keywords' and meta['masking']['spacy']


def test_gpu_check_rehearsed_in_the_stand_in(prepared, device_python, tmp_path):
    res = gpu_sh(device_python, tmp_path, prepared[0], '--device', 'cpu', '--dry-run')
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'paper recipe' in res.stdout
    assert (tmp_path / 'gpu.log').read_text() == res.stdout and (tmp_path / 'cuda-tests.log').exists()
    r = json.loads((tmp_path / 'gpu.json').read_text())
    assert r['dry_run'] and r['device'] == 'cpu' and r['finished'] and r['recipe'] == dict(steps=20000, batch=512)
    assert r['cuda_tests']['passed'] and re.fullmatch(r'\d+ skipped in .*', r['cuda_tests']['summary'])  # collected, skipped on CPU
    tiny = r['backbones']['lincir-tiny']
    for key in ('chunked', 'whole_batch'):
        assert tiny[key]['ms_per_step'] > 0 and tiny[key]['recipe_minutes'] > 0 and tiny[key]['losses_finite']
        assert tiny[key]['steps_timed'] == 2


def test_training_and_resume_run_in_the_stand_in(prepared, device_python, tmp_path):
    "What the CUDA tests run (train, stop, resume) runs here on CPU in the stand-in: no import of something it lacks."
    site = tmp_path / 'site'
    env = device_env(device_python, PYTHONPATH=f'{ROOT}{os.pathsep}{site}')
    subprocess.run([str(device_python), '-m', 'pip', 'install', '-q', '--no-index', '--no-deps', '--target', str(site),
                    *map(str, (prepared[0] / 'wheels').glob('*.whl'))], check=True, env=env, capture_output=True)
    script = ("import sys, warnings; warnings.simplefilter('ignore')\n"
              "import torch\nfrom tests import test_cuda\nfrom pathlib import Path\nfrom lincir.backbone import load_backbone\n"
              "from lincir.run_folder import read_metrics\ntorch.manual_seed(0); bb = load_backbone('lincir-tiny')\n"
              f"full, resumed = test_cuda.full_and_resumed(bb, Path({str(tmp_path)!r}), 'cpu', 'fp32')\n"
              "print([r['step'] for r in read_metrics(resumed)], [r['loss'] for r in read_metrics(full)] == [r['loss'] for r in read_metrics(resumed)])\n"
              "print(sorted(m for m in ('datasets', 'spacy') if m in sys.modules))")
    res = subprocess.run([str(device_python), '-c', script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert res.stdout.splitlines()[-2:] == ['[1, 2, 3, 4, 5, 6] True', '[]']


@pytest.mark.parametrize('wheel', ['wcwidth', 'open_clip_torch'])
def test_a_missing_wheel_fails_the_rehearsal(prepared, device_python, tmp_path, wheel):
    gpu = tmp_path / 'gpu'
    shutil.copytree(prepared[0], gpu, ignore=shutil.ignore_patterns(f'{wheel}-*.whl'))
    res = gpu_sh(device_python, tmp_path / 'out', gpu, '--device', 'cpu', '--dry-run')
    assert res.returncode == 4, res.stdout[-3000:]
    missing = 'wcwidth' if wheel == 'wcwidth' else 'open_clip'
    assert f"No module named '{missing}'" in res.stdout and 'CARRIED in speed/gpu_prep.py' in res.stdout
    assert not (tmp_path / 'out' / 'gpu.json').exists()
