"""`python -m lincir.search` on a folder as people have them, and encoding with two processes; its help, the sandbox
gallery, the picture of a query, and the modules each command loads (`sys.modules` at its end, in a new process)."""
import json, os, random, re, shlex, struct, subprocess, sys, textwrap, zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lincir.search import EXAMPLES, GRID_SIDE, main
from lincir.shapes import random_scene, render

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = os.environ.get('LINCIR_SCREENSHOTS')  # a folder: write the README's --grid picture there
README_PICTURE_BYTES = 200_000  # the most a README picture may weigh


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
    assert Image.open(tmp_path/'grid.png').width > 5 * GRID_SIDE  # the query, then 4 hits in one row
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


# ---- the command as typed: help, sandbox, picture, imports ----

RUN_AS_COMMAND = """import json, runpy, sys
out, sys.argv = sys.argv[1], ['python -m lincir.search', *sys.argv[2:]]
try: runpy.run_module('lincir.search', run_name='__main__', alter_sys=True)  # what `python -m lincir.search` does
finally:
    with open(out, 'w') as f: json.dump(sorted(m for m, v in sys.modules.items() if v is not None), f)  # None: blocked
"""


def command(tmp:Path, *argv, env=None, cwd=None) -> tuple[subprocess.CompletedProcess, set[str]]:
    "Run `python -m lincir.search ARGV` in a new process: the result, and the modules loaded when it ended (listed in `tmp`)."
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'HF_HUB_OFFLINE': '1', **(env or {})}
    mods = tmp/'modules.json'
    res = subprocess.run([sys.executable, '-c', RUN_AS_COMMAND, str(mods), *map(str, argv)], capture_output=True, text=True,
                         env=env, cwd=cwd, timeout=600)
    return res, set(json.loads(mods.read_text()))


def option_help(text:str) -> dict[str, str]:
    "Each option of an argparse help text (by its last flag) -> its help, joined."
    out, cur = {}, None
    for line in text.split('options:\n')[1].split('\n\n')[0].splitlines():
        m = re.match(r'  (-[\w-]+(?:, --[\w-]+)?)(?: [A-Z_{][^ ]*)?(?:  +(.*))?$', line)
        if m: cur = m[1].split(', ')[-1]; out[cur] = m[2] or ''
        elif cur: out[cur] += ' ' + line.strip()
    return out


DEFAULTS = {'--backbone': 'shapes-clip', '--pretrained': 'sandbox', '--device': 'auto', '--batch-size': '64', '-k': '20',
            '--caption': 'none', '--phi': 'none', '--grid': 'none', '--method': 'lincir with --phi, else sum'}
HEAVY = {'torch', 'open_clip', 'torchvision', 'transformers', 'timm', 'numpy'}


def test_help_says_what_each_option_does_and_its_default(tmp_path):
    """Every option of `index` and `query` has help text; each with a default shows it; --sandbox and the examples are
    there; --help imports neither torch nor open_clip (nor numpy)."""
    for sub, options in (('index', {'--backbone', '--pretrained', '--device', '--batch-size'}),
                         ('query', set(DEFAULTS) | {'--sandbox', '--reference', '--json', '--ann'})):
        res, mods = command(tmp_path, sub, '--help')
        assert res.returncode == 0, res.stderr
        helps = option_help(res.stdout)
        assert options | {'--help'} == set(helps), helps.keys()
        for opt, text in helps.items():
            assert len(text.split()) >= 3, (sub, opt, text)
            if opt in DEFAULTS and opt in options: assert f'(default: {DEFAULTS[opt]})' in ' '.join(text.split()), (sub, opt, text)
        assert 'query --sandbox --reference' in res.stdout and 'examples:' in res.stdout
        assert not mods & HEAVY, mods & HEAVY
    res, mods = command(tmp_path, '--help')
    assert res.returncode == 0 and 'index' in res.stdout and 'query' in res.stdout and not mods & HEAVY


def test_argument_errors_come_before_the_heavy_imports(tmp_path):
    "A mistyped argument, an empty folder, or both a folder and --sandbox: status 2 and the reason, without importing torch."
    for argv, says in ((['query', tmp_path, '--reference', 'a.png', '-k', '0'], 'a positive integer'),
                       (['query', '', '--reference', 'a.png'], 'or --sandbox'),
                       (['query', tmp_path, '--sandbox', '--reference', 'a.png'], 'not allowed with'),
                       (['index', tmp_path/'missing'], 'no folder')):
        res, mods = command(tmp_path, *argv)
        assert res.returncode == 2 and says in res.stderr, (argv, res.stderr)
        assert not mods & HEAVY, (argv, mods & HEAVY)


@pytest.fixture
def colours(tmp_path):
    "A folder of plain-coloured pictures of several sizes, and a magenta reference."
    folder = tmp_path/'colours'; folder.mkdir()
    sizes = {'red.png': ((40, 40), (255, 0, 0)), 'green.png': ((64, 64), (0, 160, 0)), 'blue.png': ((300, 300), (0, 0, 255)),
             'yellow.png': ((50, 50), (255, 200, 0)), 'magenta.png': ((30, 30), (255, 0, 255))}
    for name, (size, rgb) in sizes.items(): Image.new('RGB', size, rgb).save(folder/name)
    return folder, {n: rgb for n, (_, rgb) in sizes.items()}


def test_query_imports_what_it_needs_and_draws_the_query_first(colours, tmp_path):
    """`query FOLDER --grid`: the hits as lines; a picture of the query (the reference, enlarged, on the left) and of the
    hits, each enlarged to GRID_SIDE; torch and open_clip imported, but not transformers, timm, faiss or the benchmarks."""
    folder, rgb = colours
    res, mods = command(tmp_path, 'query', folder, '--reference', 'magenta.png', '--caption', 'is red', '--backbone', 'lincir-tiny',
                        '--pretrained', 'none', '-k', '3', '--grid', tmp_path/'hits.png', env={'LINCIR_CACHE': str(tmp_path/'cache')})
    assert res.returncode == 0, res.stderr[-3000:]
    hits = [l.split()[2] for l in res.stdout.splitlines()]
    assert len(hits) == 3 and 'magenta.png' not in hits and set(hits) <= set(rgb), res.stdout
    assert {'torch', 'open_clip', 'lincir.backbone'} <= mods and not mods & {'transformers', 'timm', 'faiss', 'lincir.benchmarks'}, mods
    im = np.asarray(Image.open(tmp_path/'hits.png').convert('RGB'))
    assert im.shape[1] >= 4 * GRID_SIDE and GRID_SIDE < im.shape[0] < 2 * GRID_SIDE, im.shape  # the query and 3 hits in a row
    def where(name): return np.argwhere((im == rgb[name]).all(-1))
    ref = where('magenta.png')
    assert abs(len(ref) - GRID_SIDE ** 2) < 0.03 * GRID_SIDE ** 2 and ref[:, 1].max() < 1.5 * GRID_SIDE  # the reference, first, enlarged
    for name in hits:
        px = where(name)
        assert abs(len(px) - GRID_SIDE ** 2) < 0.03 * GRID_SIDE ** 2 and px[:, 1].min() > ref[:, 1].max(), name  # enlarged, right of the query


def test_query_sandbox(tmp_path):
    """`query --sandbox` searches the sandbox gallery (ShapesCIR's images, by id), as the help's first example does.
    Fast where the sandbox's features are stored already (`make test` runs the demo notebook first)."""
    from lincir.benchmarks import load_benchmark
    q = load_benchmark('shapes', split='val').queries[1]
    res, mods = command(tmp_path, 'query', '--sandbox', '--reference', q.reference, '--caption', q.captions[0], '--method', 'sum',
                        '-k', '5', '--json', cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout)
    assert r['folder'] == 'the sandbox gallery' and r['reference'] == q.reference and len(r['hits']) == 5
    assert all(h['id'] in load_benchmark('shapes', split='val').images for h in r['hits'])
    assert 'transformers' not in mods


@pytest.mark.skipif(not SCREENSHOTS, reason="writes the README's picture: LINCIR_SCREENSHOTS=docs/images (after `make run`)")
def test_readme_grid_picture(tmp_path):
    "The README's --grid picture: the help's sandbox example, as typed in the repository, with the Phi of `make run` and 8 hits."
    if not (REPO/'runs'/'main'/'best'/'phi.safetensors').exists(): pytest.fail("the README's picture needs `make run` (runs/main)")
    line = next(l for l in EXAMPLES.splitlines() if 'query --sandbox' in l)
    argv = shlex.split(line)[3:]  # after `python -m lincir.search`
    out = REPO/SCREENSHOTS/'search-grid.png'
    argv[argv.index('--grid') + 1] = str(out)
    res, _ = command(tmp_path, *argv, '-k', '8', cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(res.stdout.splitlines()) == 8 and out.stat().st_size <= README_PICTURE_BYTES, out.stat().st_size
