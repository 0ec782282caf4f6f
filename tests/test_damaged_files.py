"""Files that cannot be used fail naming the file and the fix (issue 20): a checkpoint with non-finite weights or a
bad step, a Phi folder's broken JSON, a full disk under the image index."""
import errno, json, os, shutil
from pathlib import Path

import pytest, torch
from safetensors.torch import load_file, save_file

from lincir.run_folder import CheckpointError
from lincir.training import train

from tests.helpers import ScoreValidator, cfg_for, corpus_for


def test_checkpoint_with_non_finite_weights_is_refused_by_name(tiny, tmp_path):
    "Case 10: a checkpoint holding NaN weights is named as such, with how to restart; it is not 'the last good checkpoint'."
    corpus = corpus_for(tiny)
    train(cfg_for(tmp_path, steps=3), corpus=corpus, progress=False)
    ck = tmp_path / 'run' / 'checkpoint' / 'phi.safetensors'
    w = load_file(str(ck)); w['0.weight'][0, 0] = float('nan'); save_file(w, str(ck))
    with pytest.raises(CheckpointError, match=rf"{ck}.*non-finite.*0\.weight.*[Dd]elete {ck.parent}") as e:
        train(cfg_for(tmp_path, steps=6), corpus=corpus, progress=False)
    assert 'last good' not in str(e.value)


def test_weights_that_turn_non_finite_are_never_checkpointed(tiny, tmp_path, monkeypatch):
    "Case 10: an update that makes the weights NaN while its loss was finite: nothing is saved for that step."
    import lincir.training as T
    original = T.train_step
    def diverging(bb, model, opt, scaler, ctx, cfg, step, *a, **k):
        loss = original(bb, model, opt, scaler, ctx, cfg, step, *a, **k)
        if step == 5:  # the update of the 6th step diverges; its loss was computed before it, finite
            with torch.no_grad(): next(model.parameters()).fill_(float('nan'))
        return loss
    monkeypatch.setattr(T, 'train_step', diverging)
    with pytest.raises(FloatingPointError, match='step 6') as e:
        train(cfg_for(tmp_path, steps=9, save_every=3), corpus=corpus_for(tiny), progress=False)
    run = tmp_path / 'run'
    state = json.loads((run / 'checkpoint' / 'state.json').read_text())
    assert state['step'] == 3 and f"last good checkpoint (step 3) is in {run / 'checkpoint'}" in str(e.value)
    for f in ('checkpoint/phi.safetensors', 'phi.safetensors'):
        assert all(torch.isfinite(v).all() for v in load_file(str(run / f)).values()), f
    assert json.loads((run / 'phi.json').read_text())['step'] == 3


@pytest.mark.parametrize('step', [-5, 'three', 2.5])
def test_state_json_with_a_bad_step_is_named(tiny, tmp_path, step):
    "Case 11: a checkpoint's state.json with a negative (or non-integer) step fails naming the file, not deep in numpy."
    corpus = corpus_for(tiny)
    train(cfg_for(tmp_path, steps=3), corpus=corpus, progress=False)
    path = tmp_path / 'run' / 'checkpoint' / 'state.json'
    state = json.loads(path.read_text()); state['step'] = step; path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=rf"{path}.*step.*delete {path.parent}"):
        train(cfg_for(tmp_path, steps=6), corpus=corpus, progress=False)


def test_broken_json_of_a_phi_folder_is_named(tiny, tmp_path, capsys):
    "Case 20: resolve_phi on a run whose config.json or best/phi.json is broken names the file (no bare JSONDecodeError)."
    from lincir.phi import resolve_phi
    from lincir.phi import PhiFileError
    train(cfg_for(tmp_path, steps=2, val_every=2), corpus=corpus_for(tiny), validator=ScoreValidator(), progress=False)
    run = tmp_path / 'run'
    assert resolve_phi(run)[0] == run / 'best' / 'phi.safetensors'
    for name in ('config.json', 'best/phi.json'):
        path, good = run / name, (run / name).read_text()
        path.write_text('{"l2_normalize": ')
        with pytest.raises(PhiFileError, match=rf"{path} is not valid JSON"): resolve_phi(run)
        with pytest.raises(PhiFileError, match=rf"{path}"): resolve_phi(run / 'best' / 'phi.safetensors')
        path.write_text(good)


@pytest.fixture
def photos(tmp_path, monkeypatch):
    import random
    from lincir.shapes import random_scene, render
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path / 'cache'))
    rng = random.Random(0)
    (tmp_path / 'photos').mkdir()
    for n in range(5): render(random_scene(rng, 1)).save(tmp_path / 'photos' / f'{n}.png')
    return tmp_path / 'photos'


def test_index_on_a_full_disk_names_the_file(photos, tmp_path, monkeypatch, capsys):
    "Case 16: a full disk under `index` names the file being written and says the disk is full; the index stays usable."
    import numpy as np
    from lincir.search import main
    real, usage = np.save, shutil.disk_usage
    def full(*a, **k): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(np, 'save', full)
    with pytest.raises(OSError, match=r"shard-[^ ]*\.npy.*disk .*is full") as e: main(['index', str(photos)])
    assert e.value.errno == errno.ENOSPC
    # numpy's own short write has no errno ('131072 requested and 1984 written'): the free space tells
    def short(*a, **k): raise OSError('131072 requested and 1984 written')
    monkeypatch.setattr(np, 'save', short)
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1984, 1984))
    with pytest.raises(OSError, match=r"shard-[^ ]*\.npy \(131072 requested and 1984 written\).*disk .*is full"):
        main(['index', str(photos)])
    monkeypatch.setattr(np, 'save', real); monkeypatch.setattr(shutil, 'disk_usage', usage)
    capsys.readouterr()
    store = Path(tmp_path / 'cache' / 'store')
    assert not [p for p in store.rglob('*') if 'tmp' in p.name or p.suffix == '.npy']  # no half shard, no orphan array
    main(['index', str(photos)])
    assert '5 encoded' in capsys.readouterr().out
