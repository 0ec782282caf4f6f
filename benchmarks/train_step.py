"""Speed of one LinCIR training step: ours vs the straightforward one.

Straightforward (as in the reference code): keyword masking recomputed with spaCy in every step, every caption
padded to the full 77-token context. Ours: masking done once beforehand (token ids cached), each batch cut to its
longest caption (exact). Same backbone (a ViT-B-32 text tower with random weights, pretrained=None, so it runs
offline), same Phi, batch 64 of real-length captions (the Shapes grammar, about as long as CC3M captions),
length-grouped as our training loop draws them, same
loss values. Usage: python benchmarks/train_step.py [--steps 3] [--batch 64] [--backbone ViT-B-32]
"""
import argparse, json, time, warnings
from pathlib import Path

import torch

from lincir.backbone import load_backbone
from lincir.keywords import mask_captions
from lincir.phi import Phi
from lincir.shapes import grammar_captions
from lincir.smp import smp_loss
from lincir.training import epoch_batches


def step(bb, phi, opt, tokens, masked, truncate):
    "One optimiser step; noise and dropout off so both variants compute the same loss."
    loss = smp_loss(bb, phi, tokens, masked, noise_scale=0.0, truncate=truncate)
    opt.zero_grad(); loss.backward(); opt.step()
    return loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--backbone', default='ViT-B-32'); ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--batch', type=int, default=64); ap.add_argument('--out', default='benchmarks/results/train_step.json')
    args = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.manual_seed(0); bb = load_backbone(args.backbone, None)
    captions = grammar_captions(args.batch * 64, seed=0)
    lengths = (bb.tokenize(captions).argmax(-1) + 1).numpy()
    # the batches our training loop draws (length-grouped); the straightforward step gets the very same captions
    batches = [[captions[i] for i in b] for b in epoch_batches(lengths, args.batch, seed=0, epoch=0)[:args.steps + 1]]
    mask_captions(batches[0], bb)  # load spaCy outside the timings

    def run(variant):
        torch.manual_seed(0); phi = Phi.for_backbone(bb, dropout=0.0)
        opt = torch.optim.AdamW(phi.parameters(), lr=1e-4)
        pre = None
        if variant == 'ours':  # masking once, before training (what lincir.captions caches on disk)
            pre = [(bb.tokenize([m.caption for m in ms]), bb.tokenize([m.masked for m in ms]))
                   for ms in (mask_captions(b, bb) for b in batches)]
        losses, times = [], []
        for i, batch in enumerate(batches):
            t = time.perf_counter()
            if variant == 'ours': tokens, masked = pre[i]
            else:
                ms = mask_captions(batch, bb)  # per step, as the reference code does every epoch
                tokens, masked = bb.tokenize([m.caption for m in ms]), bb.tokenize([m.masked for m in ms])
            losses.append(step(bb, phi, opt, tokens, masked, truncate=variant == 'ours'))
            times.append(time.perf_counter() - t)
        return losses[1:], times[1:]  # the first step warms up

    (l_ref, t_ref), (l_our, t_our) = run('straightforward'), run('ours')
    assert all(abs(a - b) <= 1e-5 * max(1.0, abs(a)) for a, b in zip(l_ref, l_our)), (l_ref, l_our)
    cps = lambda ts: args.batch * len(ts) / sum(ts)
    res = dict(backbone=args.backbone, batch=args.batch, steps=args.steps, threads=torch.get_num_threads(),
               mean_tokens=float(lengths.mean()), context=bb.context_length,
               straightforward_captions_per_s=round(cps(t_ref), 1), ours_captions_per_s=round(cps(t_our), 1),
               speedup=round(cps(t_our) / cps(t_ref), 2), losses_equal=True, losses=l_our)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True); Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"| {args.backbone} text tower, batch {args.batch}, {res['threads']} threads | straightforward "
          f"{res['straightforward_captions_per_s']} captions/s | ours {res['ours_captions_per_s']} captions/s | "
          f"x{res['speedup']} | identical losses |")


if __name__ == '__main__':
    main()
