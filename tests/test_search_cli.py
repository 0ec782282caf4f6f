"`python -m lincir.search` on a folder as people have them, and encoding with two processes."
import json, os, random, struct, subprocess, sys, textwrap, zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lincir.search import main
from lincir.shapes import random_scene, render

REPO = Path(__file__).resolve().parent.parent


def huge_png(path, side=14000):
    "A valid grey PNG of side x side pixels, written without ever holding the image (it is all black)."
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    z, row, idat = zlib.compressobj(9), b'\0' * (side + 1), []
    for _ in range(side): idat.append(z.compress(row))
    idat.append(z.flush())
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 8, 0, 0, 0, 0))
                     + chunk(b'IDAT', b''.join(idat)) + chunk(b'IEND', b''))


@pytest.fixture
def folder(tmp_path, monkeypatch):
    "Sandbox pictures in nested folders, a unicode name, a symlink loop, a broken file, 16-bit and oversized PNGs."
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path/'cache'))
    root, rng = tmp_path/'photos', random.Random(0)
    (root/'2024'/'summer').mkdir(parents=True)
    for n in range(6): render(random_scene(rng, 1)).save(root/('2024/summer' if n >= 4 else '')/f'{n}.png')
    render(random_scene(rng, 1)).save(root/'été à Zürich 日本.png')
    (root/'2024'/'loop').symlink_to(root, target_is_directory=True)
    (root/'broken.jpg').write_bytes(b'\xff\xd8 not a jpeg')
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)).save(root/'deep.png')
    huge_png(root/'huge.png')
    return root


def run_cli(capsys, *argv):
    main(list(map(str, argv))); return capsys.readouterr().out


def test_index_then_query(folder, tmp_path, capsys):
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    res = subprocess.run([sys.executable, '-m', 'lincir.search', 'index', str(folder)], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert '10 images; 10 new, 0 changed, 0 removed, 2 unreadable; 8 encoded' in res.stdout, res.stdout
    assert 'unreadable broken.jpg: Cannot read image' in res.stdout
    assert 'unreadable huge.png:' in res.stdout and 'pixel' in res.stdout.split('unreadable huge.png:')[1].splitlines()[0]
    # one new, one changed, one removed: only two images encoded
    render(random_scene(random.Random(5), 1)).save(folder/'2024'/'new.png')
    render(random_scene(random.Random(6), 1)).save(folder/'0.png')
    (folder/'1.png').unlink()
    out = run_cli(capsys, 'index', folder)
    assert '10 images; 1 new, 1 changed, 1 removed, 2 unreadable; 2 encoded' in out, out
    out = run_cli(capsys, 'query', folder, '--reference', folder/'2.png', '--caption', 'is red', '-k', '4', '--json',
                  '--grid', tmp_path/'grid.png')
    r = json.loads(out)
    assert r['method'] == 'sum' and r['reference'] == '2.png' and len(r['hits']) == 4
    assert '2.png' not in [h['id'] for h in r['hits']] and all(Path(h['path']).is_file() for h in r['hits'])
    assert Image.open(tmp_path/'grid.png').size == (6 * 160, 176)
    text = run_cli(capsys, 'query', folder, '--reference', 'été à Zürich 日本.png', '--method', 'image', '-k', '2')
    assert len(text.strip().splitlines()) == 2
    with pytest.raises(SystemExit, match='needs a trained Phi'):
        main(['query', str(folder), '--reference', '2.png', '--caption', 'x', '--method', 'lincir', '--phi', str(tmp_path/'none')])


def test_two_processes_share_the_work(tiny, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    (tmp_path/'img').mkdir()
    for i in range(11): Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path/'img'/f'{i}.png')
    script = tmp_path/'enc.py'
    script.write_text(textwrap.dedent(f'''
        import json, warnings, torch
        import torch.distributed as dist
        from pathlib import Path
        from lincir.backbone import load_backbone
        from lincir.store import open_store
        dist.init_process_group('gloo')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore'); torch.manual_seed(0); bb = load_backbone('lincir-tiny')
        images = {{p.name: p for p in sorted(Path({str(tmp_path/'img')!r}).glob('*.png'))}}
        st = open_store(bb)
        done = st.encode(bb, images, batch_size=2, shard_size=2, progress=False)
        Path({str(tmp_path)!r}, f'rank{{dist.get_rank()}}.json').write_text(json.dumps(dict(done=done, n=len(st))))
        dist.destroy_process_group()
    '''))
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'LINCIR_CACHE': str(tmp_path/'cache'), 'PYTHONPATH': str(REPO)}
    res = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29541',
                          str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    r = [json.loads((tmp_path/f'rank{i}.json').read_text()) for i in range(2)]
    assert [x['done']['encoded'] for x in r] == [6, 5] and [x['n'] for x in r] == [11, 11]  # each its share; both see all
    from lincir.images import image_key
    from lincir.store import open_store
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path/'cache'))
    st = open_store(tiny)
    assert {s.name.rsplit('-', 1)[1] for s in st.shards} == {'r0', 'r1'}
    images = {p.name: p for p in sorted((tmp_path/'img').glob('*.png'))}
    keys = [image_key(p) for p in images.values()]
    assert sum(len(s.keys) for s in st.shards) == 11  # no image encoded twice
    monkeypatch.setenv('LINCIR_CACHE', str(tmp_path/'cache1'))
    one = open_store(tiny); one.encode(tiny, images, progress=False)
    np.testing.assert_allclose(st.vectors(keys), one.vectors(keys), atol=2e-3, rtol=0)
