"Query-time methods beyond LinCIR: each against a naive reference, where mu_txt comes from, and the evaluation identity."
import json, math, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lincir.backbone import encode_text, load_backbone
from lincir.captions import load_captions
from lincir.evaluation import EvalConfig, claim_out_dir, gap_statistics
from lincir.files import FolderOwnedError
from lincir.phi import Phi, import_phi, load_phi, save_phi
from lincir.retrieval import (GapStatistics, Query, centre_cosine, gap_centre, parse_method, predict, project_to_text,
                              query_features, slerp)

from tests.helpers import random_images, run_notebook

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def bb():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.manual_seed(0)
        return load_backbone('lincir-tiny', None)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def naive_unit(x):
    n = math.sqrt(sum(v * v for v in x))
    return [v / n for v in x]


def naive_projection(v, memory, tau):
    "Row by row in float64: weights exp(cos / tau) normalised, times the raw memory."
    out = []
    for row in v.double().tolist():
        r = naive_unit(row)
        cos = [sum(a * b for a, b in zip(r, naive_unit(m))) for m in memory.double().tolist()]
        top = max(cos)
        w = [math.exp((c - top) / tau) for c in cos]
        s = sum(w)
        out.append([sum(wi * m[j] for wi, m in zip(w, memory.double().tolist())) / s for j in range(memory.shape[1])])
    return torch.tensor(out, dtype=torch.float32)


def naive_slerp(a, b, t):
    out = []
    for x, y in zip(a.double().tolist(), b.double().tolist()):
        x, y = np.array(naive_unit(x)), np.array(naive_unit(y))
        om = math.acos(float(np.clip(x @ y, -1, 1)))
        z = (math.sin((1 - t) * om) * x + math.sin(t * om) * y) / math.sin(om)
        out.append(z / np.linalg.norm(z))
    return torch.tensor(np.array(out), dtype=torch.float32)


def test_pure_functions_against_naive():
    torch.manual_seed(1)
    v, mem = torch.randn(5, 6), torch.randn(40, 6)
    for tau in (0.002, 0.05, 1.0):
        assert torch.allclose(project_to_text(v, mem, tau), naive_projection(v, mem, tau), atol=1e-4)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    for t in (0.0, 0.3, 0.8, 1.0):
        assert torch.allclose(slerp(a, b, t), naive_slerp(a, b, t), atol=1e-4)
    mi, mt = torch.randn(6), torch.randn(6)
    assert torch.allclose(gap_centre(v, mi, mt), torch.tensor([[x - i + t for x, i, t in zip(r, mi.tolist(), mt.tolist())]
                                                               for r in v.tolist()]), atol=1e-6)
    m = torch.randn(6)
    want = torch.stack([torch.tensor(naive_unit((torch.tensor(naive_unit(r)) - m).tolist())) for r in v.tolist()])
    assert torch.allclose(centre_cosine(v, m), want, atol=1e-5)


def random_stats(d, m=30):
    g = torch.Generator().manual_seed(2)
    r = lambda *s: torch.randn(*s, generator=g)
    return GapStatistics(r(d), r(d) * 0.1, r(d).abs() + 0.5, r(m, d), r(d), r(d) * 0.1, r(d).abs() + 0.5, 'random')


def test_query_features_each_method_against_naive(bb):
    "Each option composed by hand from the plain LinCIR and sum queries (whose own tests are in test_retrieval)."
    torch.manual_seed(3)
    phi = torch.nn.Linear(bb.embed_dim, bb.width)
    qs = [Query(str(i), f'r{i}', ['is red', 'has a star']) for i in range(4)]
    ref, st = torch.randn(4, bb.embed_dim), random_stats(bb.embed_dim)
    q = lambda m, x=ref, **kw: query_features(bb, m, qs, x, phi, stats=st, **kw)
    unit = lambda x: F.normalize(x, dim=-1)
    lin, plain_sum, text = q('lincir'), q('sum'), q('text')
    centred = ref - st.image_mean + st.text_mean
    assert torch.allclose(q('lincir+centre'), q('lincir', centred), atol=1e-6)
    spread = (ref - st.image_mean) / st.image_std * st.text_std + st.text_mean
    assert torch.allclose(q('lincir+centre+spread'), q('lincir', spread), atol=1e-6)
    assert torch.allclose(q('lincir+project=0.01'), q('lincir', naive_projection(ref, st.memory, 0.01)), atol=1e-4)
    assert torch.allclose(q('lincir+centre+project=0.01'), q('lincir', naive_projection(centred, st.memory, 0.01)), atol=1e-4)
    assert torch.allclose(q('lincir+centred_cosine'), unit(unit(lin) - st.text_normalised_mean), atol=1e-6)
    assert torch.allclose(q('lincir+ensemble=0.7'), unit(0.7 * lin + 0.3 * plain_sum), atol=1e-6)
    both = unit(0.6 * unit(unit(q('lincir', centred)) - st.text_normalised_mean)
                + 0.4 * unit(unit(plain_sum) - (st.image_normalised_mean + st.text_normalised_mean) / 2))
    assert torch.allclose(q('lincir+centre+ensemble=0.6+centred_cosine'), both, atol=1e-6)
    assert torch.allclose(q('slerp=0.3'), naive_slerp(ref, text, 0.3), atol=1e-4)
    assert torch.allclose(q('image+centred_cosine'), unit(unit(ref) - st.image_normalised_mean), atol=1e-6)
    # l2_normalize: Phi reads the normalised centred embedding
    assert torch.allclose(q('lincir+centre', l2_normalize=True), q('lincir', unit(centred), l2_normalize=True), atol=1e-6)
    with pytest.raises(ValueError, match='needs text_mean'):
        query_features(bb, 'lincir+centre', qs, ref, phi)


@pytest.fixture
def gallery(tmp_path, cache): return random_images(tmp_path, 9, 24, 'g')


def test_predict_uses_the_images_searched_and_centres_the_gallery(bb, gallery):
    "mu_img and mu_img_n come from the images predict encodes; centred_cosine ranks by the centred cosine of both sides."
    torch.manual_seed(4)
    phi = torch.nn.Linear(bb.embed_dim, bb.width)
    qs = [Query('a', 'g0', ['is red'], exclude=['g0']), Query('b', 'g3', ['is blue'], exclude=['g3'])]
    gal = {'all': list(gallery)}
    st = random_stats(bb.embed_dim)
    st.image_mean = st.image_normalised_mean = st.image_std = None  # predict fills them
    p = predict(bb, qs, gallery, gal, 'lincir+centre+centred_cosine', phi, top_k=None, progress=False, stats=st)
    from lincir.retrieval import image_features
    ids, feats, _ = image_features(bb, gallery, progress=False)
    feats = feats.double()
    mu_img = feats.mean(0)
    mu_img_n = torch.stack([f / f.norm() for f in feats]).mean(0)
    for q in qs:
        x = feats[ids.index(q.reference)] - mu_img + st.text_mean.double()
        qv = query_features(bb, 'lincir', [q], x[None].float(), phi)[0].double()
        qv = qv - st.text_normalised_mean.double(); qv = qv / qv.norm()
        scores = {}
        for i, f in zip(ids, feats):
            g = f / f.norm() - mu_img_n
            scores[i] = float(qv @ (g / g.norm()))
        want = sorted((i for i in ids if i != q.reference), key=lambda i: -scores[i])
        assert p.rankings[q.id] == want


def test_text_mean_recorded_or_estimated(bb, cache, capsys):
    "A Phi with a record uses it; one without (or text_mean=corpus) uses the corpus estimate, and says so."
    caps = list(load_captions('shapes:64')['caption'])
    with torch.no_grad(): emb = encode_text(bb, bb.tokenize(caps)).float()
    phi = torch.nn.Linear(bb.embed_dim, bb.width)
    est = gap_statistics(bb, phi, 'lincir+centre+centred_cosine+corpus=shapes:64')
    assert torch.allclose(est.text_mean, emb.mean(0), atol=1e-5) and torch.allclose(est.text_std, emb.std(0), atol=1e-5)
    assert torch.allclose(est.text_normalised_mean, F.normalize(emb, dim=-1).mean(0), atol=1e-5)
    assert 'estimated from 64 captions of shapes:64 (the Phi has no record' in est.text_source
    assert 'estimated from 64 captions' in capsys.readouterr().out  # said where it runs
    rec = dict(mean=[0.25] * bb.embed_dim, normalised_mean=[0.01] * bb.embed_dim, captions=5, source='5 of the training captions')
    phi.text_statistics = rec
    got = gap_statistics(bb, phi, 'lincir+centre+corpus=shapes:64')
    assert torch.equal(got.text_mean, torch.full((bb.embed_dim,), 0.25)) and got.memory is None
    assert got.text_source == 'recorded with the Phi: 5 of the training captions'
    assert torch.allclose(gap_statistics(bb, phi, 'lincir+centre+spread+corpus=shapes:64').text_std, emb.std(0), atol=1e-5)  # no std recorded
    forced = gap_statistics(bb, phi, 'lincir+centre+corpus=shapes:64+text_mean=corpus')
    assert torch.allclose(forced.text_mean, emb.mean(0), atol=1e-5) and 'text_mean=corpus' in forced.text_source
    assert torch.allclose(gap_statistics(bb, phi, 'lincir+project=0.1+corpus=shapes:64').memory, emb, atol=1e-5)
    phi.text_statistics = dict(rec, mean=[0.0] * 3)
    with pytest.raises(ValueError, match='dimensions'): gap_statistics(bb, phi, 'lincir+centre+corpus=shapes:64')


def test_training_records_the_corpus_text_mean(bb, tmp_path):
    "A trained Phi carries the mean text embedding of its corpus, equal to the captions' mean encoded independently."
    from lincir.train_config import TrainConfig
    from lincir.training import train
    cfg = TrainConfig(backbone='lincir-tiny', pretrained=None, captions=['shapes:64'], steps=2, batch_size=16,
                      val_benchmark=None, out_dir=str(tmp_path / 'run'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        run = train(cfg, progress=False)
    loaded = load_phi(run)
    rec = loaded.text_statistics
    from lincir.captions import masked_corpus
    with torch.no_grad():
        torch.manual_seed(cfg.seed); tiny = load_backbone('lincir-tiny', None)  # as train makes it
        ds = masked_corpus(['shapes:64'], tiny, seed=cfg.seed)  # the tokens training read, each caption encoded alone
        emb = torch.cat([encode_text(tiny, torch.tensor([t], dtype=torch.long)).float() for t in ds['tokens']])
    assert rec['captions'] == 64 and 'shapes:64' in rec['source']
    assert torch.allclose(torch.tensor(rec['mean']), emb.mean(0), atol=1e-4)
    assert json.loads((run / 'checkpoint' / 'phi.json').read_text())['text_statistics'] == rec  # every saved Phi


def test_imported_phi_has_no_record(tmp_path):
    "An imported release (here LinCIR's format for ViT-B/32) records nothing: evaluation must estimate mu_txt."
    torch.manual_seed(0)
    torch.save({'Phi': {f'layers.{k}': v for k, v in Phi(512, 512).state_dict().items()}}, tmp_path / 'a.pt')
    w = import_phi(tmp_path / 'a.pt', 'ViT-B-32', 'openai', tmp_path / 'imported')
    assert 'text_statistics' not in json.loads(w.with_suffix('.json').read_text())
    assert load_phi(w).text_statistics is None


def test_identity_follows_every_option(tmp_path):
    "Two evaluations that differ in any option never share a folder; spellings of the same method do."
    base = dict(out_dir=str(tmp_path / 'e'))
    claim_out_dir(EvalConfig(method='lincir+project+centre', **base))
    claim_out_dir(EvalConfig(method='lincir+centre+project=0.002', **base))  # the same method, canonical name
    for other in ('lincir+centre+project=0.005', 'lincir+centre', 'lincir+centre+spread+project', 'lincir+centre+project+corpus=caps.txt',
                  'lincir+centre+project+text_mean=corpus', 'lincir+centre+project+centred_cosine'):
        with pytest.raises(FolderOwnedError):
            claim_out_dir(EvalConfig(method=other, **base))
    names = {EvalConfig(method=m).method for m in ('lincir+ensemble', 'lincir+ensemble=0.5', 'slerp', 'slerp=0.5')}
    assert names == {'lincir+ensemble=0.7', 'lincir+ensemble=0.5', 'slerp=0.8', 'slerp=0.5'}
    with pytest.raises(ValueError, match="unknown option 'tau'"): EvalConfig(method='lincir+tau=1').validate()
    with pytest.raises(ValueError, match='applies to lincir'): parse_method('sum+project')


def test_evaluate_notebook_reaches_the_methods(bb, cache, tmp_path, monkeypatch):
    "The command a user types: nbs/evaluate.ipynb's `method` parameter, with a Phi without a record (an import)."
    import matplotlib; matplotlib.use('Agg')
    from lincir.shapescir import write_cirr_fixture
    monkeypatch.chdir(tmp_path)
    cirr = write_cirr_fixture(tmp_path / 'cirr', n_queries=3, splits=('val',))
    torch.manual_seed(0)
    save_phi(Phi.for_backbone(bb), tmp_path / 'phi', bb, imported_from={'file': 'a.pt'})
    (tmp_path / 'caps').mkdir()
    (tmp_path / 'caps' / 'c.txt').write_text('\n'.join(load_captions('shapes:64')['caption']))  # a caption file, by its path
    gap = f"lincir+centre+project=0.01+centred_cosine+corpus={tmp_path / 'caps' / 'c.txt'}"
    methods = f'lincir,{gap},slerp=0.5'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        run_notebook(REPO / 'nbs' / 'evaluate.ipynb', dict(benchmark='cirr', data_dir=str(cirr), backbone='lincir-tiny',
                                                            pretrained=None, phi=str(tmp_path / 'phi'), method=methods,
                                                            out_dir=str(tmp_path / 'eval')))
    m = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())['methods']
    assert list(m) == methods.split(',')
    assert f"estimated from 64 captions of {tmp_path / 'caps' / 'c.txt'} (the Phi has no record" in m[gap]['text_statistics']
    assert 'text_statistics' not in m['lincir'] and m[gap]['queries'] == 3
    named = 'rankings_' + gap.replace('/', '_') + '.json'  # the path's '/' cannot make a folder
    assert (tmp_path / 'eval' / named).exists() and not (tmp_path / 'eval' / 'rankings_lincir+centre+project=0.01+centred_cosine+corpus=').exists()

