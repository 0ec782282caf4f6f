"""A stand-in for the GPU machine's Python: a virtual environment that sees only the packages its image holds.

`python speed/device_env.py DEST` makes `DEST` with `python -m venv --without-pip` and a `.pth` file that adds one
folder of symbolic links: for each distribution installed in this interpreter's site-packages whose name
`speed/device_packages.txt` lists, its top-level modules and its `.dist-info` (versions are this machine's).
Everything else (datasets, spaCy, open_clip, papermill, nbdev, lincir's own editable install) stays invisible, so
`DEST/bin/python` fails on an import the GPU machine would fail on. Where this machine's version of a listed package
needs a package the list lacks (huggingface_hub 2 here needs httpx2; the image's 1.x does not), that need is linked
too and reported, unless `--never` names it. Building it takes about a second and no disk.
Used by tests/test_gpu_script.py to rehearse `speed/gpu.sh`; by hand:
    python speed/device_env.py /tmp/device && PYTHON=/tmp/device/bin/python bash speed/gpu.sh --device cpu --dry-run
"""
import argparse, importlib.metadata as md, re, subprocess, sys, sysconfig
from pathlib import Path

PACKAGES = Path(__file__).with_name('device_packages.txt')


def normalize(name:str) -> str:
    "A distribution name as PEP 503 compares them: `Typing_Extensions` -> `typing-extensions`."
    return re.sub(r'[-_.]+', '-', name).lower()


def device_packages(path=PACKAGES) -> set[str]:
    "The normalized names of the packages the GPU machine's image holds."
    lines = (l.split('#')[0].strip() for l in Path(path).read_text().splitlines())
    return {normalize(l) for l in lines if l}


def _top_levels(dist) -> set[tuple[str, ...]]:
    "The paths (as parts, one or two deep) that `dist` installs into site-packages: its modules, packages and metadata."
    parts = {Path(f).parts for f in dist.files or ()}
    return {p[:2] if len(p) > 1 else p for p in parts if p and p[0] not in ('..', '__pycache__') and not p[0].endswith('.pth')}


def with_needs(dists:dict, listed:set[str], never:set[str]) -> dict[str, str]:
    "The `listed` names installed here, and what they need here (recursively, `never` excepted): name -> why."
    from packaging.requirements import Requirement
    why = {n: 'listed' for n in listed if n in dists}
    todo = list(why)
    while todo:
        n = todo.pop()
        for r in map(Requirement, dists[n].requires or ()):
            m = normalize(r.name)
            if m in why or m in never or m not in dists or (r.marker and not r.marker.evaluate({'extra': ''})): continue
            why[m] = f'needed here by {n}'; todo.append(m)
    return why


def link_packages(site:Path, out:Path, allowed:set[str]) -> None:
    "Fill `out` with links to what the `allowed` distributions of `site` install."
    owners = {}  # top-level name -> {second-level name or None: allowed?}
    for dist in md.distributions(path=[str(site)]):
        ok = normalize(dist.metadata['Name']) in allowed
        for p in _top_levels(dist):
            subs, sub = owners.setdefault(p[0], {}), (p[1] if len(p) > 1 else None)
            subs[sub] = subs.get(sub, False) or ok
    out.mkdir(parents=True, exist_ok=True)
    for top, subs in owners.items():
        if not any(subs.values()) or not (site/top).exists(): continue
        if all(subs.values()) or not (site/top).is_dir():  # wholly owned by allowed distributions
            (out/top).symlink_to(site/top)
        else:  # a folder shared with distributions the image lacks (a namespace package): link only the allowed parts
            (out/top).mkdir()
            for sub, ok in subs.items():
                if ok and sub and (site/top/sub).exists(): (out/top/sub).symlink_to(site/top/sub)


def build(dest, packages=PACKAGES, never=(), site=None) -> Path:
    "Make the stand-in environment in `dest` (which must not exist); returns its python. `never`: names never linked."
    dest = Path(dest).resolve()
    if dest.exists(): raise FileExistsError(f"{dest} exists: give a new folder")
    site = Path(site or sysconfig.get_paths()['purelib'])
    dists = {normalize(d.metadata['Name']): d for d in md.distributions(path=[str(site)])}
    never = {normalize(n) for n in never}
    why = with_needs(dists, device_packages(packages) - never, never)
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(dest)], check=True)
    python = dest/'bin'/'python'
    venv_site = Path(subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                                    check=True, capture_output=True, text=True).stdout.strip())
    link_packages(site, dest/'device-site', set(why))
    (venv_site/'device_image.pth').write_text(f"{dest/'device-site'}\n")
    (dest/'packages.txt').write_text(''.join(f'{n} {dists[n].version}: {w}\n' for n, w in sorted(why.items())))
    return python


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('dest', help='a new folder for the environment')
    ap.add_argument('--packages', default=str(PACKAGES), help="the image's package names, one a line")
    ap.add_argument('--never', nargs='*', default=[], help='names never linked, even where a listed package needs them here')
    a = ap.parse_args()
    python = build(a.dest, a.packages, a.never)
    rows = (Path(a.dest)/'packages.txt').read_text().splitlines()
    extra = [r for r in rows if not r.endswith(': listed')]
    print(f"{python}: {len(rows) - len(extra)} packages of the image's list ({a.packages}) are installed here and linked"
          + (f"; also linked: {', '.join(r.split(':')[0] + ' (' + r.split(': ')[1] + ')' for r in extra)}" if extra else ''))


if __name__ == '__main__':
    main()
