"""Training-step timings on a GPU, and the extrapolated time of the paper's recipe (20,000 steps of batch 512).

For each backbone (default ViT-L-14 and ViT-bigG-14, random weights: pretrained=None, so nothing is downloaded), time
`lincir.training.train_step` as the training loop runs it (uniformly random batches of `--batch` rows of the prepared
token arrays, AdamW, mixed precision as training picks it), computed in `--chunks` length-sorted chunks (ours) and as
one whole batch cut to its longest caption (chunks=1). The captions are the paper's length mix (`speed/mix.py`),
masked and tokenised beforehand by `speed/gpu_prep.py` (`make gpu-prep`) into `.gpu/captions/`: no spaCy and no
`datasets` here. Prints ms/step and the recipe's minutes per backbone; writes a JSON after every variant, so a run cut
short keeps what finished. `--budget-s` caps the time: fewer timed steps, or a backbone skipped (and said so).
`--device cpu --dry-run` runs the same code on the tiny random CLIP in seconds (the CPU rehearsal of speed/gpu.sh).
Usage: python speed/gpu.py [--device cuda] [--backbones ViT-L-14 ViT-bigG-14] [--batch 512] [--steps 10] [--budget-s S]
"""
import argparse, datetime, json, os, platform, sys, time, warnings
from pathlib import Path

import numpy as np
import torch

from lincir.backbone import load_backbone
from lincir.captions import TokenArrays
from lincir.files import atomic_write_json
from lincir.phi import Phi
from lincir.train_config import TrainConfig
from lincir.batches import BatchSampler
from lincir.training import mixed_precision, train_step

ROOT = Path(__file__).resolve().parents[1]
RECIPE_STEPS, RECIPE_BATCH = 20_000, 512
# LINCIR.md (the paper): ViT-L about 0.5 h and ViT-bigG 48 min on 8 A100; the project's goal for ViT-L on one H100
REFERENCE = dict(paper_minutes={'ViT-L-14': 30, 'ViT-bigG-14': 48}, paper_hardware='8x A100', goal_minutes={'ViT-L-14': 15},
                 goal_hardware='1x H100')
DEFAULTS = ('ViT-L-14', 'ViT-bigG-14')
DRY_RUN = 'lincir-tiny'
MIN_BACKBONE_S = 30  # below this much budget, a backbone is not started (loading ViT-bigG-14 alone takes a while)
MIN_VARIANT_S = 5


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


class Budget:
    "Seconds left of `seconds` (None: no limit)."
    def __init__(self, seconds): self.end = None if seconds is None else time.perf_counter() + seconds
    def left(self) -> float: return float('inf') if self.end is None else self.end - time.perf_counter()


def prepared(folder:Path, name:str) -> tuple[TokenArrays, dict]:
    "The token arrays `gpu_prep.py` made for backbone `name`, and their meta.json."
    metas = [(p.parent, json.loads(p.read_text())) for p in sorted(folder.glob('*/meta.json'))]
    for sub, meta in metas:
        if name in meta['backbones']: return TokenArrays.open(sub), meta
    served = sorted(b for _, m in metas for b in m['backbones'])
    raise FileNotFoundError(f"no prepared captions for {name} in {folder} (it has {', '.join(served) or 'none'}): run "
                            f"`.venv/bin/python speed/gpu_prep.py --backbones {' '.join(served + [name])}` where spaCy "
                            "and the package index are, and carry .gpu/")


def check_tokenizer(bb, meta:dict, data:TokenArrays):
    "The arrays must be this backbone's ids: same context, same placeholder, and its tokenizer gives the stored rows."
    if (meta['context_length'], meta['placeholder_id']) != (bb.context_length, bb.placeholder_id):
        raise ValueError(f"{bb.name}: context {bb.context_length}, placeholder {bb.placeholder_id}; the prepared captions have "
                         f"{meta['context_length']}, {meta['placeholder_id']}: run make gpu-prep again")
    for j, col in enumerate(('caption', 'masked')):
        got = bb.tokenize([r[col] for r in meta['check']]).cpu().numpy()
        if not np.array_equal(got, data.ids[:len(got), j]):
            raise ValueError(f"{bb.name}'s tokenizer here does not give the prepared ids of the {col}s: run make gpu-prep again")


def time_variant(bb, data:TokenArrays, chunks:int, args, dev, budget:Budget) -> dict:
    "ms/step of `train_step` as the training loop calls it, with `chunks` chunks; fewer timed steps if the budget is short."
    cfg = TrainConfig(chunks=chunks, precision=args.precision, batch_size=args.batch)  # the paper's AdamW settings
    torch.manual_seed(0); phi = Phi.for_backbone(bb, dropout=cfg.dropout).to(dev).train()
    opt = torch.optim.AdamW(phi.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ctx, scaler = mixed_precision(dev, cfg.precision)
    sampler = BatchSampler(data.length, args.batch, seed=0)
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev)
    times, losses, tokens_per_row, step = [], [], [], 0
    while step < args.warmup + args.steps:
        if step >= args.warmup and times and budget.left() < 2 * times[-1] + MIN_VARIANT_S: break  # keep what is measured
        idx = sampler(step)
        sync(dev); t = time.perf_counter()
        tokens, masked = data.batch(idx, dev)
        losses.append(train_step(bb, phi, opt, scaler, ctx, cfg, step, 0, tokens, masked, data.length[idx]))
        sync(dev); times.append(time.perf_counter() - t)
        tokens_per_row.append(float(np.mean(data.length[idx]))); step += 1
    timed = times[args.warmup:]
    if not timed: return dict(chunks=chunks, skipped=f'budget: {budget.left():.0f} s left after warm-up', warmup_ms=round(1e3 * times[-1], 1))
    ms = 1e3 * float(np.median(timed))
    out = dict(chunks=chunks, steps_timed=len(timed), ms_per_step=round(ms, 2), ms_min=round(1e3 * min(timed), 2),
               ms_max=round(1e3 * max(timed), 2), samples_per_s=round(args.batch / ms * 1e3, 1),
               recipe_minutes=round(ms * RECIPE_STEPS * RECIPE_BATCH / args.batch / 6e4, 1),
               mean_tokens=round(float(np.mean(tokens_per_row)), 1), losses_finite=bool(np.isfinite(losses).all()),
               last_loss=round(losses[-1], 5))
    if dev.type == 'cuda':
        out.update(peak_memory_gib=round(torch.cuda.max_memory_allocated(dev) / 2**30, 2),
                   peak_reserved_gib=round(torch.cuda.max_memory_reserved(dev) / 2**30, 2))
    return out


def describe(name:str, key:str, r:dict, batch:int) -> str:
    "One line for the log."
    if 'ms_per_step' not in r: return f"{name}: {key} (chunks={r['chunks']}) {r.get('skipped') or r.get('error')}"
    memory = f", peak {r['peak_memory_gib']} GiB" if 'peak_memory_gib' in r else ''
    return (f"{name}: {key} (chunks={r['chunks']}) {r['ms_per_step']:.1f} ms/step over {r['steps_timed']} steps at batch {batch}"
            f" -> paper recipe ({RECIPE_STEPS} x {RECIPE_BATCH}) {r['recipe_minutes']} min{memory}")


def time_backbone(name:str, args, dev, budget:Budget, save) -> dict:
    "Load `name` with random weights, check the prepared captions against it, time both variants; `save(out)` after each."
    data, meta = prepared(Path(args.captions), name)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.manual_seed(0); bb = load_backbone(name, None, device=dev)
    out = dict(backbone=name, load_s=round(time.perf_counter() - t0, 1), width=bb.width, embed_dim=bb.embed_dim,
               context=bb.context_length, captions=meta['source'], masking=meta['masking'])
    check_tokenizer(bb, meta, data)
    variants = sorted({args.chunks, 1}, reverse=True)
    for i, chunks in enumerate(variants):
        key = 'chunked' if chunks > 1 else 'whole_batch'
        share = Budget(budget.left() / (len(variants) - i))  # a short budget is shared, not spent on the first variant
        if share.left() < MIN_VARIANT_S: out[key] = dict(chunks=chunks, skipped=f'budget: {budget.left():.0f} s left')
        else:
            try: out[key] = time_variant(bb, data, chunks, args, dev, share)
            except torch.OutOfMemoryError as e: out[key] = dict(chunks=chunks, error=f'out of memory: {str(e)[:300]}')
        if dev.type == 'cuda': torch.cuda.empty_cache()
        print(describe(name, key, out[key], args.batch), flush=True)
        save(out)
    del bb
    if dev.type == 'cuda': torch.cuda.empty_cache()
    return out


def environment(dev, args) -> dict:
    on_gpu = dev.type == 'cuda'
    ctx, _ = mixed_precision(dev, args.precision)
    precision = str(ctx.fast_dtype).removeprefix('torch.') if isinstance(ctx, torch.autocast) else 'float32'
    return dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), device=str(dev),
                gpu=torch.cuda.get_device_name(dev) if on_gpu else None,
                gpu_memory_gib=round(torch.cuda.get_device_properties(dev).total_memory / 2**30, 1) if on_gpu else None,
                cpu=platform.processor() or platform.machine(), torch=torch.__version__, cuda=torch.version.cuda if on_gpu else None,
                python=platform.python_version(), dry_run=args.dry_run, batch=args.batch, steps=args.steps, warmup=args.warmup,
                chunks=args.chunks, precision=precision, budget_s=args.budget_s,
                recipe=dict(steps=RECIPE_STEPS, batch=RECIPE_BATCH), reference=REFERENCE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cuda'); ap.add_argument('--dry-run', action='store_true', help='tiny backbone, tiny batch: a smoke test')
    ap.add_argument('--backbones', nargs='+', default=None); ap.add_argument('--batch', type=int, default=None)
    ap.add_argument('--steps', type=int, default=None, help='timed steps per variant, after --warmup'); ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--chunks', type=int, default=4); ap.add_argument('--precision', default='auto')
    ap.add_argument('--budget-s', type=float, default=None, help='stop starting work after this many seconds')
    ap.add_argument('--captions', default=str(Path(os.environ.get('LINCIR_GPU_DIR', ROOT/'.gpu'))/'captions'),
                    help='the token arrays of speed/gpu_prep.py')
    ap.add_argument('--cuda-tests', nargs=3, metavar=('RC', 'SECONDS', 'SUMMARY'), help='what gpu.sh saw of the CUDA tests')
    ap.add_argument('--out', default=str(ROOT/'runs'/'gpu-check'/'gpu.json'))
    args = ap.parse_args()
    args.backbones = args.backbones or ([DRY_RUN] if args.dry_run else list(DEFAULTS))
    args.batch = args.batch or (16 if args.dry_run else RECIPE_BATCH)
    args.steps = args.steps or (2 if args.dry_run else 10)
    dev = torch.device(args.device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        sys.exit("speed/gpu.py: no CUDA device; use --device cpu --dry-run for a CPU smoke test")
    budget = Budget(args.budget_s)
    res = dict(environment(dev, args), finished=False, backbones={}, skipped={})
    if args.cuda_tests:
        rc, seconds, summary = args.cuda_tests
        res['cuda_tests'] = dict(passed=rc == '0', rc=int(rc), seconds=int(seconds), summary=summary)
    def save(): atomic_write_json(args.out, res)
    def record(name, out): res['backbones'][name] = out; save()
    save()
    failed = False
    for name in args.backbones:
        if budget.left() < MIN_BACKBONE_S:
            res['skipped'][name] = f'budget: {budget.left():.0f} s left, {MIN_BACKBONE_S} s needed to start'
            print(f"{name}: skipped, {res['skipped'][name]}"); save(); continue
        try: time_backbone(name, args, dev, budget, lambda out, name=name: record(name, out))
        except Exception as e:  # record it and go on: the other backbone's figures are still worth having
            failed = True; record(name, dict(res['backbones'].get(name, {}), error=f'{type(e).__name__}: {str(e)[:500]}'))
            print(f"{name}: failed: {type(e).__name__}: {e}", flush=True)
    res['finished'] = True; save()
    print(f"wrote {args.out}")
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
