"""Search over a feature store of synthetic CLIP-sized vectors: exact (memory-mapped, chunked) vs approximate (faiss).

Data: unit vectors of CLIP ViT-L/14's size (d=768) drawn around n/1000 random cluster centres (cosine to the centre
about 0.7), as real image embeddings cluster by content. Two query sets: *near* queries are gallery vectors plus noise
(cosine about 0.9 to their source), as a composed query that lands near some images; *far* queries have cosine about
0.5 to their source, as a query from the text side of CLIP's modality gap, whose neighbours are less concentrated
(timed on the near set; recall reported for both). Written as fp16 shards with `FeatureStore.add`, searched
with `lincir.ranking.topk`, exact and through a faiss index (chosen by `ann_kind`). Reported per size: build
time, resident memory the search adds (RSS, which counts the memory-mapped pages it touched), query latency for one
query at a time (median over the queries after one warm-up), and the approximate recall@10 against exact.
Usage: nice -n 10 python speed/search.py [--sizes 10000 100000 1000000] [--queries 30] [--work /tmp/lincir-search]

With --cli, the command line instead: wall and CPU time (user + system, all threads) of `python -m lincir.search --help`, of `python -m lincir.search query`
against a folder of 200 rendered images indexed beforehand (the default sandbox backbone, no Phi), and of
`python -c "import torch"` for scale, each run --runs times in turn (so a change of load hits all alike), with the
1-minute load average before each run. The commands run in the work folder, so they import the installed package,
or with --pythonpath DIR the one in DIR: another checkout's (`git archive COMMIT lincir data | tar -x -C DIR`).
Usage: python speed/search.py --cli [--runs 5] [--pythonpath DIR] [--work /tmp/lincir-search-cli]
"""
import argparse, json, os, resource, shutil, statistics, subprocess, sys, time
from pathlib import Path

# idle OpenMP threads sleep instead of spinning: on a shared machine spinning threads inflate CPU time 3-4x
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np
import torch

from lincir.ranking import ann_index, ann_kind, topk
from lincir.store import FeatureStore, StoreView


def rss_mb() -> float:
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def synthetic_store(path, n, d, seed=0, chunk=65536) -> FeatureStore:
    "A store of `n` clustered unit vectors in shards of `chunk` rows (as `compact` leaves a store)."
    shutil.rmtree(path, ignore_errors=True)
    st, rng = FeatureStore(path, d), np.random.default_rng(seed)
    centres = rng.standard_normal((max(10, n // 1000), d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for a in range(0, n, chunk):
        m = min(chunk, n - a)
        x = centres[rng.integers(0, len(centres), m)] + rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d)
        st.add([f'img{i}' for i in range(a, a + m)], x / np.linalg.norm(x, axis=1, keepdims=True), tag='bench')
    return st


def timed(f, qs):
    "Results, and per query: median and min wall time, median CPU time of this process (all threads) in ms."
    f(qs[:1])  # warm-up: pages in, index loaded
    ts, cpu, out = [], [], []
    for i in range(len(qs)):
        t, c = time.perf_counter(), time.process_time()
        out.append(f(qs[i:i+1])[1][0].tolist())  # topk's positions of the one query
        ts.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    return out, 1000 * float(np.median(ts)), 1000 * float(np.min(ts)), 1000 * float(np.median(cpu))


def table(out) -> str:
    "The README's table of a results file."
    rows = ['| images (d=768) | fp16 size | exact: CPU ms/query | exact: wall ms (min) | exact: added RSS | ANN index | ANN build: CPU s | ANN: added RSS | ANN: CPU ms/query | ANN: wall ms (min) | recall@10 near / far |',
            '|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|']
    for r in out['results']:
        rows.append(f"| {r['n']:,} | {r['fp16_mb']:,.0f} MB | {r['exact_cpu_ms']:.0f} | {r['exact_ms_median']:.0f} ({r['exact_ms_min']:.0f}) "
                    f"| {r['exact_rss_mb']:,.0f} MB | {r['ann']} ({r['ann_params']}) | {r['ann_build_cpu_s']:.0f} "
                    f"| {r['ann_rss_mb']:,.0f} MB | {r['ann_cpu_ms']:.1f} | {r['ann_ms_median']:.1f} ({r['ann_ms_min']:.1f}) "
                    f"| {r['recall_at_10']:.3f} / {r.get('recall_at_10_far', float('nan')):.3f} |")
    return '\n'.join(rows)


def cli_times(work:Path, runs:int, pythonpath:str='', images:int=200) -> dict:
    "Wall seconds of each command (median, min, all runs) and the load average before each run."
    from lincir.shapes import random_scene, render
    import random
    folder, rng = work/'photos', random.Random(0)
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for n in range(images): render(random_scene(rng, 1)).save(folder/f'{n}.png')
    env = {**os.environ, 'LINCIR_CACHE': str(work/'cache'), 'HF_HUB_OFFLINE': '1',
           'PYTHONPATH': os.pathsep.join(p for p in (pythonpath, os.environ.get('PYTHONPATH', '')) if p)}
    search = [sys.executable, '-m', 'lincir.search']
    where = subprocess.run([sys.executable, '-c', 'import lincir; print(lincir.__file__)'], env=env, cwd=work, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([*search, 'index', str(folder)], env=env, cwd=work, check=True, capture_output=True)  # indexed beforehand
    commands = {'python -c "import torch"': [sys.executable, '-c', 'import torch'],
                'python -m lincir.search --help': [*search, '--help'],
                'python -m lincir.search query FOLDER': [*search, 'query', str(folder), '--reference', '0.png', '--caption', 'is red', '-k', '10']}
    times, cpu, loads = {c: [] for c in commands}, {c: [] for c in commands}, []
    for _ in range(runs):
        for name, argv in commands.items():
            loads.append(os.getloadavg()[0])
            t, c = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(argv, env=env, cwd=work, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t)
            c2 = resource.getrusage(resource.RUSAGE_CHILDREN); cpu[name].append(c2.ru_utime - c.ru_utime + c2.ru_stime - c.ru_stime)
    def stats(t): return dict(median=round(statistics.median(t), 2), min=round(min(t), 2), all=[round(x, 2) for x in t])
    return dict(lincir=where, images=images, runs=runs, load_average=dict(min=min(loads), mean=round(statistics.mean(loads), 2), max=max(loads)),
                seconds={c: stats(t) for c, t in times.items()}, cpu_seconds={c: stats(t) for c, t in cpu.items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--cli', action='store_true', help='time the command line (see above) instead of the search itself')
    ap.add_argument('--runs', type=int, default=5, help='--cli: runs of each command')
    ap.add_argument('--pythonpath', default='', help="--cli: time the lincir package in this folder (another checkout's)")
    ap.add_argument('--sizes', type=int, nargs='+', default=[10_000, 100_000, 1_000_000])
    ap.add_argument('--dim', type=int, default=768); ap.add_argument('--queries', type=int, default=30)
    ap.add_argument('--k', type=int, default=10); ap.add_argument('--work', default='/tmp/lincir-search-bench')
    ap.add_argument('--out', default='speed/results/search.json')
    ap.add_argument('--table', default='', help='only print the README table of this results file')
    args = ap.parse_args()
    if args.cli:
        work = Path(args.work if args.work != ap.get_default('work') else '/tmp/lincir-search-cli')
        r = cli_times(work, args.runs, args.pythonpath)
        print(json.dumps(r, indent=1))
        return print('\n'.join(['| command | wall s: median (min) | CPU s: median (min) |', '|---|---:|---:|'] +
                               [f"| `{c}` | {t['median']:.2f} ({t['min']:.2f}) | {r['cpu_seconds'][c]['median']:.2f} ({r['cpu_seconds'][c]['min']:.2f}) |"
                                for c, t in r['seconds'].items()]))
    if args.table: return print(table(json.loads(Path(args.table).read_text())))
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    results = []
    for n in args.sizes:
        t = time.perf_counter(); st = synthetic_store(Path(args.work)/f'n{n}', n, args.dim); write_s = time.perf_counter() - t
        st = FeatureStore(st.path, args.dim)  # read back: memory-mapped
        view = StoreView(st, [f'img{i}' for i in range(n)])
        rng = np.random.default_rng(1)
        src = view.vectors(rng.choice(n, args.queries, replace=False))
        qs = torch.from_numpy(src + rng.standard_normal(src.shape, dtype=np.float32) * 0.5 / np.sqrt(args.dim))
        far = torch.from_numpy(src + rng.standard_normal(src.shape, dtype=np.float32) * 1.73 / np.sqrt(args.dim))
        fp16_mb = n * args.dim * 2 / 2**20
        m0 = rss_mb()
        exact, exact_ms, exact_min, exact_cpu = timed(lambda q: topk(q, view, args.k), qs)
        exact_mem = rss_mb() - m0
        kind = ann_kind(n)
        m0 = rss_mb(); t, c = time.perf_counter(), time.process_time(); index = ann_index(view, kind)
        build_s, build_cpu = time.perf_counter() - t, time.process_time() - c
        ann_mem = rss_mb() - m0
        approx, ann_ms, ann_min, ann_cpu = timed(lambda q: topk(q, view, args.k, ann=index), qs)
        recall = float(np.mean([len(set(a) & set(e)) / args.k for a, e in zip(approx, exact)]))
        far_exact, far_approx = topk(far, view, args.k)[1].tolist(), topk(far, view, args.k, ann=index)[1].tolist()
        recall_far = float(np.mean([len(set(a) & set(e)) / args.k for a, e in zip(far_approx, far_exact)]))
        r = dict(n=n, d=args.dim, fp16_mb=round(fp16_mb, 1), shards=len(st.shards), write_s=round(write_s, 1),
                 exact_ms_median=round(exact_ms, 1), exact_ms_min=round(exact_min, 1), exact_cpu_ms=round(exact_cpu, 1), exact_rss_mb=round(exact_mem, 1),
                 ann=kind, ann_params=(f'nlist={index.nlist}, nprobe={index.nprobe}' if hasattr(index, 'nprobe') else 'M=32, efConstruction=40, efSearch=128'),
                 ann_build_s=round(build_s, 1), ann_build_cpu_s=round(build_cpu, 1), ann_rss_mb=round(ann_mem, 1), ann_ms_median=round(ann_ms, 2),
                 ann_ms_min=round(ann_min, 2), ann_cpu_ms=round(ann_cpu, 2), recall_at_10=round(recall, 3),
                 recall_at_10_far=round(recall_far, 3))
        print(json.dumps(r), flush=True)
        results.append(r)
        del view, st, index
        shutil.rmtree(Path(args.work)/f'n{n}', ignore_errors=True)
    out = dict(machine=f'{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}', date=time.strftime('%Y-%m-%d'),
               load_average_at_end=open('/proc/loadavg').read().split()[:3],
               queries=args.queries, k=args.k, results=results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f'wrote {args.out}'); print(table(out))


if __name__ == '__main__': main()
