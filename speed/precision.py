"""What bf16 and fp16 change against fp32 in LinCIR's training step, on a ViT-L/14-sized text tower (random weights, CPU).

A batch of captions of the paper's mix (`speed/mix.py`) is masked as training masks them, and one SMP step is
computed with the same Phi (random, dropout off so that every variant sees the same network) and the same noise, in four
arithmetics: fp32 (the reference here); `--precision bf16` and `--precision fp16` (torch.autocast, CLIP's weights kept
in fp32, what `lincir.training.mixed_precision` does); and the official code's fp16 (the frozen text tower's weights cast
to fp16, then autocast, as `train_phi.py` does with `--mixed_precision fp16`). Measured against fp32, and against the
official fp16: the relative error of the target text embedding `e` (per caption, L2), of the SMP loss, and of Phi's
gradient (L2 over all parameters).
Random weights are not trained CLIP (whose activations have larger outliers), and CPU kernels are not GPU kernels: the
figures compare the formats, they do not predict a GPU run to the digit.
Usage: python speed/precision.py [--batch 16] [--batches 4] [--backbone ViT-L-14]
"""
import argparse, copy, dataclasses, json, os, sys, time, warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from mix import realistic_captions
from lincir.backbone import encode_text, load_backbone
from lincir.keywords import mask_and_tokenize
from lincir.phi import Phi
from lincir.smp import sample_noise, smp_loss

OFFICIAL = 'fp16 weights + autocast (official)'
ARITHMETICS = {  # name -> (autocast dtype or None, dtype of the frozen text tower's weights)
    'fp32': (None, torch.float32),
    'bf16 autocast (--precision bf16)': (torch.bfloat16, torch.float32),
    'fp16 autocast (--precision fp16)': (torch.float16, torch.float32),
    'fp16 weights + autocast (official)': (torch.float16, torch.float16),
}


def step(bb, phi, tokens, masked, noise, autocast_dtype):
    "Target embeddings, loss and Phi's gradient (a flat float64 vector) of one SMP step."
    phi.zero_grad(set_to_none=True)
    ctx = torch.autocast('cpu', dtype=autocast_dtype) if autocast_dtype else nullcontext()
    with ctx:
        with torch.no_grad(): e = encode_text(bb, tokens).double()
        loss = smp_loss(bb, phi, tokens, masked, noise=noise)
    loss.backward()
    grad = torch.cat([p.grad.flatten().double() for p in phi.parameters()])
    return e, loss.item(), grad


def rel(a, b):
    "Relative L2 error of `a` against `b` (per row for matrices)."
    return ((a - b).norm(dim=-1) / b.norm(dim=-1)).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--batch', type=int, default=16); ap.add_argument('--batches', type=int, default=4)
    ap.add_argument('--backbone', default='ViT-L-14'); ap.add_argument('--out', default='speed/results/precision.json')
    args = ap.parse_args()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # random weights: said below
        bb = load_backbone(args.backbone, None)
    bb.model.visual = None  # the text tower is all a step uses
    phi = Phi.for_backbone(bb).eval()  # dropout off: every arithmetic sees the same network
    res = {name: dict(target_rel_err=[], loss_rel_err=[], grad_rel_err=[]) for name in ARITHMETICS if name != 'fp32'}
    vs_official = {name: dict(target_rel_err=[], loss_rel_err=[], grad_rel_err=[]) for name in ARITHMETICS if name != OFFICIAL}
    t0 = time.process_time()
    for b in range(args.batches):
        rows, ids, masked = mask_and_tokenize(realistic_captions(args.batch, seed=100 + b), bb)
        tokens, masked = torch.from_numpy(ids).long(), torch.from_numpy(masked).long()
        noise = sample_noise(len(tokens), bb.embed_dim, generator=torch.Generator().manual_seed(b))
        out = {name: step(bb if wdtype == torch.float32 else _cast_text(bb, wdtype), phi, tokens, masked, noise, ac)
               for name, (ac, wdtype) in ARITHMETICS.items()}
        for table, against in ((res, 'fp32'), (vs_official, OFFICIAL)):
            for name, r in table.items(): _add(r, out[name], out[against])
        print(f"batch {b + 1}/{args.batches}: fp32 loss {out['fp32'][1]:.6g}", flush=True)
    summary, summary_official = _summary(res), _summary(vs_official)
    result = dict(backbone=f'{args.backbone} text tower, random weights (pretrained=None), Phi random, dropout off',
                  device='cpu', torch=torch.__version__, captions_per_batch=args.batch, batches=args.batches,
                  captions='speed/mix.py realistic_captions', date=time.strftime('%Y-%m-%d'),
                  cpu_seconds=round(time.process_time() - t0, 1), against_fp32=summary, against_official_fp16=summary_official)
    for title, table in (('against fp32', summary), ('against the official fp16', summary_official)):
        print(title)
        for name, s in table.items(): _print(name, s)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True); Path(args.out).write_text(json.dumps(result, indent=2))


def _add(r, got, ref):
    "Relative errors of one step's (target embeddings, loss, gradient) `got` against `ref`."
    r['target_rel_err'] += rel(got[0], ref[0]).tolist()
    r['loss_rel_err'].append(abs(got[1] - ref[1]) / ref[1])
    r['grad_rel_err'].append(float((got[2] - ref[2]).norm() / ref[2].norm()))


def _summary(table):
    return {name: {f'{k}_mean': float(np.mean(v)) for k, v in r.items()} | {f'{k}_max': float(np.max(v)) for k, v in r.items()}
            for name, r in table.items()}


def _print(name, s):
    print(f"  {name:36s} target {s['target_rel_err_mean']:.2e} (max {s['target_rel_err_max']:.2e})  loss {s['loss_rel_err_mean']:.2e}"
          f" (max {s['loss_rel_err_max']:.2e})  grad {s['grad_rel_err_mean']:.2e}")


_CAST = {}

def _cast_text(bb, dtype):
    "A copy of `bb` whose text tower's weights are `dtype` (the official code casts the frozen encoder), made once."
    if dtype not in _CAST:
        _CAST[dtype] = dataclasses.replace(bb, model=copy.deepcopy(bb.model).to(dtype))
    return _CAST[dtype]


if __name__ == '__main__':
    main()
