import dataclasses, json, os, signal, subprocess, sys, textwrap, warnings
import numpy as np
import pytest, torch
from safetensors.torch import load_file

from lincir.run_folder import read_metrics
from lincir.training import train

from tests.helpers import REPO, cfg_for, corpus_for

@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        yield


def test_resume_continues_exactly(tiny, tmp_path):
    corpus = corpus_for(tiny)
    full = train(cfg_for(tmp_path / 'a', ema=0.9), corpus=corpus, progress=False)
    half = cfg_for(tmp_path / 'b', ema=0.9, steps=3)
    train(half, corpus=corpus, progress=False)
    resumed = train(dataclasses.replace(half, steps=6), corpus=corpus, progress=False)
    a, b = read_metrics(full), read_metrics(resumed)
    assert [r['step'] for r in b] == [1, 2, 3, 4, 5, 6]
    assert [r['loss'] for r in a] == [r['loss'] for r in b]
    for name in ('phi.safetensors', 'checkpoint/phi.safetensors', 'checkpoint/ema.safetensors'):
        wa, wb = load_file(str(full / name)), load_file(str(resumed / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_resume_refuses_other_settings(tiny, tmp_path):
    corpus = corpus_for(tiny)
    train(cfg_for(tmp_path, steps=3), corpus=corpus, progress=False)
    with pytest.raises(ValueError, match='lr'):
        train(cfg_for(tmp_path, steps=6, lr=5e-4), corpus=corpus, progress=False)


def test_nan_loss_stops_and_keeps_last_checkpoint(tiny, tmp_path, monkeypatch):
    import lincir.training as T
    corpus = corpus_for(tiny)
    calls, original = {'n': 0}, T.smp_loss
    def loss_that_explodes(*a, **k):
        calls['n'] += 1
        loss = original(*a, **k)
        return loss * float('nan') if calls['n'] == 5 else loss  # the 5th step's loss
    monkeypatch.setattr(T, 'smp_loss', loss_that_explodes)
    with pytest.raises(FloatingPointError, match='checkpoint'):  # chunks=1: one smp_loss call per step
        train(cfg_for(tmp_path, steps=6, chunks=1), corpus=corpus, progress=False)
    run = tmp_path / 'run'
    assert json.loads((run / 'checkpoint' / 'state.json').read_text())['step'] == 3
    assert all(torch.isfinite(v).all() for v in load_file(str(run / 'checkpoint' / 'phi.safetensors')).values())
    assert [r['step'] for r in read_metrics(run)] == [1, 2, 3, 4]


def test_bad_settings_fail_before_work(tmp_path):
    for kw, msg in [(dict(batch_size=0), 'batch_size'), (dict(steps=0), 'steps'),
                    (dict(backbone='ViT-Q-99', pretrained='openai'), 'ViT-Q-99'),
                    (dict(captions=[str(tmp_path / 'missing.txt')]), 'missing.txt'),
                    (dict(batch_size=10, grad_accum=3), 'grad_accum'), (dict(noise='uniform'), 'noise'),
                    (dict(val_also_at=0), 'val_also_at'), (dict(steps=6, val_also_at=7), 'val_also_at'),
                    (dict(val_also_at=2.5), 'val_also_at')]:
        with pytest.raises(Exception, match=msg):
            train(cfg_for(tmp_path, **kw), progress=False)
    assert not (tmp_path / 'run').exists()


class StepScores:
    "A validator that returns the given scores, one per call."
    headline, metric_names = 'score', ['score']
    def __init__(self, scores): self.scores = list(scores)
    def __call__(self, phi): return {'score': self.scores.pop(0)}


def test_validation_also_at_a_step_can_become_best(tiny, tmp_path):
    "`val_also_at` validates after that step too (the official loop: step 50), and that step can be the best checkpoint."
    corpus = corpus_for(tiny)
    plain = train(cfg_for(tmp_path / 'plain', val_every=4), corpus=corpus, validator=StepScores([1., 2.]), progress=False)
    assert [r['step'] for r in read_metrics(plain) if 'val' in r] == [4, 6]
    run = train(cfg_for(tmp_path, val_every=4, val_also_at=3), corpus=corpus, validator=StepScores([9., 1., 2.]), progress=False)
    assert [(r['step'], r['val']['score']) for r in read_metrics(run) if 'val' in r] == [(3, 9.), (4, 1.), (6, 2.)]
    assert json.loads((run / 'best' / 'metrics.json').read_text()) == {'step': 3, 'score': 9.}
    three = train(cfg_for(tmp_path / 'three', steps=3), corpus=corpus, progress=False)
    best, at3 = load_file(str(run / 'best' / 'phi.safetensors')), load_file(str(three / 'phi.safetensors'))
    assert best.keys() == at3.keys() and all(torch.equal(best[k], at3[k]) for k in best)  # the weights of step 3
    with pytest.raises(ValueError, match='val_also_at'):  # it decides best/: part of the run's identity
        train(cfg_for(tmp_path, val_every=4, val_also_at=5), corpus=corpus, validator=StepScores([0.] * 3), progress=False)


def test_ddp_two_cpu_processes_end_identical(tmp_path):
    script = tmp_path / 'ddp.py'
    script.write_text(textwrap.dedent(f'''
        import sys, warnings, torch
        warnings.simplefilter('ignore')
        import torch.distributed as dist
        from pathlib import Path
        from safetensors.torch import save_file
        from tests.helpers import corpus_for, cfg_for
        from lincir.backbone import load_backbone
        import lincir.training as T
        captured = {{}}
        original = T.train_step
        def spy(bb, model, *a, **k):
            captured['model'] = model
            return original(bb, model, *a, **k)
        T.train_step = spy
        bb = load_backbone('lincir-tiny')
        out = Path({str(tmp_path)!r})
        T.train(cfg_for(out, steps=4, batch_size=16, device='cpu'), corpus=corpus_for(bb), progress=False)
        phi = captured['model'].module
        save_file({{k: v.contiguous() for k, v in phi.state_dict().items()}}, str(out / f'rank{{dist.get_rank()}}.safetensors'))
        dist.destroy_process_group()
    '''))
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')])}
    res = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29533',
                          str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = load_file(str(tmp_path / 'rank0.safetensors')), load_file(str(tmp_path / 'rank1.safetensors'))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    written = load_file(str(tmp_path / 'run' / 'phi.safetensors'))
    assert all(torch.equal(r0[k], written[k]) for k in r0)
    assert not (tmp_path / 'rank-1').exists()
    rows = read_metrics(tmp_path / 'run')
    assert [r['step'] for r in rows] == [1, 2, 3, 4] and all(np.isfinite(r['loss']) for r in rows)


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_resume_is_exact(tiny, tmp_path, monkeypatch, sig):
    "Ctrl-C (SIGINT) or a preemption (SIGTERM) during step 5: step 5 finishes, is saved, and the run resumes bit-identically."
    import lincir.training as T
    corpus = corpus_for(tiny)
    calls, original = {'n': 0}, T.train_step
    def interrupted(*a, **k):
        calls['n'] += 1
        if calls['n'] == 5: os.kill(os.getpid(), sig)
        return original(*a, **k)
    monkeypatch.setattr(T, 'train_step', interrupted)
    handler = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else SystemExit) as e:
        train(cfg_for(tmp_path, steps=8, save_every=100, ema=0.9), corpus=corpus, progress=False)
    if sig == signal.SIGTERM: assert e.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(sig) == handler  # given back
    run = tmp_path / 'run'
    assert json.loads((run / 'checkpoint' / 'state.json').read_text())['step'] == 5
    monkeypatch.setattr(T, 'train_step', original)
    train(cfg_for(tmp_path, steps=8, save_every=100, ema=0.9), corpus=corpus, progress=False)
    assert [r['step'] for r in read_metrics(run)] == list(range(1, 9))
    full = train(cfg_for(tmp_path / 'uninterrupted', steps=8, ema=0.9), corpus=corpus, progress=False)
    assert [r['loss'] for r in read_metrics(full)] == [r['loss'] for r in read_metrics(run)]
    for name in ('phi.safetensors', 'checkpoint/phi.safetensors', 'checkpoint/ema.safetensors', 'checkpoint/optimizer.safetensors'):
        wa, wb = load_file(str(full / name)), load_file(str(run / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
