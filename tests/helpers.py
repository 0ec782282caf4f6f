"""What several test modules share: a small corpus and the settings of a short training run, a validator, the batches
and the reference of the chunked training step, and a notebook run in-process as papermill runs it."""
import json, os, signal
from pathlib import Path

import numpy as np
import torch

from lincir.phi import Phi
from lincir.smp import smp_loss
from lincir.train_config import TrainConfig
from lincir.training import mixed_precision, train_step

REPO = Path(__file__).resolve().parents[1]

# --- a short training run ------------------------------------------------------------------------------------------

PAIRS = [('a red circle', '$'), ('a small blue square next to a green star', '$ next to $'),
         ('the yellow triangle is big', '$ is big'), ('two purple hexagons on a grey background', 'two $ on $'),
         ('a large orange star that is shiny', '$ that is shiny'), ('one pink cross', 'one $'),
         ('a cyan heart above a white circle', '$ above $'), ('the green square', '$')]


def corpus_for(bb, n=128):
    "A masked corpus of `n` captions (the PAIRS, repeated) for backbone `bb`, as a dataset in memory."
    from datasets import Dataset  # here, not above: tests/test_cuda.py runs on the GPU machine, which lacks datasets
    caps = [PAIRS[i % len(PAIRS)] for i in range(n)]
    tok = bb.tokenize([c for c, _ in caps]).to(torch.int32)
    msk = bb.tokenize([m for _, m in caps]).to(torch.int32)
    return Dataset.from_dict(dict(tokens=tok.tolist(), masked_tokens=msk.tolist(),
                                  length=(tok.argmax(-1) + 1).tolist(), rule=[0] * n))


def cfg_for(tmp_path, **kw):
    "The settings of a six-step run of the tiny random CLIP in `tmp_path/run`, with `kw` changed."
    base = dict(backbone='lincir-tiny', pretrained=None, captions=['shapes'], steps=6, batch_size=16, lr=1e-3,
                val_benchmark=None, log_every=1, save_every=3, out_dir=str(tmp_path / 'run'))
    return TrainConfig(**{**base, **kw})


DEAD_PID = 2**22 + 4321  # above the default pid_max: no running process has it


class ScoreValidator:
    "A validator whose score is a function of the weights; sends `sig` to this process during call `stop_at`."
    headline, metric_names = 'score', ['score']
    def __init__(self, stop_at=None, sig=signal.SIGTERM): self.calls, self.stop_at, self.sig = 0, stop_at, sig
    def __call__(self, phi):
        self.calls += 1
        if self.calls == self.stop_at: os.kill(os.getpid(), self.sig)  # the handler stops validation here
        return {'score': float(sum(p.double().sum() for p in phi.parameters()))}


# --- the chunked training step -------------------------------------------------------------------------------------

# mixed lengths: 3 to 14 tokens in a context of 16, like short captions next to prompts cut at the context
MIXED_PAIRS = [('a red circle', '$'),
               ('a small blue square next to a green star and a yellow cross above the grey hexagon', '$ next to $ and $ above $'),
               ('the yellow triangle is big', '$ is big'), ('two purple hexagons on a grey background', 'two $ on $'),
               ('star', '$'), ('one pink cross that is shiny and tiny and very far away from here', 'one $ that is shiny and tiny'),
               ('a cyan heart above a white circle', '$ above $'), ('the green square', '$')]


class GradRecorder(torch.optim.SGD):
    "Records the gradient at `step()` instead of stepping."
    def step(self, closure=None):
        self.grads = torch.cat([p.grad.flatten() for g in self.param_groups for p in g['params']])


def batch(bb, n):
    "Token ids and masked token ids of `n` captions of mixed lengths."
    caps = [MIXED_PAIRS[(i * 5) % len(MIXED_PAIRS)] for i in range(n)]
    return bb.tokenize([c for c, _ in caps]), bb.tokenize([m for _, m in caps])


def flat_grad(phi): return torch.cat([p.grad.flatten() for p in phi.parameters()])


def rel(a, b): return ((a - b).norm() / b.norm()).item()


def chunked(bb, tok, msk, model=None, rank=0, **kw):
    "Loss and gradient of one `train_step` (noise on, dropout 0)."
    cfg = TrainConfig(noise_scale=1.0, dropout=0.0, **kw)
    torch.manual_seed(0)
    phi = Phi.for_backbone(bb, dropout=0.0)
    opt = GradRecorder(phi.parameters(), lr=1.0)
    ctx, scaler = mixed_precision(torch.device('cpu'))
    loss = train_step(bb, model(phi) if model else phi, opt, scaler, ctx, cfg, 7, rank, tok, msk)
    return loss, opt.grads


def whole(bb, tok, msk, noise):
    "The unchunked step: `smp_loss` on the whole batch, with the same noise."
    torch.manual_seed(0)
    phi = Phi.for_backbone(bb, dropout=0.0)
    loss = smp_loss(bb, phi, tok, msk, noise=noise)
    loss.backward()
    return loss.item(), flat_grad(phi)


# --- notebooks -----------------------------------------------------------------------------------------------------

def code_cells(nb:Path) -> list[tuple[list, str]]:
    "(tags, source) of each code cell of notebook `nb`."
    cells = json.loads(nb.read_text())['cells']
    return [(c['metadata'].get('tags', []), ''.join(c['source'])) for c in cells if c['cell_type'] == 'code']


def run_notebook(nb:Path, params:dict, until:str|None=None) -> dict:
    "Execute `nb`'s code cells in-process as papermill would (parameters, then the injected ones), up to the cell holding `until`."
    ns = {'__name__': '__papermill__'}
    for tags, src in code_cells(nb):
        exec(compile(src, str(nb), 'exec'), ns)
        if 'parameters' in tags:
            unknown = set(params) - {k for k in ns if not k.startswith('_')}
            assert not unknown, f"{nb.name} has no parameter(s) {unknown}"
            ns.update(params)
        if until and until in src: break
    return ns


def random_images(folder:Path, n:int, size:int, prefix:str) -> dict:
    "`n` PNG files of seeded random pixels, `size` pixels square, in `folder`, by id `{prefix}{i}`."
    from PIL import Image
    rng, out = np.random.default_rng(0), {}
    for i in range(n):
        out[f'{prefix}{i}'] = folder / f'{prefix}{i}.png'
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(out[f'{prefix}{i}'])
    return out
