"The retrieval core: feature cache keys, bad images, query composition with a real Phi."
import dataclasses, warnings

import pytest
import torch
import torch.nn.functional as F

from lincir.backbone import load_backbone
from lincir.phi import resolve_phi
from lincir.phi import Phi, load_phi, save_phi

from tests.helpers import random_images
from lincir.retrieval import DEFAULT_TEMPLATE, Query, image_features, predict, query_features


def tiny():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return load_backbone('lincir-tiny', None)


@pytest.fixture(scope='module')
def bb(): return tiny()


@pytest.fixture
def images(tmp_path, monkeypatch):
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path / 'cache'))
    return random_images(tmp_path, 10, 30, 'i')


def test_cache_key_follows_weights_and_images(bb, images):
    from lincir.store import store_path
    other = tiny()  # same name and tag, other random weights
    assert store_path(other) != store_path(bb) and store_path(bb) == store_path(bb)
    a = image_features(bb, images, progress=False)[1]
    b = image_features(other, images, progress=False)[1]
    assert not torch.allclose(a, b)  # not served from the first model's cache


def test_bad_images_named_or_skipped(bb, images, tmp_path):
    (tmp_path / 'bad.jpg').write_bytes(b'\xff\xd8 truncated')
    imgs = {**images, 'bad': tmp_path / 'bad.jpg', 'gone': tmp_path / 'missing.png'}
    with pytest.raises(ValueError, match='bad.jpg'): image_features(bb, imgs, progress=False)
    ids, feats, bad = image_features(bb, imgs, skip_bad=True, progress=False)
    assert bad == ['bad', 'gone'] and len(ids) == feats.shape[0] == 10
    # the cache remembers what was skipped, and refuses to hide it from a strict call
    with pytest.raises(ValueError, match='unreadable'): image_features(bb, imgs, progress=False)
    assert image_features(bb, imgs, skip_bad=True, progress=False)[2] == ['bad', 'gone']


def test_lincir_with_a_saved_phi(bb, images, tmp_path):
    torch.manual_seed(0)
    phi = Phi.for_backbone(bb)
    save_phi(phi, tmp_path / 'run', bb)
    weights, l2 = resolve_phi(tmp_path / 'run')
    loaded = load_phi(weights, bb)
    qs = [Query(str(i), f'i{i}', [f'is number {i}'], exclude=[f'i{i}']) for i in range(4)]
    p = predict(bb, qs, images, {'all': list(images)}, 'lincir', loaded, top_k=3, progress=False)
    assert all(len(r) == 3 and q.reference not in r for q, r in zip(qs, p.rankings.values()))
    # a template ensemble is the normalised mean of the single templates
    ref = image_features(bb, {q.reference: images[q.reference] for q in qs}, progress=False)[1]
    t2 = 'a picture of $ which {caption}'
    one, two = (query_features(bb, 'lincir', qs, ref, loaded, [t]) for t in (DEFAULT_TEMPLATE, t2))
    both = query_features(bb, 'lincir', qs, ref, loaded, [DEFAULT_TEMPLATE, t2])
    assert torch.allclose(both, F.normalize(one + two, dim=-1), atol=1e-5)
    # l2_normalize changes what Phi reads
    assert not torch.allclose(query_features(bb, 'lincir', qs, ref, loaded, l2_normalize=True), one)


def test_phi_from_another_backbone_is_refused(bb, tmp_path):
    save_phi(Phi.for_backbone(bb), tmp_path / 'run', bb)
    other = dataclasses.replace(bb, pretrained='laion2b')
    with pytest.raises(ValueError, match='another backbone'): load_phi(resolve_phi(tmp_path / 'run')[0], other)


def test_methods_differ_and_sum_is_the_sum(bb, images):
    qs = [Query(str(i), f'i{i}', ['is red']) for i in range(3)]
    ref = image_features(bb, {q.reference: images[q.reference] for q in qs}, progress=False)[1]
    img, txt, s = (query_features(bb, m, qs, ref) for m in ('image', 'text', 'sum'))
    assert torch.allclose(s, F.normalize(img + txt, dim=-1), atol=1e-6)
    assert torch.allclose(txt[0], txt[1])  # same caption, no image
    with pytest.raises(ValueError, match='target captions'): query_features(bb, 'upper', qs, ref)
