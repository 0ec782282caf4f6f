"The feature store under real conditions: a growing folder, an encoding killed mid-way, two processes."
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest, torch
from PIL import Image

from lincir.images import image_key
from lincir.ranking import topk
from lincir.retrieval import image_features
from lincir.store import StoreView, open_store, store_path

REPO = Path(__file__).resolve().parent.parent


def photos(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n): Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder/f'{i:03d}.png')
    return {p.name: p for p in sorted(folder.glob('*.png'))}


def shard_keys(path):
    return [k for m in sorted(Path(path).glob('shard-*.json')) for k in json.loads(m.read_text())['keys']]


def test_adding_one_image_encodes_one(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path/'cache'))
    images = photos(tmp_path/'photos', 12)
    st = open_store(tiny)
    assert st.encode(tiny, images, batch_size=4, progress=False) == {'encoded': 12, 'unreadable': 0}
    Image.new('RGB', (30, 30), 'red').save(tmp_path/'photos'/'new.png')
    images = {p.name: p for p in sorted((tmp_path/'photos').glob('*.png'))}
    assert open_store(tiny).encode(tiny, images, progress=False) == {'encoded': 1, 'unreadable': 0}
    ids, feats, bad = image_features(tiny, images, progress=False)  # the benchmarks' entry point reads the same store
    assert (len(ids), bad) == (13, []) and len(shard_keys(st.path)) == 13


def test_features_of_another_transform_are_never_reused(tiny, tmp_path, monkeypatch):
    "SEARLE's targetpad encodes into a store of its own: the CLIP transform's features of the same files are not read."
    from lincir.backbone import with_preprocess
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path/'cache'))
    (tmp_path/'photos').mkdir()
    Image.fromarray(np.random.default_rng(0).integers(1, 255, (20, 64, 3), dtype=np.uint8)).save(tmp_path/'photos'/'wide.png')
    images = {'wide': tmp_path/'photos'/'wide.png'}
    tp = with_preprocess(tiny, 'targetpad')
    _, clip, _ = image_features(tiny, images, progress=False)
    assert store_path(tp) != store_path(tiny) and store_path(tp).name.split('__')[2] == 'targetpad'
    assert open_store(tp).encode(tp, images, progress=False) == {'encoded': 1, 'unreadable': 0}  # not found in the CLIP store
    _, padded, _ = image_features(tp, images, progress=False)
    assert not torch.allclose(clip, padded)  # a wide image: padded, not centre-cropped
    assert torch.equal(image_features(tiny, images, progress=False)[1], clip)  # the CLIP store is untouched
    assert open_store(tp).encode(tp, images, progress=False) == {'encoded': 0, 'unreadable': 0}


WORKER = textwrap.dedent('''
    import sys, time, warnings, torch
    import lincir.store as S
    from lincir.backbone import load_backbone
    from pathlib import Path
    slow = S.encode_images
    def encode_images(*a, **k): time.sleep(0.25); return slow(*a, **k)
    S.encode_images = encode_images  # slow enough to be killed in the middle
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); torch.manual_seed(0); bb = load_backbone('lincir-tiny')
    images = {p.name: p for p in sorted(Path(sys.argv[1]).glob('*.png'))}
    S.open_store(bb).encode(bb, images, batch_size=2, shard_size=2, num_workers=1, progress=False)
''')


def test_killed_encoding_resumes(tiny, tmp_path, monkeypatch):
    images = photos(tmp_path/'photos', 30)
    env = {**os.environ, 'LINCIR_CACHE': str(tmp_path/'cache'), 'PYTHONPATH': str(REPO)}
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path/'cache'))
    path = store_path(tiny)
    proc = subprocess.Popen([sys.executable, '-c', WORKER, str(tmp_path/'photos')], env=env)
    try:
        deadline = time.time() + 300
        while len(list(path.glob('shard-*.json'))) < 3 and proc.poll() is None and time.time() < deadline: time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally: proc.wait()
    first = shard_keys(path)
    assert 6 <= len(first) < 30, f"killed after {len(first)} of 30 images: the test needs a partial encoding"
    st = open_store(tiny)
    done = st.encode(tiny, images, batch_size=4, progress=False)
    keys = shard_keys(path)
    assert done['encoded'] == 30 - len(first)  # only what the killed run had not committed
    assert len(keys) == len(set(keys)) == 30  # no image encoded twice
    # the same store built without interruption
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path/'cache2'))
    ref = open_store(tiny); ref.encode(tiny, images, batch_size=4, progress=False)
    order = [image_key(p) for p in images.values()]
    np.testing.assert_allclose(st.vectors(order), ref.vectors(order), atol=2e-3, rtol=0)
    q = torch.randn(5, tiny.embed_dim)
    assert topk(q, StoreView(st, order), 10)[1].tolist() == topk(q, StoreView(ref, order), 10)[1].tolist()


def test_damaged_shard_is_rebuilt(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path/'cache'))
    images = photos(tmp_path/'photos', 6)
    st = open_store(tiny); st.encode(tiny, images, batch_size=2, shard_size=2, progress=False)
    victim = sorted(st.path.glob('shard-*.json'))[1]
    victim.write_text(victim.read_text()[:20])
    with pytest.warns(UserWarning, match=victim.name):
        again = open_store(tiny)
    assert again.encode(tiny, images, progress=False) == {'encoded': 2, 'unreadable': 0}
    assert len(set(shard_keys(st.path))) == 6
