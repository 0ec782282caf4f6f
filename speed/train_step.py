"""Speed of one LinCIR training step: the straightforward step against ours, per caption mix, and where the gain comes from.

Four steps on the very same uniformly random batches (as the reference draws them), all with identical losses:
  A straightforward (as in the reference code): keyword masking recomputed with spaCy in every step, every caption
    padded to the full 77-token context;
  B masking cached (done once beforehand, as `lincir.captions` does), still the full 77-token context;
  C masking cached, the whole batch cut to its longest caption (exact);
  D ours: masking cached, the batch computed in `--chunks` length-sorted chunks, each cut to its own longest caption
    (`lincir.training.train_step`, exact).
Mixes: 'grammar' (the Shapes grammar, about as long as CC3M captions) and 'realistic' (`speed/mix.py`: a third
CC3M-like, two thirds long prompts, a third cut at 77 tokens). Same backbone (a text tower with random weights,
pretrained=None, so it runs offline), same Phi, same noise per step (drawn once per batch), dropout 0.
Speeds are captions per CPU-second of this process with one torch thread (`--threads 1`): per-core figures that other
jobs on the machine disturb little; wall-clock speeds are recorded too.
Usage: python speed/train_step.py [--steps 3] [--batch 64] [--backbone ViT-B-32] [--chunks 4] [--mixes grammar realistic]
"""
import argparse, json, os, sys, time, warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from mix import realistic_captions
from lincir.backbone import load_backbone, used_length
from lincir.keywords import mask_captions
from lincir.phi import Phi
from lincir.shapes import grammar_captions
from lincir.smp import smp_loss
from lincir.train_config import TrainConfig
from lincir.batches import length_chunks, random_batches
from lincir.training import mixed_precision, step_noise, train_step

VARIANTS = {'A': 'straightforward: mask per step, 77 tokens', 'B': 'masking cached, 77 tokens',
            'C': 'masking cached, batch cut to its longest', 'D': 'ours: masking cached, chunked'}


def plain_step(bb, phi, opt, cfg, step, tokens, masked, truncate):
    "One optimiser step on the whole batch (the reference's step), with the step's noise."
    loss = smp_loss(bb, phi, tokens, masked, cfg.noise_scale, noise=step_noise(cfg, step, 0, len(tokens), bb.embed_dim, tokens.device),
                    truncate=truncate)
    opt.zero_grad(); loss.backward(); opt.step()
    return loss.item()


def work(bb, tokens, masked, chunks):
    "Share of the 77-token positions a step computes (both encoder passes)."
    lengths = (torch.maximum(tokens.argmax(-1), masked.argmax(-1)) + 1).numpy()
    cut = sum(len(c) * int(lengths[c].max()) for c in length_chunks(lengths, chunks))
    return cut / (len(tokens) * bb.context_length)


def run_mix(bb, captions, args):
    batches = random_batches(len(captions), args.batch, seed=0, epoch=0)[:args.steps + args.warmup]
    t = time.perf_counter()
    cached = mask_captions(captions, bb)  # once, before training (what lincir.captions caches on disk)
    mask_once = (time.perf_counter() - t) / len(captions)
    tok_all = bb.tokenize([m.caption for m in cached]); msk_all = bb.tokenize([m.masked for m in cached])
    cfg = TrainConfig(noise_scale=1.0, dropout=0.0, chunks=args.chunks, lr=1e-4)
    out = {}
    for v in VARIANTS:
        torch.manual_seed(0); phi = Phi.for_backbone(bb, dropout=0.0)
        opt = torch.optim.AdamW(phi.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        ctx, scaler = mixed_precision(torch.device('cpu'))
        losses, times, cpu = [], [], []
        for step, idx in enumerate(batches):
            t, c = time.perf_counter(), time.process_time()
            if v == 'A':
                ms = mask_captions([captions[i] for i in idx], bb, indices=idx.tolist())  # per step, as the reference (every epoch)
                tokens, masked = bb.tokenize([m.caption for m in ms]), bb.tokenize([m.masked for m in ms])
            else: tokens, masked = tok_all[idx], msk_all[idx]
            if v == 'D': loss = train_step(bb, phi, opt, scaler, ctx, cfg, step, 0, tokens, masked)
            else: loss = plain_step(bb, phi, opt, cfg, step, tokens, masked, truncate=v == 'C')
            times.append(time.perf_counter() - t); cpu.append(time.process_time() - c); losses.append(loss)
        w = args.warmup  # the first steps warm up
        out[v] = dict(captions_per_s=round(args.batch * args.steps / sum(times[w:]), 2),
                      captions_per_cpu_s=round(args.batch * args.steps / sum(cpu[w:]), 2), losses=losses)
    ref = out['A']['losses']
    for v in 'BCD':
        assert all(abs(a - b) <= 1e-5 * abs(a) for a, b in zip(ref, out[v]['losses'])), (v, ref, out[v]['losses'])
    lengths = (tok_all.argmax(-1) + 1).float()
    speed = {v: out[v]['captions_per_cpu_s'] for v in VARIANTS}  # CPU time: robust to other jobs on the machine
    return dict(mean_tokens=round(lengths.mean().item(), 1), share_at_context=round((lengths == bb.context_length).float().mean().item(), 3),
                captions_per_cpu_s=speed, captions_per_s_wall={v: out[v]['captions_per_s'] for v in VARIANTS}, losses=ref, losses_equal=True, mask_once_ms_per_caption=round(1e3 * mask_once, 2),
                positions_computed=dict(B=1.0, C=round(np.mean([used_length(bb, torch.cat([tok_all[b], msk_all[b]])) for b in batches]) / bb.context_length, 3),
                                        D=round(np.mean([work(bb, tok_all[b], msk_all[b], args.chunks) for b in batches]), 3)),
                gain=dict(masking_cached=round(speed['B'] / speed['A'], 2), cut_to_longest=round(speed['C'] / speed['B'], 2),
                          chunks=round(speed['D'] / speed['C'], 2), total=round(speed['D'] / speed['A'], 2)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--backbone', default='ViT-B-32'); ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--warmup', type=int, default=1, help='untimed steps first')
    ap.add_argument('--batch', type=int, default=64); ap.add_argument('--chunks', type=int, default=4)
    ap.add_argument('--mixes', nargs='+', default=['grammar', 'realistic'])
    ap.add_argument('--threads', type=int, default=1, help='torch threads; speeds are per CPU-second, so 1 thread gives per-core figures')
    ap.add_argument('--out', default='speed/results/train_step.json')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.manual_seed(0); bb = load_backbone(args.backbone, None)
    n = args.batch * (args.steps + args.warmup)
    make = dict(grammar=lambda: grammar_captions(n, seed=0), realistic=lambda: realistic_captions(n, seed=0))
    mask_captions(['a dog on a beach'], bb)  # load spaCy outside the timings
    res = dict(backbone=args.backbone, batch=args.batch, steps=args.steps, warmup=args.warmup, chunks=args.chunks, threads=torch.get_num_threads(),
               context=bb.context_length, batching='random', load_avg_at_start=os.getloadavg()[0], variants=VARIANTS, mixes={})
    for mix in args.mixes:
        r = res['mixes'][mix] = run_mix(bb, make[mix](), args)
        s, g = r['captions_per_cpu_s'], r['gain']
        print(f"| {mix} (mean {r['mean_tokens']} tokens, {r['share_at_context']:.0%} at {bb.context_length}) | " + ' | '.join(f"{s[v]}" for v in VARIANTS) +
              f" | x{g['masking_cached']} masking cached, x{g['cut_to_longest']} cut to longest, x{g['chunks']} chunks | x{g['total']} |")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True); Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
