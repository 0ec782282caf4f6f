"""Two `index` processes on one folder at once encode each image once (issue 20, case 5), and an index that already
holds an image twice is cleaned by the next `index`."""
import json, os, re, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from lincir.search import main

REPO = Path(__file__).resolve().parent.parent


def photos(folder, n):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n): Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f'{i:02d}.png')
    return folder


def shard_keys(cache):
    return [k for m in sorted(Path(cache, 'store').glob('*/shard-*.json')) for k in json.loads(m.read_text())['keys']]


# Each process meets the other right after listing the folder (so both see an empty index), and encodes slowly.
INDEXER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    import lincir.search as S, lincir.store as T
    folder, meet, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    find = S.find_images
    def find_then_meet(*a, **k):
        out = find(*a, **k)
        (meet/me).touch()
        while len(list(meet.iterdir())) < 2: time.sleep(0.01)
        return out
    S.find_images = find_then_meet
    encode = T.encode_images
    def slow(*a, **k): time.sleep(0.2); return encode(*a, **k)
    T.encode_images = slow
    S.main(['index', folder, '--batch-size', '2'])
''')


def test_two_index_processes_encode_each_image_once(tmp_path):
    folder, meet = photos(tmp_path / 'photos', 8), tmp_path / 'meet'
    meet.mkdir()
    (tmp_path / 'indexer.py').write_text(INDEXER)
    env = {**os.environ, 'LINCIR_CACHE': str(tmp_path / 'cache'), 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(tmp_path / 'indexer.py'), str(folder), str(meet), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-3000:] for _, e in outs]
    encoded = [int(re.search(r'(\d+) encoded', o).group(1)) for o, _ in outs]
    assert sorted(encoded) == [0, 8], outs
    keys = shard_keys(tmp_path / 'cache')
    assert len(keys) == len(set(keys)) == 8


def test_index_removes_rows_held_twice(tmp_path, monkeypatch, capsys):
    "An index holding every image twice (as two concurrent indexers left it before) is cleaned by the next `index`."
    from lincir.backbone import load_backbone
    from lincir.store import open_store
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path / 'cache'))
    folder = photos(tmp_path / 'photos', 5)
    main(['index', str(folder)])
    store = open_store(load_backbone('shapes-clip', 'sandbox'))
    keys = list(store.rows)
    store.add(keys, store.vectors(keys), tag='twice')
    assert len(shard_keys(tmp_path / 'cache')) == 10
    main(['index', str(folder)])
    assert '0 encoded' in capsys.readouterr().out
    assert sorted(shard_keys(tmp_path / 'cache')) == sorted(keys)
