"Runs that survive clusters: preemption, kill -9, concurrent launches, torn files and bad settings (issue 11)."
import json, os, random, signal, socket, subprocess, sys, time
from pathlib import Path

import pytest, torch
from safetensors.torch import load_file

from lincir.files import RunLockedError
from lincir.train_config import TrainConfig, parse_args
from lincir.run_folder import CheckpointError, read_metrics
from lincir.training import train

from tests.helpers import DEAD_PID, ScoreValidator, cfg_for, corpus_for

REPO = Path(__file__).resolve().parents[1]
def rows_without_timing(run):
    return [{k: v for k, v in r.items() if k != 'samples_per_s'} for r in read_metrics(run)]


def same_weights(a, b):
    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize('stop_at', [2, 3])  # the validation of step 4; the final validation (step 6)
def test_interrupted_validation_is_redone_on_resume(tiny, tmp_path, stop_at):
    corpus = corpus_for(tiny)
    kw = dict(steps=6, val_every=2, save_every=100)
    full = train(cfg_for(tmp_path / 'full', **kw), corpus=corpus, validator=ScoreValidator(), progress=False)
    with pytest.raises(SystemExit) as e:
        train(cfg_for(tmp_path, **kw), corpus=corpus, validator=ScoreValidator(stop_at), progress=False)
    assert e.value.code == 128 + signal.SIGTERM
    run = tmp_path / 'run'
    state = json.loads((run / 'checkpoint' / 'state.json').read_text())
    assert (state['step'], state['val_pending']) == (2 * stop_at, True)
    assert [r['step'] for r in read_metrics(run) if 'val' in r] == [2 * s for s in range(1, stop_at)]
    train(cfg_for(tmp_path, **kw), corpus=corpus, validator=ScoreValidator(), progress=False)
    assert rows_without_timing(run) == rows_without_timing(full)  # each validation once, in order
    assert json.loads((run / 'checkpoint' / 'state.json').read_text())['val_pending'] is False
    assert json.loads((run / 'best' / 'metrics.json').read_text()) == json.loads((full / 'best' / 'metrics.json').read_text())
    assert same_weights(run / 'best' / 'phi.safetensors', full / 'best' / 'phi.safetensors')


# --- real processes: kill -9, SIGTERM, a second launch --------------------------------------------------------------

def cli(out_dir, steps, save_every=7):
    return [sys.executable, '-m', 'lincir.training', '--backbone', 'lincir-tiny', '--pretrained', 'none',
            '--captions', 'shapes:400', '--masking', 'random', '--steps', str(steps), '--batch_size', '16', '--lr', '1e-3',
            '--val_benchmark', 'none', '--log_every', '1', '--save_every', str(save_every), '--device', 'cpu',
            '--out_dir', str(out_dir)]


@pytest.fixture
def env(tmp_path):
    return {**os.environ, 'LINCIR_CACHE': str(tmp_path / 'cache'), 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1',
            'PYTHONPATH': os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]), 'PYTHONWARNINGS': 'default'}


def launch(run, steps, env):
    "Start a training process; returns it and a function that waits until it trains (True) or has ended (False)."
    m = run / 'metrics.jsonl'
    inode = m.stat().st_ino if m.exists() else None
    ck = run / 'checkpoint' / 'state.json'
    done = json.loads(ck.read_text())['step'] if ck.exists() else 0
    proc = subprocess.Popen(cli(run, steps), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    def training(timeout=300):
        t = time.time()
        while time.time() - t < timeout:  # metrics.jsonl is rewritten (cut back) at start, then gets rows
            try:
                if m.stat().st_ino != inode and len(m.read_text().splitlines()) > done: return True
            except FileNotFoundError: pass
            if proc.poll() is not None: return False
            time.sleep(0.05)
        raise TimeoutError(f"no new metrics row after {timeout}s")
    return proc, training


def test_kill_9_sigterm_and_a_second_launch(tmp_path, env, monkeypatch, capsys):
    """A training process is killed (-9) twice at random moments, then sent SIGTERM at a random moment; while it runs a
    second launch into its folder is refused. The rerun completes: every step logged once, the final weights equal an
    uninterrupted run's (SIGKILL saves nothing: the steps after the last checkpoint are redone, exactly)."""
    steps, run = 120, tmp_path / 'run'
    monkeypatch.setenv('LINCIR_CACHE', env['LINCIR_CACHE'])
    threads = torch.get_num_threads(); torch.set_num_threads(1)  # as the processes (OMP_NUM_THREADS=1): same arithmetic
    try: ref = train(parse_args(cli(tmp_path / 'ref', steps)[3:]), progress=False)  # also builds the masked corpus
    finally: torch.set_num_threads(threads)
    rng, delays = random.Random(), []
    for sig in (signal.SIGKILL, signal.SIGKILL, signal.SIGTERM):
        proc, training = launch(run, steps, env)
        try:
            running = training()
            if running and not delays:
                with pytest.raises(RunLockedError, match=f'another run \\(pid {proc.pid} on {socket.gethostname()}\\) is writing'):
                    train(TrainConfig(out_dir=str(run), backbone='lincir-tiny', pretrained=None), progress=False)
            delays.append(rng.uniform(0, 0.5)); time.sleep(delays[-1])
            proc.send_signal(sig); out = proc.communicate(timeout=120)[0]
        finally:
            if proc.poll() is None: proc.kill()
        if sig == signal.SIGTERM and proc.returncode != 0:  # it may have finished before the signal
            assert proc.returncode == 128 + signal.SIGTERM, (delays, out[-2000:])
            step = json.loads((run / 'checkpoint' / 'state.json').read_text())['step']
            assert f'SIGTERM: checkpoint of step {step} saved' in out
            assert [r['step'] for r in read_metrics(run)] == list(range(1, step + 1))
            assert (run / '.lock').read_text() == ''  # released on the way out
    last = subprocess.run(cli(run, steps), env=env, capture_output=True, text=True, timeout=600)
    assert last.returncode == 0, (delays, last.stderr[-3000:])
    assert [r['step'] for r in read_metrics(run)] == list(range(1, steps + 1)), delays
    assert [r['loss'] for r in read_metrics(run)] == [r['loss'] for r in read_metrics(ref)], delays
    for name in ('phi.safetensors', 'checkpoint/phi.safetensors', 'checkpoint/optimizer.safetensors'):
        assert same_weights(run / name, ref / name), (name, delays)
    assert not [p.name for p in run.iterdir() if '.lincir-tmp-' in p.name or p.name.endswith('.lincir-old')]
    assert (run / '.lock').read_text() == ''


# --- torn and stale files ----------------------------------------------------------------------------------------

def test_torn_metrics_line_is_tolerated_and_dropped(tiny, tmp_path):
    corpus = corpus_for(tiny)
    train(cfg_for(tmp_path, steps=3), corpus=corpus, progress=False)
    run = tmp_path / 'run'
    with open(run / 'metrics.jsonl', 'a') as f: f.write('{"step": 4, "lo')  # killed mid-write
    with pytest.warns(UserWarning, match='last line is incomplete'): assert len(read_metrics(run)) == 3
    with pytest.warns(UserWarning, match='last line is incomplete'):
        train(cfg_for(tmp_path, steps=6), corpus=corpus, progress=False)
    assert [r['step'] for r in read_metrics(run)] == [1, 2, 3, 4, 5, 6]
    (run / 'metrics.jsonl').write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match='metrics.jsonl, line 2, is not a metrics row'): read_metrics(run)


def test_rows_of_a_lost_part_are_dropped(tiny, tmp_path):
    "A crash after step 5 but with the last checkpoint at 3: rows 4, 5 belong to a lost part and go."
    corpus = corpus_for(tiny)
    train(cfg_for(tmp_path, steps=5, save_every=3), corpus=corpus, progress=False)
    run = tmp_path / 'run'
    import shutil; shutil.rmtree(run / 'checkpoint')
    train(cfg_for(tmp_path, steps=3, save_every=3), corpus=corpus, progress=False)  # the checkpoint of step 3
    with open(run / 'metrics.jsonl', 'a') as f: f.write('{"step": 4, "loss": 1.0}\n{"step": 5, "loss": 1.0}\n')
    train(cfg_for(tmp_path, steps=6), corpus=corpus, progress=False)
    assert [r['step'] for r in read_metrics(run)] == [1, 2, 3, 4, 5, 6]
    assert all(r['loss'] != 1.0 for r in read_metrics(run))


def test_damaged_checkpoint_names_the_file(tiny, tmp_path):
    corpus = corpus_for(tiny)
    train(cfg_for(tmp_path, steps=3), corpus=corpus, progress=False)
    w = tmp_path / 'run' / 'checkpoint' / 'phi.safetensors'
    w.write_bytes(w.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=f'Cannot read {w}.*delete {w.parent}'):
        train(cfg_for(tmp_path, steps=6), corpus=corpus, progress=False)
    (tmp_path / 'run' / 'config.json').write_text('{"steps": ')
    with pytest.raises(CheckpointError, match='config.json'):
        train(cfg_for(tmp_path, steps=6), corpus=corpus, progress=False)


def test_leftovers_and_stale_lock_are_cleaned(tiny, tmp_path, capsys):
    corpus = corpus_for(tiny)
    train(cfg_for(tmp_path, steps=3), corpus=corpus, progress=False)
    run, host = tmp_path / 'run', socket.gethostname()
    (run / f'.checkpoint.lincir-tmp-{host}.{DEAD_PID}-abc').mkdir()  # killed between the two renames
    (run / f'.phi.safetensors.lincir-tmp-{host}.{DEAD_PID}-xyz').write_bytes(b'half')
    (run / 'best').mkdir(); (run / 'best' / f'.phi.json.lincir-tmp-{host}.{DEAD_PID}-xyz').write_bytes(b'half')
    (run / '.lock').write_text(json.dumps(dict(pid=DEAD_PID, host=host)))  # its holder was killed
    with pytest.warns(UserWarning, match=f'did not end cleanly \\(pid {DEAD_PID}'):
        train(cfg_for(tmp_path, steps=4), corpus=corpus, progress=False)
    assert 'removed what an interrupted run left' in capsys.readouterr().out
    assert sorted(p.name for p in run.iterdir() if p.name.startswith('.')) == ['.lincir-owner.json', '.lock']
    assert list((run / 'best').iterdir()) == []


def test_files_follow_the_umask(tiny, tmp_path):
    old = os.umask(0o022)
    try: train(cfg_for(tmp_path, steps=3), corpus=corpus_for(tiny), progress=False)
    finally: os.umask(old)
    run = tmp_path / 'run'
    for p in ('config.json', 'phi.safetensors', 'phi.json', 'checkpoint', 'checkpoint/phi.safetensors'):
        assert (run / p).stat().st_mode & 0o777 == (0o755 if (run / p).is_dir() else 0o644), p


def test_corrupt_caches_are_rebuilt(tiny, tmp_path, monkeypatch):
    from PIL import Image
    from lincir.captions import masked_corpus
    from lincir.retrieval import image_features
    from lincir.store import open_store
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path / 'cache'))
    scratch = tmp_path / 'cache' / 'captions' / f'.0123456789abcdef.lincir-tmp-{socket.gethostname()}.{DEAD_PID}-q'
    scratch.mkdir(parents=True)  # a builder killed mid-masking
    ds = masked_corpus(['shapes:50'], tiny, masking='random')
    assert not scratch.exists()
    arrow, before = next(Path(f['filename']) for f in ds.cache_files), ds['masked_tokens'][:]
    del ds  # memory-mapped: let it go before the file is cut short
    data = arrow.read_bytes(); arrow.unlink(); arrow.write_bytes(data[:100])
    with pytest.warns(UserWarning, match='cannot be read.*rebuilding'):
        again = masked_corpus(['shapes:50'], tiny, masking='random')
    assert again['masked_tokens'][:] == before
    images = {}
    for i, c in enumerate(['red', 'blue']):
        Image.new('RGB', (32, 32), c).save(tmp_path / f'{c}.png'); images[c] = tmp_path / f'{c}.png'
    ids, feats, _ = image_features(tiny, images, progress=False)
    shard = next(open_store(tiny).path.glob('shard-*.npy'))  # the feature store's shard of these two images
    shard.write_bytes(b'not an array')
    with pytest.warns(UserWarning, match=shard.name.split('.')[0]):  # the warning names the shard
        ids2, feats2, _ = image_features(tiny, images, progress=False)
    assert ids2 == ids and torch.equal(feats2, feats)


def test_non_finite_phi_is_an_error(tiny, tmp_path):
    from lincir.phi import Phi, PhiFileError, load_phi, save_phi
    from lincir.retrieval import Query, query_features
    phi = Phi.for_backbone(tiny)
    torch.nn.init.constant_(phi[-1].bias, float('nan'))
    w = save_phi(phi, tmp_path, tiny)
    with pytest.raises(PhiFileError, match=f'{w} holds non-finite weights'): load_phi(tmp_path, tiny)
    with pytest.raises(ValueError, match='non-finite pseudo tokens'):
        query_features(tiny, 'lincir', [Query('q', 'r', ['is blue'])], torch.randn(1, tiny.embed_dim), phi)


def test_punctuation_only_captions_are_dropped_with_a_warning(tiny, tmp_path, monkeypatch):
    from lincir.captions import masked_corpus
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path / 'cache'))
    (tmp_path / 'c.txt').write_text('a red circle\n...\n!!!\na blue square\n')
    with pytest.warns(UserWarning, match=r"2 of 4 captions have no letter or digit .*'\.\.\.', '!!!'"):
        ds = masked_corpus(tmp_path / 'c.txt', tiny, masking='random')
    assert ds['caption'] == ['a red circle', 'a blue square']


# --- bad settings: refused before any work ---------------------------------------------------------------------------

def test_bad_numbers_and_out_dir(tmp_path, capsys):
    (tmp_path / 'file').write_text('')
    for kw, msg in [(dict(grad_accum=0), 'grad_accum must be an integer >= 1'), (dict(lr=float('inf')), 'lr must be a finite'),
                    (dict(lr='abc'), 'lr must be a number'), (dict(out_dir=str(tmp_path / 'file')), 'is a file'),
                    (dict(out_dir=str(tmp_path / 'file' / 'run')), 'is a file')]:
        with pytest.raises(ValueError, match=msg): train(cfg_for(tmp_path, **kw), progress=False)
    with pytest.raises(SystemExit): parse_args(['--lr', 'abc'])
    assert "argument --lr: expected a number, got 'abc'" in capsys.readouterr().err
    assert not (tmp_path / 'run').exists()


def test_val_metric_is_checked_before_training(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"val_metric 'R@11' is not a metric .* choose one of \['score'\]"):
        train(cfg_for(tmp_path, val_metric='R@11'), corpus=corpus_for(tiny), validator=ScoreValidator(), progress=False)
    assert read_metrics(tmp_path / 'run') == [] and not (tmp_path / 'run' / 'checkpoint').exists()


def test_corpus_smaller_than_a_batch(tiny, tmp_path):
    with pytest.raises(ValueError, match=r'8 usable captions, fewer than one batch \(batch_size=16\)'):
        train(cfg_for(tmp_path), corpus=corpus_for(tiny, 8), progress=False)
    assert not (tmp_path / 'run' / 'config.json').exists()  # refused settings do not claim the folder


def test_settings_check_without_checkpoint(tiny, tmp_path, monkeypatch):
    "A run that crashed before its first save still owns its folder: other settings are refused, the same ones restart it."
    import lincir.training as T
    def crash(*a, **k): raise MemoryError('killed before the first save')
    monkeypatch.setattr(T, 'train_step', crash)
    with pytest.raises(MemoryError): train(cfg_for(tmp_path), corpus=corpus_for(tiny), progress=False)
    assert not (tmp_path / 'run' / 'checkpoint').exists()
    monkeypatch.undo()
    with pytest.raises(ValueError, match='other settings.*lr'):
        train(cfg_for(tmp_path, lr=5e-4), corpus=corpus_for(tiny), progress=False)
    train(cfg_for(tmp_path, steps=2), corpus=corpus_for(tiny), progress=False)
    assert [r['step'] for r in read_metrics(tmp_path / 'run')] == [1, 2]


def test_non_finite_loss_without_checkpoint_says_so(tiny, tmp_path, monkeypatch):
    import lincir.training as T
    monkeypatch.setattr(T, 'smp_loss', lambda *a, **k: torch.tensor(float('nan'), requires_grad=True))
    with pytest.raises(FloatingPointError, match='no checkpoint was saved yet') as e:
        train(cfg_for(tmp_path, lr=float(1e-3)), corpus=corpus_for(tiny), progress=False)
    assert 'last good' not in str(e.value)


def test_caption_files_fail_clearly(tiny, tmp_path, monkeypatch):
    from lincir.captions import load_captions
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path / 'cache'))
    (tmp_path / 'mixed.jsonl').write_text('{"text": "a large cross"}\n{"text": 7}\n')
    assert load_captions(tmp_path / 'mixed.jsonl')['caption'] == ['a large cross', '7']
    (tmp_path / 'empty.txt').write_text('')
    (tmp_path / 'caps.csv').write_text('caption\na red circle\n')
    for f, msg in [('empty.txt', 'empty.txt is empty: it should hold one caption per line'),
                   ('caps.csv', "has no column 'text'; its columns: caption. Choose one with --caption_column")]:
        with pytest.raises(ValueError, match=msg):
            train(cfg_for(tmp_path / f'runs-{f}', captions=[str(tmp_path / f)]), progress=False)
