"""A run folder is resumed only by the same run (issue 20): every setting that changes what is computed or compared,
and the caption corpus itself, must be the same; the top-level Phi is always the checkpoint's after a launch."""
import dataclasses, json, re

import pytest, torch
from safetensors.torch import load_file

from lincir.train_config import TrainConfig
from lincir.run_folder import read_metrics
from lincir.training import train

from tests.helpers import cfg_for, corpus_for

# The settings a relaunch may change, and why: nothing else may differ (pinned here so a new setting is a decision)
MAY_CHANGE = {'steps': 'the run may be extended', 'log_every': 'logging cadence', 'save_every': 'checkpoint cadence',
              'num_proc': 'masking processes', 'device': 'where it runs', 'out_dir': 'the folder itself'}


class TwoMetrics:
    "A validator reporting two metrics, both functions of the weights."
    headline, metric_names = 'score', ['score', 'other']
    def __call__(self, phi):
        s = float(sum(p.detach().double().sum() for p in phi.parameters()))
        return {'score': s, 'other': -s}


def refused(tmp_path, corpus, match, **kw):
    "Launching into the run at tmp_path with `kw` raises a ValueError matching `match`; nothing in the folder changes."
    run = tmp_path / 'run'
    before = {p: p.read_bytes() for p in run.rglob('*') if p.is_file()}
    with pytest.raises(ValueError, match=match):
        train(cfg_for(tmp_path, **kw), corpus=corpus, validator=TwoMetrics(), progress=False)
    assert {p: p.read_bytes() for p in run.rglob('*') if p.is_file()} == before


@pytest.mark.parametrize('name,first,second', [('val_metric', 'score', 'other'), ('val_split', 'val', 'test'),
                                               ('val_every', 2, 3), ('val_max_queries', None, 50),
                                               ('val_benchmark', None, 'shapes')])
def test_resume_refuses_changed_validation_settings(tiny, tmp_path, name, first, second):
    "Case 1: a validation setting changed between launches is refused, naming the setting, the old and the new value."
    corpus, kw = corpus_for(tiny), dict(steps=4, val_every=2, val_metric='score')
    train(cfg_for(tmp_path, **{**kw, name: first}), corpus=corpus, validator=TwoMetrics(), progress=False)
    refused(tmp_path, corpus, re.escape(f"{name}: {first!r} -> {second!r}"), **{**kw, 'steps': 6, name: second})


def _alternative(f:dataclasses.Field, tmp_path):
    "A valid value of setting `f` other than cfg_for's."
    explicit = dict(backbone='shapes-clip', pretrained=str(tmp_path / 'weights.pt'), captions=['shapes:300'],
                    caption_column='caption', masking='random', batching='grouped', schedule='cosine', noise='gaussian',
                    precision='fp32', val_benchmark='shapes', val_split='test', val_metric='other', grad_clip=1.0, ema=0.9)
    if f.name in explicit: return explicit[f.name]
    value = getattr(cfg_for(tmp_path), f.name)
    if isinstance(value, bool): return not value
    if isinstance(value, int): return value * 2 if value else 1
    if isinstance(value, float): return value / 2 if value else 0.5
    if value is None: return 1
    raise AssertionError(f"no alternative value for the setting {f.name!r}: add one here, or list it in MAY_CHANGE with a reason")


def test_every_setting_is_checked_unless_it_may_change(tiny, tmp_path):
    "Case 1, at its root: each setting outside MAY_CHANGE, changed alone, is refused on resume (named with both values)."
    (tmp_path / 'weights.pt').write_bytes(b'')
    corpus = corpus_for(tiny)
    train(cfg_for(tmp_path, steps=2, val_every=2, val_metric='score'), corpus=corpus, validator=TwoMetrics(), progress=False)
    checked = [f for f in dataclasses.fields(TrainConfig) if f.name not in MAY_CHANGE]
    assert len(checked) >= 25
    for f in checked:
        new = _alternative(f, tmp_path)
        kw = {**dict(steps=2, val_every=2, val_metric='score'), f.name: new}
        refused(tmp_path, corpus, re.escape(f"{f.name}: ") + '.*' + re.escape(f" -> {new!r}"), **kw)


def test_resume_refuses_a_changed_caption_file(tmp_path, monkeypatch):
    "Case 2: the caption file overwritten between launches is refused, naming it; the same content rewritten is not a change."
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path / 'cache'))
    caps = tmp_path / 'caps.txt'
    text = '\n'.join(f'a red circle number {i}' for i in range(40))
    caps.write_text(text)
    kw = dict(captions=[str(caps)], masking='random', val_benchmark=None)
    train(cfg_for(tmp_path, steps=2, **kw), progress=False)
    caps.write_text('\n'.join(f'a blue square number {i}' for i in range(40)))
    run = tmp_path / 'run'
    before = (run / 'config.json').read_text()
    with pytest.raises(ValueError, match=rf"caption.*{re.escape(str(caps))}.*changed"):
        train(cfg_for(tmp_path, steps=4, **kw), progress=False)
    assert (run / 'config.json').read_text() == before
    caps.write_text(text)  # the original captions again, with a new modification time
    train(cfg_for(tmp_path, steps=4, **kw), progress=False)
    assert [r['step'] for r in read_metrics(run)] == [1, 2, 3, 4]


def test_resume_refuses_another_corpus_given_in_memory(tiny, tmp_path):
    "Case 2: a corpus handed to `train` is identified by its content."
    train(cfg_for(tmp_path, steps=2), corpus=corpus_for(tiny), progress=False)
    with pytest.raises(ValueError, match='caption corpus'):
        train(cfg_for(tmp_path, steps=4), corpus=corpus_for(tiny, 160), progress=False)
    train(cfg_for(tmp_path, steps=4), corpus=corpus_for(tiny), progress=False)


def _same(a, b):
    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize('damage', ['stale', 'truncated'])
def test_top_level_phi_is_resynced_from_the_checkpoint(tiny, tmp_path, damage):
    """Case 3: a kill after the checkpoint swap but before the top-level Phi was written (it still holds an earlier
    step), or a truncated top-level Phi: any launch, even of a finished run, makes it the checkpoint's again."""
    corpus = corpus_for(tiny)
    kw = dict(steps=6, save_every=3, ema=0.9)
    train(cfg_for(tmp_path, **kw), corpus=corpus, progress=False)
    run = tmp_path / 'run'
    if damage == 'stale':
        earlier = train(cfg_for(tmp_path / 'earlier', **{**kw, 'steps': 3}), corpus=corpus, progress=False)
        for name in ('phi.safetensors', 'phi.json'): (run / name).write_bytes((earlier / name).read_bytes())
        assert json.loads((run / 'phi.json').read_text())['step'] == 3
    else:
        w = run / 'phi.safetensors'; w.write_bytes(w.read_bytes()[:100])
    train(cfg_for(tmp_path, **kw), corpus=corpus, progress=False)  # finished already: no step is trained
    assert _same(run / 'phi.safetensors', run / 'checkpoint' / 'ema.safetensors')
    assert json.loads((run / 'phi.json').read_text())['step'] == 6
    assert [r['step'] for r in read_metrics(run)] == list(range(1, 7))


def test_steps_below_the_reached_step_is_refused(tiny, tmp_path):
    "Case 12: relaunching a run at step 6 with steps=3 is refused, naming both; config.json keeps 6."
    corpus = corpus_for(tiny)
    train(cfg_for(tmp_path, steps=6), corpus=corpus, progress=False)
    cfg = tmp_path / 'run' / 'config.json'
    before = cfg.read_text()
    with pytest.raises(ValueError, match=r'steps.* 3 .*step 6'):
        train(cfg_for(tmp_path, steps=3), corpus=corpus, progress=False)
    assert cfg.read_text() == before and json.loads(before)['steps'] == 6
    train(cfg_for(tmp_path, steps=8), corpus=corpus, progress=False)  # raising it extends the run
    assert [r['step'] for r in read_metrics(tmp_path / 'run')] == list(range(1, 9))
