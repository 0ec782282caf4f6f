"""Training-step timings on a GPU, and the extrapolated time of the paper's recipe (20,000 steps of batch 512).

For each backbone (default ViT-L-14 and ViT-bigG-14, random weights: pretrained=None, so nothing is downloaded): build
a batch of `--batch` captions with the paper's length mix (`benchmarks/mix.py`, masked once with spaCy), then time
`lincir.training.train_step` (AdamW, mixed precision as training picks it, uniformly random batches) computed in
`--chunks` length-sorted chunks (ours) and as one whole batch cut to its longest caption (chunks=1). Prints
ms/step and the extrapolated recipe time per backbone and writes a JSON (default benchmarks/results/gpu.json).
`--device cpu --dry-run` runs the same code on the tiny random CLIP in seconds (CI smoke test of this script).
Usage: python benchmarks/gpu.py [--device cuda] [--backbones ViT-L-14 ViT-bigG-14] [--batch 512] [--steps 10]
"""
import argparse, datetime, json, os, platform, sys, time, warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from mix import realistic_captions
from lincir.backbone import load_backbone
from lincir.keywords import mask_captions
from lincir.phi import Phi
from lincir.training import TrainConfig, mixed_precision, random_batches, train_step

RECIPE_STEPS, RECIPE_BATCH = 20_000, 512


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def time_backbone(name, masked, args, dev) -> dict:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.manual_seed(0); bb = load_backbone(name, None, device=dev)
    load_s = time.perf_counter() - t0
    tok_all = bb.tokenize([m.caption for m in masked]).to(dev); msk_all = bb.tokenize([m.masked for m in masked]).to(dev)
    batches = random_batches(len(masked), args.batch, seed=0, epoch=0)
    out = dict(backbone=name, load_s=round(load_s, 1), width=bb.width, embed_dim=bb.embed_dim, context=bb.context_length)
    for chunks in sorted({args.chunks, 1}, reverse=True):
        cfg = TrainConfig(chunks=chunks, precision=args.precision, lr=1e-4)
        torch.manual_seed(0); phi = Phi.for_backbone(bb, dropout=cfg.dropout).to(dev).train()
        opt = torch.optim.AdamW(phi.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        ctx, scaler = mixed_precision(dev, cfg.precision)
        if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev)
        times, losses = [], []
        for step in range(args.warmup + args.steps):
            idx = torch.as_tensor(batches[step % len(batches)], device=dev)
            sync(dev); t = time.perf_counter()
            losses.append(train_step(bb, phi, opt, scaler, ctx, cfg, step, 0, tok_all[idx], msk_all[idx]))
            sync(dev); times.append(time.perf_counter() - t)
        ms = 1e3 * float(np.median(times[args.warmup:]))
        key = 'chunked' if chunks > 1 else 'whole_batch'
        out[key] = dict(chunks=chunks, ms_per_step=round(ms, 2), samples_per_s=round(args.batch / ms * 1e3, 1),
                        recipe_minutes=round(ms * RECIPE_STEPS * RECIPE_BATCH / args.batch / 6e4, 1),
                        losses_finite=bool(np.isfinite(losses).all()), last_loss=round(losses[-1], 5),
                        peak_memory_gib=round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == 'cuda' else None)
        print(f"{name}: {key} (chunks={chunks}) {ms:.1f} ms/step at batch {args.batch} -> paper recipe "
              f"({RECIPE_STEPS} x {RECIPE_BATCH}) {out[key]['recipe_minutes']} min", flush=True)
    del bb, phi, opt
    if dev.type == 'cuda': torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cuda'); ap.add_argument('--dry-run', action='store_true', help='tiny backbone, tiny batch: a smoke test')
    ap.add_argument('--backbones', nargs='+', default=None); ap.add_argument('--batch', type=int, default=None)
    ap.add_argument('--steps', type=int, default=None); ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--chunks', type=int, default=4); ap.add_argument('--precision', default='auto')
    ap.add_argument('--out', default='benchmarks/results/gpu.json')
    args = ap.parse_args()
    args.backbones = args.backbones or (['lincir-tiny'] if args.dry_run else ['ViT-L-14', 'ViT-bigG-14'])
    args.batch = args.batch or (16 if args.dry_run else RECIPE_BATCH)
    args.steps = args.steps or (2 if args.dry_run else 10)
    dev = torch.device(args.device)
    if dev.type == 'cuda' and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: no CUDA device; use --device cpu --dry-run for a CPU smoke test")
    t = time.perf_counter()
    n = args.batch * 4
    masked = mask_captions(realistic_captions(n, seed=0), _tokenizer_for(args.backbones[0]))  # the backbones share CLIP's tokenizer
    res = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), device=str(dev),
               gpu=torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.processor() or 'cpu',
               torch=torch.__version__, dry_run=args.dry_run, batch=args.batch, steps=args.steps, chunks=args.chunks,
               precision=args.precision, mix='benchmarks/mix.py realistic', masking_s=round(time.perf_counter() - t, 1),
               recipe=dict(steps=RECIPE_STEPS, batch=RECIPE_BATCH), backbones={})
    for name in args.backbones:
        res['backbones'][name] = time_backbone(name, masked, args, dev)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True); Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}")


def _tokenizer_for(name):
    import open_clip
    from lincir import backbone  # registers lincir's model configs with open_clip
    return open_clip.get_tokenizer(name)


if __name__ == '__main__':
    main()
