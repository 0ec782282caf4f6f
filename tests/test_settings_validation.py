"""Every numeric training setting is checked, finite and in range, before anything is written (issue 20), by the
Python API and by the command line alike; the command line's help shows real defaults."""
import math

import pytest, torch

from lincir.train_config import parse_args
from lincir.training import train

from tests.helpers import cfg_for, corpus_for

BAD = [('grad_clip', -1.0), ('grad_clip', math.nan), ('grad_clip', 0.0),  # case 4: -1 did gradient ascent
       ('weight_decay', math.nan), ('weight_decay', -0.01), ('noise_scale', math.inf),  # case 9
       ('seed', -1), ('seed', 2**64),  # case 11
       ('warmup_steps', -1), ('dropout', math.nan), ('ema', math.inf), ('val_every', 0), ('val_max_queries', 0),
       ('num_proc', 0), ('log_every', 0), ('chunks', 0), ('lr', -1e-3)]


@pytest.mark.parametrize('name,value', BAD, ids=[f'{n}={v}' for n, v in BAD])
def test_bad_numbers_are_refused_before_anything_is_written(tiny, tmp_path, name, value):
    "Cases 4, 9, 11: refused by name with the value, before the run folder exists; the corrected launch then trains."
    with pytest.raises(ValueError, match=f"{name} must be .*got {value!r}"):
        train(cfg_for(tmp_path, **{name: value}), corpus=corpus_for(tiny), progress=False)
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('flag,value', [('--grad_clip', '-1'), ('--weight_decay', 'nan'), ('--noise_scale', 'inf'),
                                        ('--seed', '-1')])
def test_the_command_line_refuses_them_as_argument_errors(capsys, flag, value):
    "Cases 4, 9, 11 as typed: an argument error (status 2) naming the flag, not a traceback from torch or numpy."
    with pytest.raises(SystemExit) as e: parse_args([flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag[2:]} must be" in err and value in err


def test_corrected_relaunch_after_a_refusal_trains(tiny, tmp_path):
    "Case 9: the refusal wrote nothing, so the same folder then takes the corrected settings."
    with pytest.raises(ValueError): train(cfg_for(tmp_path, weight_decay=math.nan), corpus=corpus_for(tiny), progress=False)
    train(cfg_for(tmp_path, weight_decay=0.0, steps=2), corpus=corpus_for(tiny), progress=False)
    assert (tmp_path / 'run' / 'checkpoint').exists()


def test_non_finite_loss_advice_fits_the_settings(tiny, tmp_path, monkeypatch):
    "Case 9: the advice after a non-finite loss names only what applies: no precision change in fp32, no grad_clip when set."
    import lincir.training as T
    monkeypatch.setattr(T, 'smp_loss', lambda *a, **k: torch.tensor(float('nan'), requires_grad=True))
    with pytest.raises(FloatingPointError) as e:
        train(cfg_for(tmp_path / 'a', precision='fp32', grad_clip=1.0), corpus=corpus_for(tiny), progress=False)
    msg = str(e.value)
    assert 'precision' not in msg and 'grad_clip' not in msg and 'lr' in msg and '0.001' in msg, msg
    with pytest.raises(FloatingPointError) as e:
        train(cfg_for(tmp_path / 'b', precision='fp32'), corpus=corpus_for(tiny), progress=False)
    assert 'grad_clip' in str(e.value) and 'precision' not in str(e.value)


def test_help_shows_real_defaults(capsys):
    "Case 15: `--help` shows the default of --captions (a default factory) as its value."
    with pytest.raises(SystemExit): parse_args(['--help'])
    out = ' '.join(capsys.readouterr().out.split())
    assert '_MISSING_TYPE' not in out and "(default: ['shapes'])" in out
