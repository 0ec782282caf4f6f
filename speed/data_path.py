"""Cost of the training loop's data path per step: pick the step's batch and turn it into token tensors.

A synthetic masked-corpus cache of N captions is written directly as the arrays `lincir.captions.write_token_arrays`
writes (uint16 token ids of each caption and its masked caption side by side, 2 x 77 per caption, lengths and rules; random ids, no spaCy), memory-mapped with
`TokenArrays.open`, and the training loop's own code is timed: `BatchSampler(...)(step)`, this rank's slice, then
`TokenArrays.batch` (one fancy index into each map -> int64 tensors) and the lengths and rules of the rows.
Timed at 10k and 10M captions, with the file pages cached (warm: wall and CPU time per step) and after evicting them
(cold: first touch of each row from disk). The old sampler's cost per step (it rebuilt the epoch plan at every step) is measured once for comparison.
Usage: python speed/data_path.py [--n 10000000] [--batch 512] [--steps 2000] [--dir DIR] [--keep]
"""
import argparse, json, os, shutil, tempfile, time
from pathlib import Path

import numpy as np

from lincir.captions import ARRAYS, TokenArrays
from lincir.batches import BatchSampler, epoch_batches, random_batches


def write_synthetic(folder:Path, n:int, width:int=77, rows:int=1_000_000, seed:int=0):
    "The four arrays of a masked corpus of `n` captions: a third short (8-20 tokens), the rest long (25-77, many at 77)."
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {k: np.lib.format.open_memmap(folder/f'{k}.npy', mode='w+', dtype=dt, shape=sh) for k, dt, sh in
           [('ids', np.uint16, (n, 2, width)), ('length', np.int16, (n,)), ('rule', np.int8, (n,))]}
    pos = np.arange(width)
    for i in range(0, n, rows):
        m = min(rows, n - i)
        short = rng.random(m) < 1 / 3
        length = np.where(short, rng.integers(8, 21, m), np.minimum(rng.integers(25, 110, m), width)).astype(np.int16)
        ids = rng.integers(1, 49406, (m, width), dtype=np.uint16)
        ids[:, 0] = 49406
        ids[pos[None] == (length[:, None] - 1)] = 49407
        ids[pos[None] >= length[:, None]] = 0
        out['ids'][i:i+m, 0] = ids
        ids[:, 1:3] = 259  # a `$` or two
        out['ids'][i:i+m, 1] = ids
        out['length'][i:i+m] = length
        out['rule'][i:i+m] = (rng.random(m) < 0.02).astype(np.int8)
    for a in out.values(): a.flush()
    del out


def evict(folder:Path):
    "Drop the arrays' pages from the page cache (this file only), so the next reads come from disk."
    for k in ARRAYS:
        fd = os.open(folder/f'{k}.npy', os.O_RDONLY)
        try: os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally: os.close(fd)


def time_steps(data:TokenArrays, batch:int, steps:int, world:int=1, rank:int=0, start:int=0) -> np.ndarray:
    "Seconds per step of the loop's data path, for `steps` steps from `start` (the epoch plan is made before)."
    sampler = BatchSampler(data.length, batch, seed=0)
    sampler(start)  # the epoch's plan, computed once per epoch (timed separately)
    ts, cs = [], []
    for step in range(start, start + steps):
        t, c = time.perf_counter(), time.process_time()
        idx = sampler(step).reshape(world, batch // world)[rank]
        tokens, masked = data.batch(idx)
        lengths, rules = data.length[idx], np.mean(data.rule[idx] != 0)
        ts.append(time.perf_counter() - t); cs.append(time.process_time() - c)
    assert tokens.shape == (batch // world, data.ids.shape[2]) and str(tokens.dtype) == 'torch.int64'
    return np.array(ts), np.array(cs)


def measure(folder:Path, n:int, batch:int, steps:int) -> dict:
    data = TokenArrays.open(folder)
    t = time.perf_counter(); random_batches(n, batch, 0, 0); plan_s = time.perf_counter() - t
    evict(folder)
    cold, _ = time_steps(data, batch, min(steps, 200), start=0)
    time_steps(data, batch, steps, start=0)  # touch the rows of those steps again
    warm, warm_cpu = time_steps(data, batch, steps, start=0)
    size = sum((folder/f'{k}.npy').stat().st_size for k in ARRAYS)
    per_epoch = n // batch
    return dict(captions=n, batch=batch, steps=steps, epoch_plan_s=round(plan_s, 3),
                epoch_plan_ms_per_step=round(1e3 * plan_s / per_epoch, 4),
                cpu_ms_per_step_median=round(1e3 * float(np.median(warm_cpu)), 3), warm_ms_per_step_min=round(1e3 * float(warm.min()), 3),
                warm_ms_per_step_median=round(1e3 * float(np.median(warm)), 3), warm_ms_per_step_p99=round(1e3 * float(np.quantile(warm, 0.99)), 3),
                cold_ms_per_step_median=round(1e3 * float(np.median(cold)), 3), cold_ms_per_step_p99=round(1e3 * float(np.quantile(cold, 0.99)), 3),
                arrays_bytes=size, arrays_gib=round(size / 2**30, 3), bytes_per_caption=round(size / n, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=10_000_000); ap.add_argument('--small', type=int, default=10_000)
    ap.add_argument('--batch', type=int, default=512); ap.add_argument('--steps', type=int, default=2000)
    ap.add_argument('--dir', default=None, help='where to write the synthetic caches (default: a temporary folder under .cache/)')
    ap.add_argument('--keep', action='store_true'); ap.add_argument('--out', default='speed/results/data_path.json')
    args = ap.parse_args()
    from lincir.backbone import cache_dir
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix='bench-data-path-', dir=cache_dir()))
    res = dict(note='one process; CPU ms/step (process time) is robust to other jobs on the machine, wall times are not',
               load_avg_at_start=os.getloadavg()[0], rows=[])
    try:
        for n in (args.small, args.n):
            folder = root/f'corpus-{n}'
            t = time.perf_counter()
            if not (folder/'rule.npy').exists(): write_synthetic(folder, n)
            print(f"{n:,} captions: arrays written in {time.perf_counter() - t:.1f} s")
            row = measure(folder, n, args.batch, args.steps); res['rows'].append(row)
            print(json.dumps(row))
        lengths = np.load(root/f'corpus-{args.n}'/'length.npy')
        t = time.perf_counter(); epoch_batches(lengths, args.batch, 0, 0); res['old_sampler_s_per_step'] = round(time.perf_counter() - t, 3)
        print(f"old sampler (epoch plan rebuilt every step, length-grouped): {res['old_sampler_s_per_step']} s per step at {args.n:,} captions")
    finally:
        if not args.keep: shutil.rmtree(root, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True); Path(args.out).write_text(json.dumps(res, indent=2))
    for r in res['rows']:
        print(f"| {r['captions']:,} captions | {r['cpu_ms_per_step_median']} CPU ms/step | wall {r['warm_ms_per_step_min']} min, "
              f"{r['warm_ms_per_step_median']} median, p99 {r['warm_ms_per_step_p99']} ms/step warm | "
              f"{r['cold_ms_per_step_median']} ms/step cold | epoch plan {r['epoch_plan_s']} s once | arrays {r['arrays_gib']} GiB |")


if __name__ == '__main__':
    main()
