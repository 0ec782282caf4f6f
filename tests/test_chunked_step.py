"The chunked training step computes the loss and gradient of the whole batch (CPU, one process and DDP with gloo)."
import json, os, subprocess, sys, textwrap, warnings
import pytest

from lincir.train_config import TrainConfig
from lincir.training import step_noise

from tests.helpers import REPO, batch, chunked, rel, whole

@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        yield


@pytest.mark.parametrize('chunks,grad_accum', [(1, 1), (2, 1), (4, 1), (32, 1), (1, 4), (4, 2)])
def test_chunked_step_equals_whole_batch(tiny, chunks, grad_accum):
    tok, msk = batch(tiny, 32)
    lengths = (tok.argmax(-1) + 1).numpy()
    assert lengths.min() <= 4 and lengths.max() >= 15  # the chunks really are cut to different lengths
    ref_loss, ref_grad = whole(tiny, tok, msk, step_noise(TrainConfig(), 7, 0, len(tok), tiny.embed_dim, 'cpu'))
    loss, grad = chunked(tiny, tok, msk, chunks=chunks, grad_accum=grad_accum)
    assert abs(loss - ref_loss) <= 1e-6 * ref_loss
    assert rel(grad, ref_grad) <= 1e-6


def test_noise_does_not_depend_on_chunking(tiny):
    "With noise on, a chunked step must not equal a step with other noise: the test above is not vacuous."
    tok, msk = batch(tiny, 32)
    other, _ = whole(tiny, tok, msk, step_noise(TrainConfig(), 8, 0, len(tok), tiny.embed_dim, 'cpu'))
    loss, _ = chunked(tiny, tok, msk, chunks=4)
    assert abs(loss - other) > 1e-4 * other


def test_chunked_step_equals_whole_batch_under_ddp(tmp_path):
    script = tmp_path / 'ddp.py'
    script.write_text(textwrap.dedent(f'''
        import json, sys, warnings, torch
        warnings.simplefilter('ignore')
        import torch.distributed as dist
        from tests.helpers import batch, chunked, whole, rel
        from lincir.backbone import load_backbone
        from lincir.train_config import TrainConfig
        from lincir.training import step_noise
        dist.init_process_group('gloo'); rank = dist.get_rank()
        torch.manual_seed(0); bb = load_backbone('lincir-tiny')
        tok, msk = batch(bb, 32)
        noise = torch.cat([step_noise(TrainConfig(), 7, r, 16, bb.embed_dim, 'cpu') for r in (0, 1)])
        ref_loss, ref_grad = whole(bb, tok, msk, noise)  # the global batch in one process
        mine = slice(16 * rank, 16 * (rank + 1))
        ddp = torch.nn.parallel.DistributedDataParallel
        out = {{}}
        for chunks, accum in [(1, 1), (4, 1), (4, 2)]:
            loss, grad = chunked(bb, tok[mine], msk[mine], model=ddp, rank=rank, chunks=chunks, grad_accum=accum)
            t = torch.tensor([loss]); dist.all_reduce(t)
            out[f'{{chunks}}x{{accum}}'] = dict(loss=t.item() / 2, ref_loss=ref_loss, grad_err=rel(grad, ref_grad))
        open({str(tmp_path)!r} + f'/rank{{rank}}.json', 'w').write(json.dumps(out))
        dist.destroy_process_group()
    '''))
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')])}
    res = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29541',
                          str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for rank in (0, 1):
        out = json.loads((tmp_path / f'rank{rank}.json').read_text())
        assert set(out) == {'1x1', '4x1', '4x2'}
        for r in out.values():
            assert abs(r['loss'] - r['ref_loss']) <= 1e-6 * r['ref_loss'], r
            assert r['grad_err'] <= 1e-6, r
