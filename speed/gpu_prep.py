"""Prepare, on this machine, everything `speed/gpu.sh` needs on the lent GPU machine, in one ignored folder (`.gpu/`).

The GPU machine is a fixed image (`speed/device_packages.txt`: torch, numpy, pytest, ... but no open_clip, ftfy,
spaCy or datasets) that can fetch nothing. This script puts into `.gpu/`:
- `wheels/`: the pure-Python wheels the import chain of the check needs and the image lacks (`CARRIED`), at the
  versions this environment runs, for Python 3.12 on x86-64 Linux; downloaded once, then reused. Every need of each
  wheel must be in the image or carried, else it stops and says which.
- `captions/<tokenizer>/`: the paper's caption mix (`speed/mix.py`) masked with spaCy and tokenised by
  `lincir.captions.masked_corpus`, as the token arrays training reads (`ids.npy`, `length.npy`, `rule.npy`), once per
  tokenizer: backbones whose tokenizers give identical ids for every row share one folder (checked row by row).
  `meta.json` names the backbones it serves and holds a few rows' texts so `gpu.py` can check its tokenizer there.
- `manifest.json`: what is there, with sizes and hashes.
It prints the size of `.gpu/` and of all that a device call would send. Run it as `make gpu-prep`.
Usage: python speed/gpu_prep.py [--out .gpu] [--backbones ViT-L-14 ViT-bigG-14 lincir-tiny] [--captions 4096]
"""
import argparse, datetime, hashlib, importlib.metadata as md, json, os, subprocess, sys, warnings, zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from device_env import device_packages, normalize
from mix import realistic_captions

ROOT = Path(__file__).resolve().parents[1]
CARRIED = ('open_clip_torch', 'ftfy', 'wcwidth')  # found by importing the check's entry points in speed/device_env.py
DEVICE_PYTHON = '3.12'  # the image's python3 (3.12.3); wheels for x86-64 glibc Linux, as the device tool's README says
PLATFORMS = ('manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_17_x86_64', 'manylinux2014_x86_64', 'manylinux1_x86_64')
BACKBONES = ('ViT-L-14', 'ViT-bigG-14', 'lincir-tiny')  # the timed backbones, and the dry run's tiny CLIP
CAPTIONS = 4096  # 8 batches of the paper's 512
TRAVEL_LIMIT = 64 * 2**20  # what one device call may send: working tree and carried folders together
CHECK_ROWS = 8  # rows whose texts go along, to check the GPU machine's tokenizer against the arrays


def _wheel_name(path:Path) -> tuple[str, str]:
    "(normalized name, version) of a wheel file."
    name, version = path.name.split('-')[:2]
    return normalize(name), version


def _requires(wheel:Path) -> list[str]:
    "The names `wheel` needs on the device (its Requires-Dist without extras, markers read for Python 3.12 on Linux)."
    from packaging.requirements import Requirement
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
        lines = z.read(meta).decode().splitlines()
    env = dict(python_version=DEVICE_PYTHON, python_full_version=f'{DEVICE_PYTHON}.3', sys_platform='linux',
               platform_system='Linux', platform_machine='x86_64', os_name='posix', implementation_name='cpython', extra='')
    reqs = [Requirement(l.split(':', 1)[1]) for l in lines if l.startswith('Requires-Dist:')]
    return [normalize(r.name) for r in reqs if not r.marker or r.marker.evaluate(env)]


def wheels(folder:Path) -> list[Path]:
    "Download (once) the wheels of `CARRIED` at this environment's versions; check that nothing else is needed."
    folder.mkdir(parents=True, exist_ok=True)
    want = {normalize(n): md.version(n) for n in CARRIED}
    for w in folder.glob('*.whl'):  # one version of each: two would stop the install on the device
        name, version = _wheel_name(w)
        if want.get(name) != version: w.unlink()
    have = {_wheel_name(w)[0] for w in folder.glob('*.whl')}
    missing = [f'{n}=={v}' for n, v in want.items() if n not in have]
    if missing:
        cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--only-binary=:all:', '--python-version', DEVICE_PYTHON,
               '--implementation', 'cp', *[a for p in PLATFORMS for a in ('--platform', p)], '-d', str(folder), *missing]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            sys.exit(f"gpu_prep: pip could not download {' '.join(missing)} (the package index must be reachable):\n{res.stderr[-2000:]}")
    found = sorted(folder.glob('*.whl'))
    image, carried = device_packages(), {_wheel_name(w)[0] for w in found}
    for w in found:
        lacking = [r for r in _requires(w) if r not in image and r not in carried]
        if lacking:
            sys.exit(f"gpu_prep: {w.name} needs {', '.join(lacking)}, which the GPU machine's image lacks "
                     f"(speed/device_packages.txt): add {'it' if len(lacking) == 1 else 'them'} to CARRIED in {__file__}")
    return found


def _tokenizers(names) -> dict:
    "open_clip's tokenizer for each backbone name (no weights needed)."
    import open_clip
    import lincir.backbone  # noqa: F401 -- the import registers lincir's model configs (lincir-tiny) with open_clip
    return {n: open_clip.get_tokenizer(n) for n in names}


def _identity(tok) -> dict:
    from lincir.backbone import placeholder_token_id
    return dict(tokenizer=type(tok).__name__, context_length=tok.context_length, vocab_size=getattr(tok, 'vocab_size', None),
                placeholder_id=placeholder_token_id(tok))


def _write_text_once(path:Path, text:str) -> Path:
    "Write `text` to `path` unless it already holds it (an unchanged file keeps the masking cache valid)."
    if not (path.exists() and path.read_text() == text):
        path.parent.mkdir(parents=True, exist_ok=True); path.write_text(text)
    return path


def _save_arrays(arrays, folder:Path):
    from lincir.captions import ARRAYS
    from lincir.files import atomic_write
    for k in ARRAYS:
        def write(tmp, a=getattr(arrays, k)):
            with open(tmp, 'wb') as f: np.save(f, np.ascontiguousarray(a))
        atomic_write(folder/f'{k}.npy', write)


def captions(folder:Path, backbones, n:int, seed:int) -> dict:
    "Mask and tokenise the caption mix once per distinct tokenizer into `folder/<tokenizer>/`; returns backbone -> folder name."
    from lincir.captions import corpus_meta, masked_corpus, token_arrays
    from lincir.files import atomic_write_json, build_folder
    text = ''.join(c.replace('\n', ' ') + '\n' for c in realistic_captions(n, seed))
    source = _write_text_once(ROOT/'.cache'/'gpu-prep'/f'mix-{n}-seed{seed}.txt', text)
    toks = _tokenizers(backbones)
    groups = {}  # identity -> backbones
    for name, tok in toks.items(): groups.setdefault(json.dumps(_identity(tok), sort_keys=True), []).append(name)
    served = {}

    def fill(target:Path):
        for ident, names in groups.items():
            ident = json.loads(ident); first = toks[names[0]]
            sub = f"{ident['tokenizer']}-{ident['context_length']}"
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                ds = masked_corpus([str(source)], first, seed=seed)
            arrays, texts = token_arrays(ds), ds.select_columns(['caption', 'masked'])[:]
            for other in names[1:]:  # same identity: the ids must also be the same, row by row
                for j, col in enumerate(('caption', 'masked')):
                    if not np.array_equal(toks[other](texts[col]).numpy(), arrays.ids[:, j]):
                        sys.exit(f"gpu_prep: {other} and {names[0]} have tokenizers alike in {ident} but tokenise the mix differently")
            _save_arrays(arrays, target/sub)
            key = corpus_meta(ds)['key']
            length = np.asarray(arrays.length)
            atomic_write_json(target/sub/'meta.json', dict(
                backbones=names, **ident, captions=len(arrays), source=f'speed/mix.py realistic_captions({n}, seed={seed})',
                source_sha256=hashlib.sha256(text.encode()).hexdigest(), masking=key['masking'], rules=corpus_meta(ds)['rules'],
                mean_length=round(float(length.mean()), 1), at_context=round(float((length >= ident['context_length']).mean()), 3),
                check=[dict(caption=texts['caption'][i], masked=texts['masked'][i]) for i in range(min(CHECK_ROWS, len(arrays)))]))
            served.update({b: sub for b in names})
            print(f"captions/{sub}: {len(arrays)} captions masked and tokenised for {', '.join(names)} "
                  f"(mean {length.mean():.1f} tokens, {(length >= ident['context_length']).mean():.0%} at {ident['context_length']})")
    build_folder(folder, fill, replace=True)
    return served


def _size(paths) -> int: return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def travel_size(carried:Path) -> int:
    "Bytes a device call sends: tracked and untracked-not-ignored files of the working tree, plus the carried folder."
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT, capture_output=True, text=True, check=True)
    return _size(ROOT/f for f in files.stdout.split('\0') if f) + _size(carried.rglob('*'))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT/'.gpu'), help='the folder to fill (git-ignored; carried to the device)')
    ap.add_argument('--backbones', nargs='+', default=list(BACKBONES))
    ap.add_argument('--captions', type=int, default=CAPTIONS, help='captions of the mix to mask and tokenise')
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out).resolve()
    if not out.is_relative_to(ROOT): sys.exit(f"gpu_prep: {out} is outside the checkout {ROOT}: a device call carries only folders inside it")
    found = wheels(out/'wheels')
    print(f"wheels/: {', '.join(w.name for w in found)}")
    served = captions(out/'captions', a.backbones, a.captions, a.seed)
    total = _size(out.rglob('*'))
    manifest = dict(created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), device_python=DEVICE_PYTHON,
                    wheels=[dict(file=w.name, bytes=w.stat().st_size, sha256=hashlib.sha256(w.read_bytes()).hexdigest()) for w in found],
                    captions=served, bytes=total)
    (out/'manifest.json').write_text(json.dumps(manifest, indent=2))
    sent = travel_size(out)
    print(f"{out}: {total / 2**20:.1f} MiB; a device call carrying it sends {sent / 2**20:.1f} MiB "
          f"(limit {TRAVEL_LIMIT // 2**20} MiB)")
    if sent > TRAVEL_LIMIT: sys.exit(f"gpu_prep: {sent / 2**20:.1f} MiB is over the device call's limit")
    print(f'the device call (speed/README.md, GPU check): run(command="bash speed/gpu.sh", carry=["{out.relative_to(ROOT)}"], timeout_s=300)')


if __name__ == '__main__':
    main()
