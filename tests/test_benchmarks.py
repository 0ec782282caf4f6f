"""Every benchmark end to end on Shapes fixtures in the official layouts (random tiny CLIP, random Phi): the rankings
match a naive cosine ranking, the metrics match naive re-computations, submissions have the servers' format."""
import json, shutil, warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lincir.backbone import load_backbone
from lincir.benchmarks import LayoutError, load_benchmark
from lincir.evaluation import EvalConfig, evaluate, write_outputs
from lincir.phi import Phi
from lincir.images import image_key
from lincir.retrieval import image_features, query_features
from lincir.shapescir import write_cirr_fixture, write_fashioniq_fixture, write_genecis_fixture, write_shapescir


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp('bench')
    mp = pytest.MonkeyPatch(); mp.setenv('LINCIR_CACHE', str(root / 'cache'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        bb = load_backbone('lincir-tiny', None)
    torch.manual_seed(0)
    phi = Phi.for_backbone(bb).eval()
    roots = dict(cirr=write_cirr_fixture(root / 'cirr', n_queries=5), fashioniq=write_fashioniq_fixture(root / 'fiq', n_queries=3),
                 genecis=write_genecis_fixture(root / 'genecis', n_queries=2),
                 shapes=write_shapescir(root / 'shapes', n_val=12, n_test=12, progress=False))
    circo = root / 'circo'  # CIRCO itself: the ShapesCIR layout, with a test split stripped of its answers as CIRCO's is
    shutil.copytree(roots['shapes'], circo)
    keep = ('id', 'reference_img_id', 'relative_caption', 'shared_concept')
    test = json.loads((circo / 'annotations' / 'test.json').read_text())
    (circo / 'annotations' / 'test.json').write_text(json.dumps([{k: q[k] for k in keep} for q in test]))
    roots['circo'] = circo
    yield bb, phi, roots
    mp.undo()


def naive_rankings(bench, bb, phi, method):
    "Cosine ranking of each query's whole gallery, written out with numpy; exclusions applied afterwards."
    ids, feats, _ = image_features(bb, bench.images, progress=False)
    pos = {i: n for n, i in enumerate(ids)}
    qf = query_features(bb, method, bench.queries, feats[[pos[q.reference] for q in bench.queries]], phi).numpy()
    g = F.normalize(feats, dim=-1).numpy()
    out, sub = {}, {}
    for q, f in zip(bench.queries, qf):
        gal = bench.galleries[q.gallery]
        s = g[[pos[i] for i in gal]] @ f
        order = [gal[j] for j in np.argsort(-s, kind='stable') if gal[j] not in q.exclude]
        out[q.id] = order[:50]
        if q.subset is not None: sub[q.id] = [i for i in order if i in q.subset]
    return out, sub


def recall(rankings, targets, k): return 100 * np.mean([t in r[:k] for r, t in zip(rankings, targets)])


@pytest.mark.parametrize('method', ['lincir', 'image', 'text', 'sum'])
def test_cirr_val(env, method):
    bb, phi, roots = env
    b = load_benchmark('cirr', roots['cirr'], 'val')
    m, p = evaluate(b, bb, method, phi, progress=False)
    want, want_sub = naive_rankings(b, bb, phi, method)
    assert p.rankings == want and p.subset_rankings == want_sub
    for q in b.queries:
        assert q.reference not in p.rankings[q.id] and len(p.rankings[q.id]) == len(b.images) - 1
        assert sorted(p.subset_rankings[q.id]) == sorted(set(q.subset) - {q.reference})
    r, t = [p.rankings[q.id] for q in b.queries], [q.targets[0] for q in b.queries]
    s = [p.subset_rankings[q.id] for q in b.queries]
    for k in (1, 5, 10, 50): assert m[f'R@{k}'] == pytest.approx(recall(r, t, k))
    for k in (1, 2, 3): assert m[f'Rs@{k}'] == pytest.approx(recall(s, t, k))
    assert m['queries'] == 5 and m['skipped_images'] == 0


def test_cirr_test1_submission(env, tmp_path):
    bb, phi, roots = env
    b = load_benchmark('cirr', roots['cirr'], 'test1')
    m, p = evaluate(b, bb, 'lincir', phi, progress=False)
    assert b.metric is None and set(m) == {'queries', 'skipped_images', 'skipped_queries'}
    write_outputs(tmp_path, b, EvalConfig(benchmark='cirr', data_dir=str(roots['cirr']), split='test1'), {'lincir': (m, p)})
    rec = json.loads((tmp_path / 'cirr_test1_recall.json').read_text())
    sub = json.loads((tmp_path / 'cirr_test1_recall_subset.json').read_text())
    assert (rec.pop('version'), rec.pop('metric'), sub.pop('version'), sub.pop('metric')) == ('rc2', 'recall', 'rc2', 'recall_subset')
    raw = json.loads((roots['cirr'] / 'cirr' / 'captions' / 'cap.rc2.test1.json').read_text())
    assert set(rec) == set(sub) == {str(r['pairid']) for r in raw}
    for r in raw:
        top, top3 = rec[str(r['pairid'])], sub[str(r['pairid'])]
        assert len(top) == min(50, len(b.images) - 1) == len(set(top)) and r['reference'] not in top
        assert len(top3) == 3 and set(top3) <= set(r['img_set']['members']) - {r['reference']}
        assert top3 == [i for i in top if i in top3]  # the subset ranking is the full ranking restricted


def test_circo_val_and_test(env, tmp_path):
    bb, phi, roots = env
    b = load_benchmark('circo', roots['circo'], 'val')
    m, p = evaluate(b, bb, 'lincir', phi, progress=False)
    assert p.rankings == naive_rankings(b, bb, phi, 'lincir')[0]
    raw = json.loads((roots['circo'] / 'annotations' / 'val.json').read_text())
    preds = [[int(i) for i in p.rankings[str(r['id'])]] for r in raw]
    for k in (5, 10, 25, 50):  # the official CIRCO arithmetic, on the raw annotations
        aps = []
        for pr, r in zip(preds, raw):
            lab = np.isin(pr, r['gt_img_ids'])
            aps.append(np.sum((np.cumsum(lab) * lab / np.arange(1, len(lab) + 1))[:k]) / min(len(r['gt_img_ids']), k))
        assert m[f'mAP@{k}'] == pytest.approx(100 * np.mean(aps))
        assert m[f'R@{k}'] == pytest.approx(100 * np.mean([r['target_img_id'] in pr[:k] for pr, r in zip(preds, raw)]))
    assert any(k.startswith('aspect/') for k in m)
    t = load_benchmark('circo', roots['circo'], 'test')
    mt, pt = evaluate(t, bb, 'lincir', phi, progress=False)
    write_outputs(tmp_path, t, EvalConfig(benchmark='circo', data_dir='x', split='test'), {'lincir': (mt, pt)})
    sub = json.loads((tmp_path / 'circo_test.json').read_text())
    assert set(sub) == {str(q.id) for q in t.queries}
    assert all(len(v) == 50 == len(set(v)) and all(isinstance(i, int) for i in v) for v in sub.values())


def test_shapescir_types_instruction_and_upper_bound(env):
    bb, phi, roots = env
    for split in ('val', 'val_instruction'):
        b = load_benchmark('shapes', roots['shapes'], split)
        res = {meth: evaluate(b, bb, meth, phi, progress=False)[0] for meth in ('image', 'upper', 'lincir')}
        types = {q.group for q in b.queries}
        assert len(types) == 6 and all(f'{t}/mAP@10' in res['lincir'] for t in types)
        for t in types:  # the per-type value is the metric over that type's queries only
            sel = [q for q in b.queries if q.group == t]
            sub = evaluate(b.__class__(**{**b.__dict__, 'queries': sel}), bb, 'lincir', phi, progress=False)[0]
            assert res['lincir'][f'{t}/mAP@10'] == pytest.approx(sub['mAP@10'])
    with pytest.raises(LayoutError, match='splits here: test, test_instruction, val, val_instruction'):
        load_benchmark('shapes', roots['shapes'], 'train')


def test_fashioniq(env):
    bb, phi, roots = env
    b = load_benchmark('fashioniq', roots['fashioniq'])
    m, p = evaluate(b, bb, 'lincir', phi, progress=False)
    assert p.rankings == naive_rankings(b, bb, phi, 'lincir')[0]
    for q in b.queries:
        assert set(p.rankings[q.id]) == set(b.galleries[q.group])  # only its category's gallery
        c1, c2 = q.captions[0].split(' and ')
        assert q.captions == [f'{c1} and {c2}', f'{c2} and {c1}']
    per = {}
    for cat in ('dress', 'shirt', 'toptee'):
        qs = [q for q in b.queries if q.group == cat]
        for k in (10, 50):
            per[cat, k] = recall([p.rankings[q.id] for q in qs], [q.targets[0] for q in qs], k)
            assert m[f'{cat}/R@{k}'] == pytest.approx(per[cat, k])
    for k in (10, 50): assert m[f'avg/R@{k}'] == pytest.approx(np.mean([per[c, k] for c in ('dress', 'shirt', 'toptee')]))


def test_genecis(env):
    bb, phi, roots = env
    b = load_benchmark('genecis', roots['genecis'])
    m, p = evaluate(b, bb, 'lincir', phi, progress=False)
    assert p.rankings == naive_rankings(b, bb, phi, 'lincir')[0]
    for task in ('focus_attribute', 'change_attribute', 'focus_object', 'change_object'):
        raw = json.loads((roots['genecis'] / 'genecis' / f'{task}.json').read_text())
        qs = [q for q in b.queries if q.group == task]
        assert len(qs) == len(raw)
        for q, r in zip(qs, raw):
            assert len(p.rankings[q.id]) == len(r['gallery']) + 1 and q.targets[0] in p.rankings[q.id]
            assert q.captions == [r['condition']]
        for k in (1, 2, 3):
            assert m[f'{task}/R@{k}'] == pytest.approx(recall([p.rankings[q.id] for q in qs], [q.targets[0] for q in qs], k))
    assert m['avg/R@1'] == pytest.approx(np.mean([m[f'{t}/R@1'] for t in ('focus_attribute', 'change_attribute', 'focus_object', 'change_object')]))
    crop = b.images[b.queries[0].reference]
    assert crop.load().size[0] == crop.load().size[1]  # attribute images are square crops
    one = load_benchmark('genecis', roots['genecis'], 'focus_object')
    assert {q.group for q in one.queries} == {'focus_object'}


def test_bad_input(env, tmp_path):
    bb, phi, roots = env
    with pytest.raises(LayoutError, match='cap.rc2'): load_benchmark('cirr', tmp_path / 'nowhere')
    with pytest.raises(LayoutError, match=r'captions/cap\.dress\.val\.json'): load_benchmark('fashioniq', tmp_path)
    with pytest.raises(LayoutError, match=r'genecis/focus_attribute\.json'): load_benchmark('genecis', tmp_path)
    with pytest.raises(LayoutError, match='image_info_unlabeled2017'):
        (tmp_path / 'annotations').mkdir(); (tmp_path / 'annotations' / 'val.json').write_text('[]')
        load_benchmark('circo', tmp_path)
    # a record with a missing field is named
    bad = shutil.copytree(roots['fashioniq'], tmp_path / 'fiq')
    caps = json.loads((bad / 'captions' / 'cap.shirt.val.json').read_text()); del caps[1]['target']
    (bad / 'captions' / 'cap.shirt.val.json').write_text(json.dumps(caps))
    with pytest.raises(ValueError, match=r"cap\.shirt\.val\.json record 1: record has no field 'target'"):
        load_benchmark('fashioniq', bad)
    # a corrupt image is named, or skipped and counted
    cirr = shutil.copytree(roots['cirr'], tmp_path / 'cirr')
    b = load_benchmark('cirr', cirr)
    victim = b.queries[0].subset[-1] if b.queries[0].subset[-1] != b.queries[0].reference else b.queries[0].subset[0]
    b.images[victim].write_bytes(b'broken')
    with pytest.raises(ValueError, match=b.images[victim].name): evaluate(b, bb, 'image', progress=False)
    m, p = evaluate(b, bb, 'image', skip_bad=True, progress=False)
    assert (m['skipped_images'], m['queries']) == (1, 5) and victim not in p.rankings[b.queries[0].id]
    b.images[victim].unlink()
    with pytest.raises(LayoutError, match='not found'): evaluate(b, bb, 'image', progress=False)
    assert evaluate(b, bb, 'image', skip_bad=True, progress=False)[0]['skipped_images'] == 1
    # a missing reference skips its query (counted) instead of ranking without it
    ref = b.images[b.queries[1].reference]; ref.unlink()
    m, _ = evaluate(b, bb, 'image', skip_bad=True, progress=False)
    assert (m['skipped_queries'], m['queries']) == (1, 4)


@pytest.mark.parametrize('name', ['cirr', 'circo', 'fashioniq', 'genecis', 'shapes'])
def test_targetpad_reaches_every_benchmark(env, name, monkeypatch, tmp_path):
    "With preprocess='targetpad' every image a benchmark encodes goes through SEARLE's padding, into the targetpad store."
    import lincir.backbone as B
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path / 'cache'))  # an empty store
    from lincir.backbone import with_preprocess
    from lincir.store import open_store
    bb, phi, roots = env
    tp = with_preprocess(bb, 'targetpad')
    seen, pad = [], B.TargetPad.__call__
    monkeypatch.setattr(B.TargetPad, '__call__', lambda self, im: seen.append(im.size) or pad(self, im))
    b = load_benchmark(name, roots[name])
    m, p = evaluate(b, tp, 'lincir', phi, progress=False)
    assert p.rankings and len(seen) == len({image_key(s) for s in b.images.values()})  # each image, once
    assert len(open_store(tp)) == len(seen) and m['skipped_images'] == 0


def test_evaluate_notebook(env, tmp_path):
    "nbs/evaluate.ipynb as papermill runs it: a CIRR test split with every method, a saved Phi, all output files."
    import papermill as pm
    from pathlib import Path
    from lincir.phi import save_phi
    bb, phi, roots = env
    save_phi(phi, tmp_path / 'run', bb)
    out = tmp_path / 'eval'
    nb = Path(__file__).resolve().parents[1] / 'nbs' / 'evaluate.ipynb'
    pm.execute_notebook(str(nb), str(tmp_path / 'evaluate.ipynb'), kernel_name='python3', progress_bar=False, cwd=str(tmp_path),
                        parameters=dict(benchmark='cirr', data_dir=str(roots['cirr']), split='test1', backbone='lincir-tiny',
                                        pretrained=None, phi=str(tmp_path / 'run'), out_dir=str(out)))
    names = {p.name for p in out.iterdir()}
    assert {'config.json', 'metrics.json', 'rankings.json', 'rankings_sum.json', 'examples.png',
            'cirr_test1_recall.json', 'cirr_test1_recall_subset.json', 'cirr_test1_recall_image.json'} <= names
    metrics = json.loads((out / 'metrics.json').read_text())
    assert list(metrics['methods']) == ['image', 'text', 'sum', 'lincir'] and metrics['main_method'] == 'lincir'
    assert metrics['phi'] == str(tmp_path / 'run' / 'phi.safetensors')
    assert metrics['backbone_activation'] == {'text': 'GELU', 'image': 'GELU'}  # lincir-tiny has no QuickGELU tag
    assert metrics['preprocess'] == 'clip'
    assert json.loads((out / 'config.json').read_text())['split'] == 'test1'
