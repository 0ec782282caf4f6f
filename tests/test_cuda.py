"""CUDA-only checks of the training step and loop, run by speed/gpu.sh; skipped where there is no CUDA device.

The GPU machine has neither `datasets` nor spaCy: this module and what it imports must not need them (the rehearsal,
tests/test_gpu_script.py, imports it in a stand-in of that machine's environment)."""
import dataclasses, warnings
import numpy as np
import pytest, torch
from safetensors.torch import load_file

from lincir.captions import TokenArrays
from lincir.phi import Phi
from lincir.smp import smp_loss
from lincir.train_config import TrainConfig
from lincir.run_folder import read_metrics
from lincir.training import mixed_precision, step_noise, train, train_step

from tests.helpers import GradRecorder, batch, cfg_for, rel

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')]
DEV = torch.device('cuda')


@pytest.fixture(scope='module')
def tiny_cuda():
    from lincir.backbone import load_backbone
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.manual_seed(0)
        return load_backbone('lincir-tiny', None, device=DEV)


def steps(bb, precision, n=5, **kw):
    "Losses of `n` train_steps on the same batch, and the scaler."
    cfg = TrainConfig(precision=precision, lr=1e-3, dropout=0.0, **kw)
    torch.manual_seed(0); phi = Phi.for_backbone(bb, dropout=0.0).to(DEV)
    opt = torch.optim.AdamW(phi.parameters(), lr=cfg.lr)
    ctx, scaler = mixed_precision(DEV, precision)
    tok, msk = (t.to(DEV) for t in batch(bb, 32))
    return [train_step(bb, phi, opt, scaler, ctx, cfg, s, 0, tok, msk) for s in range(n)], scaler


def test_bf16_autocast_matches_fp32(tiny_cuda):
    ref, _ = steps(tiny_cuda, 'fp32')
    got, scaler = steps(tiny_cuda, 'bf16')
    assert not scaler.is_enabled() and all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=5e-2)
    assert got[-1] < got[0]


def test_fp16_uses_the_gradient_scaler(tiny_cuda):
    ref, _ = steps(tiny_cuda, 'fp32')
    got, scaler = steps(tiny_cuda, 'fp16')
    assert scaler.is_enabled() and scaler.get_scale() > 0 and all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=5e-2)


def test_chunked_step_equals_whole_batch_on_cuda(tiny_cuda):
    tok, msk = (t.to(DEV) for t in batch(tiny_cuda, 32))
    torch.manual_seed(0); phi = Phi.for_backbone(tiny_cuda, dropout=0.0).to(DEV)
    ref = smp_loss(tiny_cuda, phi, tok, msk, noise=step_noise(TrainConfig(), 7, 0, len(tok), tiny_cuda.embed_dim, DEV))
    ref.backward(); ref_grad = torch.cat([p.grad.flatten() for p in phi.parameters()])
    for chunks, accum in [(4, 1), (4, 2)]:
        cfg = TrainConfig(noise_scale=1.0, dropout=0.0, chunks=chunks, grad_accum=accum, precision='fp32')
        torch.manual_seed(0); phi = Phi.for_backbone(tiny_cuda, dropout=0.0).to(DEV)
        opt = GradRecorder(phi.parameters(), lr=1.0); ctx, scaler = mixed_precision(DEV, 'fp32')
        loss = train_step(tiny_cuda, phi, opt, scaler, ctx, cfg, 7, 0, tok, msk)
        assert abs(loss - ref.item()) <= 1e-5 * ref.item()
        assert rel(opt.grads, ref_grad) <= 1e-5


def token_corpus(bb, n=128) -> TokenArrays:
    "A masked corpus as the arrays training reads, made without `datasets` or spaCy."
    tok, msk = (t.cpu().numpy() for t in batch(bb, n))
    return TokenArrays(np.stack([tok, msk], 1).astype(np.uint16), np.maximum(tok.argmax(-1), msk.argmax(-1)) + 1, np.zeros(n, np.int8))


def full_and_resumed(bb, tmp_path, device, precision):
    "Run folders of 6 steps in one go, and of 3 steps then resumed to 6."
    corpus = token_corpus(bb)
    full = train(cfg_for(tmp_path / 'a', ema=0.9, device=device, precision=precision), corpus=corpus, progress=False)
    half = cfg_for(tmp_path / 'b', ema=0.9, steps=3, device=device, precision=precision)
    train(half, corpus=corpus, progress=False)
    return full, train(dataclasses.replace(half, steps=6), corpus=corpus, progress=False)


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_resume_on_cuda_continues(tiny_cuda, tmp_path, precision):
    full, resumed = full_and_resumed(tiny_cuda, tmp_path, 'cuda', precision)
    a, b = read_metrics(full), read_metrics(resumed)
    assert [r['step'] for r in b] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([r['loss'] for r in b], [r['loss'] for r in a], rtol=1e-5)  # CUDA kernels may reorder sums
    for name in ('phi.safetensors', 'checkpoint/ema.safetensors'):
        wa, wb = load_file(str(full / name)), load_file(str(resumed / name))
        for k in wa: torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)
